"""DeepRelax section of ``quintet demo``.

With the shipped DeepRelax model and ``../shared/data/materials/bulk_oxides`` present (relative to the
working directory or the repository root), the section runs the package's own eval job on held-out real
structures: the ratio vs the dummy, the model's time per structure against the CHGNet relaxation recorded
in the data's ``meta.csv``, and the CHGNet steps needed to finish from the prediction vs from the input.
Otherwise it falls back to a small EMT Cu set trained on the spot, and says so in the text.

:func:`shared_dir` and :func:`oracle_markdown` are reused by the DefiNet section.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from quintet.demo import DemoSection, oracle_markdown, shared_dir

__all__ = ["demo"]

TITLE = "DeepRelax — one-shot crystal relaxation with uncertainty"
FINISH_LIMIT = 3


def _real_section(model: str, root: Path, out_dir: Path, quick: bool) -> DemoSection:
    """The shipped model on the held-out split of ``bulk_oxides`` through ``quintet deeprelax eval``."""
    from quintet.deeprelax.jobs import DataConfig, EvalJob, evaluate

    heldout = _heldout(model, root, out_dir / "heldout")
    job = EvalJob(
        model=model, data=DataConfig(root=str(heldout), layout="custom", cache_dir=str(out_dir / "cache")),
        split="all", out=str(out_dir / "eval"), finish_with="chgnet", finish_limit=1 if quick else FINISH_LIMIT,
        recorded_steps=True,
    )  # fmt: skip
    summary = evaluate(job)
    table, metrics = oracle_markdown(summary, float(summary["time_per_structure_s"]), Path(job.out), root)
    md = (
        f"Shipped model `{model}` on the {int(summary['num_structures'])} structures of `{root.name}` "
        "(CHGNet-relaxed bulk oxides) in its card's test split (never used for training or model selection), "
        "run with `quintet deeprelax eval --finish-with chgnet`. "
        f"Coordinate MAE {summary['coord_mae_A']:.4f} Å vs {summary['dummy_coord_mae_A']:.4f} Å for the dummy "
        f"(unrelaxed input): ratio **{summary['coord_mae_ratio_vs_dummy']:.2f}**; cell MAE "
        f"{summary['cell_mae_A']:.4f} Å vs {summary['dummy_cell_mae_A']:.4f} Å; uncertainty Spearman "
        f"{summary['uncertainty_spearman']:.2f}.\n\n{table}"
    )
    return DemoSection(title=TITLE, markdown=md, metrics=metrics)


def _heldout(model: str, root: Path, folder: Path) -> Path:
    """The pairs of ``root`` in the model card's test split (never seen in training or model selection),
    copied with their ``meta.csv`` rows into ``folder``."""
    import shutil

    from quintet.io import atomic_write_csv, read_csv
    from quintet.models import shipped_models

    test = set(shipped_models()[model].get("test_ids") or [])
    rows = [r for r in read_csv(root / "meta.csv") if r["atoms_id"] in test]
    if not rows:
        raise ValueError(f"{model}: no pair of {root} is in the card's test split")
    (folder / "CIF").mkdir(parents=True, exist_ok=True)
    for r in rows:
        for half in ("unrelaxed", "relaxed"):
            shutil.copyfile(root / "CIF" / f"{r['atoms_id']}_{half}.cif", folder / "CIF" / f"{r['atoms_id']}_{half}.cif")
    atomic_write_csv(folder / "meta.csv", rows)
    return folder


def _emt_pairs(data_dir: Path, n: int) -> float:
    from quintet.atomistic.oracle import RelaxPairsConfig, make_relax_pairs

    t0 = time.perf_counter()
    make_relax_pairs(
        RelaxPairsConfig(
            out=data_dir, n=n, prototypes=["Cu:fcc:3.61"], elements=["Cu", "Ni"], substitute_fraction=0.0,
            strain=0.04, rattle=0.08, cell_filter="unitcell", oracle="emt", seed=0,
        ),
        progress=False,
    )  # fmt: skip
    return time.perf_counter() - t0


def _emt_train(data_dir: Path, out_dir: Path, quick: bool) -> tuple[Any, Any, float]:
    """Train a small DeepRelax on the EMT pairs; returns the job, the best model file and the seconds."""
    from quintet.deeprelax.jobs import DataConfig, TrainJob, train
    from quintet.deeprelax.model import ModelConfig
    from quintet.train import TrainConfig

    job = TrainJob(
        data=DataConfig(root=str(data_dir), layout="custom", fractions=(0.75, 0.0, 0.25)),
        model=ModelConfig(hidden=32, num_layers=1 if quick else 2, num_rbf=16),
        train=TrainConfig(
            max_epochs=30 if quick else 80, batch_size=8, lr=5e-3, ema_decay=0.0, progress=False,
            early_stop_patience=None, accelerator="cpu", monitor="train/loss", plateau_patience=1000,
            max_time_s=None if quick else 30.0,  # quick: fixed epochs, so the test result is deterministic
        ),
        out=str(out_dir / "run"),
    )  # fmt: skip
    job.loss.solve_in_val = False
    t0 = time.perf_counter()
    best = train(job)
    return job, best, time.perf_counter() - t0


def _emt_plot(train_sum: dict, test_sum: dict, test_rows: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    x = np.arange(2)
    axes[0].bar(x - 0.2, [train_sum["dummy_coord_mae_A"], test_sum["dummy_coord_mae_A"]], 0.4, label="dummy")
    axes[0].bar(x + 0.2, [train_sum["coord_mae_A"], test_sum["coord_mae_A"]], 0.4, label="DeepRelax")
    axes[0].set_xticks(x, ["train", "held-out"])
    axes[0].set_ylabel("coordinate MAE (Å)")
    axes[0].legend()
    axes[1].scatter([r["uncertainty_A"] for r in test_rows], [r["coord_mae_A"] for r in test_rows], s=12)
    axes[1].set_xlabel("predicted mean σ (Å)")
    axes[1].set_ylabel("coordinate MAE (Å)")
    axes[1].set_title("held-out cells")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _emt_section(out_dir: Path, quick: bool, why: str) -> DemoSection:
    """Fallback: strained/rattled Cu cells relaxed by EMT, a small DeepRelax trained here, held-out errors."""
    from quintet.deeprelax.jobs import evaluate_model, load_dataset, load_deeprelax

    torch.manual_seed(0)
    n = 16 if quick else 48
    t_data = _emt_pairs(out_dir / "emt_pairs", n)
    job, best, t_train = _emt_train(out_dir / "emt_pairs", out_dir, quick)
    model, _ = load_deeprelax(best)
    test_sum, test_rows = evaluate_model(model, load_dataset(job.data, "test", model.cfg), progress=False)
    train_sum, _ = evaluate_model(model, load_dataset(job.data, "train", model.cfg), progress=False)
    png = out_dir / "deeprelax_demo.png"
    _emt_plot(train_sum, test_sum, test_rows, png)
    row = "| {} | {coord_mae_A:.4f} | {dummy_coord_mae_A:.4f} | {coord_mae_ratio_vs_dummy:.2f} | {cell_mae_A:.4f} | {dummy_cell_mae_A:.4f} |"
    md = f"""**Fallback: {why}.** This section therefore shows the pipeline on a toy set, not the method's
real-data performance. DeepRelax predicts relaxed distances (with a Laplace σ) and the relaxed cell in one
forward pass, then recovers coordinates with a batched distance-geometry solve. Data: {n} Cu cells, strained
(±4 %) and rattled (0.08 Å), relaxed with cell by ASE's EMT ({t_data:.1f} s). Model: hidden 32,
{job.model.num_layers} layer(s), trained {t_train:.1f} s on {int(train_sum["num_structures"])} pairs.

| split | DeepRelax coord MAE (Å) | dummy (unrelaxed) | ratio | cell MAE (Å) | dummy cell MAE |
|---|---|---|---|---|---|
{row.format("train", **train_sum)}
{row.format("held-out", **test_sum)}

One-shot relaxation (forward + solve) took {1000 * test_sum["time_per_structure_s"]:.1f} ms per structure; the
uncertainty ranks held-out structures with Spearman {test_sum["uncertainty_spearman"]:.2f}. Real-data numbers:
`benchmarks/results/deeprelax.json`.
"""
    metrics = {
        "fallback": why,
        "train_coord_mae_ratio_vs_dummy": round(train_sum["coord_mae_ratio_vs_dummy"], 3),
        "test_coord_mae_ratio_vs_dummy": round(test_sum["coord_mae_ratio_vs_dummy"], 3),
        "time_per_structure_s": round(test_sum["time_per_structure_s"], 4),
    }
    return DemoSection(title=TITLE, markdown=md, images=[png], metrics=metrics)


def demo(out_dir: Path, quick: bool) -> DemoSection:
    """The shipped model on real held-out structures when model and data are there, else the EMT fallback.

    Args:
        out_dir: folder for the eval tables (or the fallback's data, run and plot).
        quick: smallest settings (the fallback always, so tests are deterministic and need no data).
    """
    from quintet.models import default_model

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    root = shared_dir("data/materials/bulk_oxides")
    model = default_model("deeprelax")
    if quick:
        return _emt_section(
            out_dir, quick, "quick mode trains a toy model instead of loading the shipped one"
        )
    if root is None or model is None:
        missing = (
            "no shipped DeepRelax model is installed"
            if model is None
            else "../shared/data/materials/bulk_oxides is absent"
        )
        return _emt_section(out_dir, quick, missing)
    return _real_section(model, root, out_dir, quick)
