"""DefiNet section of ``quintet demo``.

With the shipped DefiNet model and ``../shared/data/materials/defects2d`` present (relative to the working
directory or the repository root), the section runs the package's own eval job (``quintet definet eval``)
on held-out real defect supercells: the ratio vs the dummy, the model's time per structure against the
CHGNet relaxation recorded in the data's ``meta.csv``, and the CHGNet steps needed to finish from the
prediction vs from the input. Otherwise it falls back to synthetic MoS2 defect pairs from
:mod:`quintet.definet.synthetic` (an analytic, local displacement field, not physics) and says so.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from quintet.demo import DemoSection

__all__ = ["demo"]

TITLE = "DefiNet — one-shot relaxation of point-defect supercells"
FINISH_LIMIT = 3
REAL_HOSTS = ["MoS2"]


def _real_section(model: str, root: Path, out_dir: Path, quick: bool) -> DemoSection:
    """The shipped model on the held-out MoS2 pairs through ``quintet definet eval --finish-with chgnet``."""
    from quintet.definet.predict import EvalJob, evaluate_model
    from quintet.definet.run import DataConfig
    from quintet.demo import oracle_markdown

    job = EvalJob(
        model=model, data=DataConfig(root=str(root), hosts=REAL_HOSTS, cache_dir=str(out_dir / "cache")),
        split="test", out=str(out_dir / "eval"), finish_with="chgnet", finish_limit=1 if quick else FINISH_LIMIT,
        recorded_steps=True,
    )  # fmt: skip
    summary = evaluate_model(job, progress=False)
    table, metrics = oracle_markdown(
        summary, float(summary["model_seconds_per_structure"]), Path(job.out), root
    )
    local, dummy_local = summary["local_mae_A"]["3"], summary["dummy_local_mae_A"]["3"]
    metrics["local3_ratio_vs_dummy"] = round(local / dummy_local, 3)
    md = (
        f"Shipped model `{model}` on the {summary['structures']} held-out {', '.join(REAL_HOSTS)} defect supercells "
        f"of `{root.name}` (CHGNet-relaxed), run with `quintet definet eval --finish-with chgnet`. Coordinate MAE "
        f"{summary['coord_mae_A']:.5f} Å vs {summary['dummy_coord_mae_A']:.5f} Å for the dummy (unrelaxed input): "
        f"ratio **{summary['coord_mae_ratio_vs_dummy']:.2f}**; within 3 Å of a defect {local:.5f} Å vs "
        f"{dummy_local:.5f} Å (ratio {local / dummy_local:.2f}).\n\n{table}"
    )
    return DemoSection(title=TITLE, markdown=md, metrics=metrics)


def _synthetic_records(quick: bool, cfg: Any) -> tuple[list[dict], list[dict]]:
    """Synthetic MoS2 3×3 defect pairs with their neighbour lists: ``(train, test)``."""
    from quintet.atomistic.datasets import pair_record
    from quintet.atomistic.neighbors import with_neighbors
    from quintet.definet.synthetic import synthetic_pairs

    n_train, n_test = (32, 8) if quick else (80, 16)
    host, pairs = synthetic_pairs(n_train + n_test, "MoS2", size=3, seed=0)
    records = []
    for k, (u, r) in enumerate(pairs):
        rec = pair_record(u, r, host, 0.3, dtype=torch.float32, source=f"pair {k}")
        records.append(with_neighbors(rec, cfg.cutoff, cfg.max_neighbors))
    return records[:n_train], records[n_train:]


def _synthetic_fit(
    train_recs: list, test_recs: list, cfg: Any, out_dir: Path, quick: bool
) -> tuple[Any, float]:
    """Train DefiNet on the synthetic pairs; returns the fit result and the seconds."""
    from quintet.atomistic.batch import collate
    from quintet.definet.model import DefiNet
    from quintet.definet.task import DefiNetTask
    from quintet.train import TrainConfig, fit

    tcfg = TrainConfig(
        max_epochs=8 if quick else 30, steps_per_epoch=10, batch_size=4, lr=3e-3, ema_decay=0.0 if quick else 0.99,
        early_stop_patience=None, monitor="val/coord_mae", progress=False,
        max_time_s=None if quick else 45.0,  # quick: fixed steps, so the test result is deterministic
    )  # fmt: skip
    task = DefiNetTask(DefiNet(cfg))
    t0 = time.perf_counter()
    res = fit(
        task, train_recs, test_recs, tcfg, out_dir / "run", collate_fn=collate, resume=False,
        extra=task.export_extra(),
    )  # fmt: skip
    return res, time.perf_counter() - t0


def _plot_arrows(rec: dict, pred: np.ndarray, png: Path) -> None:
    """Displacement arrows of one test structure, target vs prediction (xy projection)."""
    import matplotlib.pyplot as plt

    real = (rec["defect"] != 2).numpy()
    lab = rec["defect"].numpy()
    start = rec["pos"].double().numpy()
    true_d = (rec["relaxed_pos"].double().numpy() - start)[real]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    scale = 60.0
    for ax, d, title in (
        (axes[0], true_d, "target (synthetic relaxation)"),
        (axes[1], (pred - start)[real], "DefiNet prediction"),
    ):
        ax.scatter(start[real, 0], start[real, 1], s=12, c=rec["z"].numpy()[real], cmap="viridis")
        ax.quiver(
            start[real, 0],
            start[real, 1],
            d[:, 0] * scale,
            d[:, 1] * scale,
            angles="xy",
            scale_units="xy",
            scale=1,
        )
        ax.scatter(
            start[lab == 2, 0], start[lab == 2, 1], s=80, facecolors="none", edgecolors="r", label="vacancy"
        )
        ax.scatter(
            start[lab == 1, 0], start[lab == 1, 1], s=80, marker="s", facecolors="none", edgecolors="m",
            label="substitution",
        )  # fmt: skip
        ax.set_title(f"{title} (arrows ×{scale:g})", fontsize=9)
        ax.set_aspect("equal")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _plot_bars(m: dict[str, float], png: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.bar(["dummy", "DefiNet"], [m["dummy"], m["mae"]], color=["grey", "C0"], label="all atoms")
    ax.bar(["dummy ≤3 Å", "DefiNet ≤3 Å"], [m["dummy_local"], m["local"]], color=["lightgrey", "C1"])
    ax.set_ylabel("coordinate MAE (Å)")
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _synthetic_section(out_dir: Path, quick: bool, why: str) -> DemoSection:
    """Fallback: train a small DefiNet on synthetic pairs, evaluate it and plot predicted displacements."""
    import matplotlib

    matplotlib.use("Agg")
    from quintet.definet.model import DefiNetConfig
    from quintet.definet.predict import predict_batches, record_metrics
    from quintet.definet.run import load_definet
    from quintet.seed import seed_everything

    seed_everything(0)
    cfg = DefiNetConfig(hidden=16 if quick else 32, num_layers=2, num_rbf=12, cutoff=4.5, max_neighbors=None)
    train_recs, test_recs = _synthetic_records(quick, cfg)
    res, train_s = _synthetic_fit(train_recs, test_recs, cfg, out_dir, quick)
    model, _ = load_definet(res.best_path)
    preds, seconds = predict_batches(model, test_recs, batch_size=8)
    rows = [record_metrics(r, p, (3.0, 4.0)) for r, p in zip(test_recs, preds, strict=True)]
    m = {
        "mae": float(np.mean([r["coord_mae"] for r in rows])), "dummy": float(np.mean([r["dummy_coord_mae"] for r in rows])),
        "local": float(np.nanmean([r["local_mae_3"] for r in rows])),
        "dummy_local": float(np.nanmean([r["dummy_local_mae_3"] for r in rows])),
    }  # fmt: skip
    k = int(np.argmax([r["dummy_coord_mae"] for r in rows]))
    arrows, bars = out_dir / "definet_displacements.png", out_dir / "definet_mae.png"
    _plot_arrows(test_recs[k], preds[k], arrows)
    _plot_bars(m, bars)
    md = (
        f"**Fallback: {why}.** This section therefore shows the pipeline on synthetic MoS2 3×3 supercells with "
        f"1–2 vacancies/substitutions ({len(train_recs)} train, {len(test_recs)} test pairs; an analytic local "
        f"relaxation field, not physics). DefiNet (hidden {cfg.hidden}, {cfg.num_layers} layers, "
        f"{model.num_parameters():,} parameters) trained for {res.history[-1]['step']} steps in {train_s:.0f} s.\n\n"
        "| | coordinate MAE (Å) | within 3 Å of a defect (Å) |\n|---|---|---|\n"
        f"| dummy (unrelaxed input) | {m['dummy']:.5f} | {m['dummy_local']:.5f} |\n"
        f"| DefiNet | {m['mae']:.5f} | {m['local']:.5f} |\n\n"
        f"Ratio vs dummy: **{m['mae'] / m['dummy']:.2f}** (near defects {m['local'] / m['dummy_local']:.2f}); "
        f"inference {1e3 * seconds / len(test_recs):.1f} ms per structure. Real-data results: "
        "`benchmarks/results/definet.json`."
    )
    metrics = {
        "fallback": why, "coord_mae_A": m["mae"], "dummy_coord_mae_A": m["dummy"], "ratio_vs_dummy": m["mae"] / m["dummy"],
        "local3_ratio_vs_dummy": m["local"] / m["dummy_local"], "train_steps": int(res.history[-1]["step"]),
    }  # fmt: skip
    return DemoSection(title=TITLE, markdown=md, images=[bars, arrows], metrics=metrics)


def demo(out_dir: Path, quick: bool = False) -> DemoSection:
    """The shipped model on real held-out defect supercells when model and data are there, else the fallback.

    Args:
        out_dir: folder for the eval tables (or the fallback's run and plots).
        quick: smallest settings (always the synthetic fallback, so tests are deterministic and need no data).
    """
    from quintet.demo import shared_dir
    from quintet.models import default_model

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if quick:
        return _synthetic_section(
            out_dir, quick, "quick mode trains a toy model instead of loading the shipped one"
        )
    root = shared_dir("data/materials/defects2d")
    model = default_model("definet")
    if model is None:
        return _synthetic_section(out_dir, quick, "no shipped DefiNet model is installed")
    if root is None:
        return _synthetic_section(out_dir, quick, "../shared/data/materials/defects2d is absent")
    return _real_section(model, root, out_dir, quick)


if __name__ == "__main__":  # pragma: no cover
    torch.set_num_threads(1)
    print(demo(Path("demo_out/definet"), quick=True).markdown)
