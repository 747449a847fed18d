"""FedAux section of ``quintet demo``: FedAux vs FedAvg vs Local on a synthetic community graph (quick) or
on Cora METIS-10 when ``../shared/data`` is present (full)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from quintet.demo import DemoSection
from quintet.fedaux.algorithms import AlgoConfig
from quintet.fedaux.data import build_clients, synthetic_clients
from quintet.fedaux.simulate import plot_curves, simulate, torch_threads

__all__ = ["demo"]


def _cora_root() -> Path | None:
    env = os.environ.get("QUINTET_SHARED_DATA")
    base = Path(env) if env else Path(__file__).resolve().parents[4] / "shared" / "data"
    root = base / "planetoid"
    return root if (root / "raw" / "ind.cora.x").is_file() else None


def demo(out_dir: Path, quick: bool) -> DemoSection:
    """Run the FedAux demo into ``out_dir`` and return its report section."""
    out_dir = Path(out_dir)
    root = None if quick else _cora_root()
    if root is not None:
        clients, info = build_clients("cora", "metis", 10, 1234, data_root=root, cache_dir=out_dir / "cache")
        rounds, epochs, where = 40, 1, "Cora (LCC, METIS 10 clients, 20/40/40 split)"
        hidden = {"fedaux": 256}
    else:
        clients, info = synthetic_clients(seed=0)
        rounds, epochs, where = 10, 3, "a synthetic 4-community graph (2 groups with different feature maps)"
        hidden = {}
    results = {}
    for m in ("local", "fedavg", "fedaux"):
        algo = AlgoConfig(name=m, hidden=hidden.get(m, 128 if root else 32), local_epochs=epochs)  # type: ignore[arg-type]
        with torch_threads(1):
            results[m] = simulate(algo, clients, info["num_classes"], rounds, seed=0, progress=False)
    png = out_dir / "fedaux_curves.png"
    plot_curves(results, png, title=f"FedAux demo: {where}")
    rows = [
        f"| {m} | {r.test_at_best_val:.2f} | {r.best_round} | {r.seconds:.1f} |" for m, r in results.items()
    ]
    fa = results["fedaux"]
    w = fa.weights if fa.weights is not None else np.zeros((1, 1))
    md = "\n".join(
        [
            f"Personalised subgraph FL on {where}: {len(clients)} clients, {rounds} rounds × {epochs} local epoch(s).",
            "Metric: mean over clients of local test accuracy at the round with the best mean validation accuracy.",
            "",
            "| method | test acc (%) | best round | seconds |",
            "|---|---|---|---|",
            *rows,
            "",
            f"FedAux's APV mixing matrix (last round): largest weight {w.max():.3f}, smallest {w.min():.3f} "
            f"(uniform would be {1 / w.shape[1]:.3f}).",
        ]
    )
    metrics = {f"{m}_test_acc": round(r.test_at_best_val, 2) for m, r in results.items()}
    return DemoSection(
        title="FedAux (personalised subgraph federated learning)", markdown=md, images=[png], metrics=metrics
    )
