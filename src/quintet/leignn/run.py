"""LEIGNN jobs: ``train``, ``evaluate`` and ``load_model`` (MD lives in :mod:`quintet.leignn.md`).

Each job takes a typed dataclass config, saves the resolved config next to its outputs and
returns plain results, so the CLI verbs are one-line wrappers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Subset

from quintet.atomistic import keys as K
from quintet.atomistic.batch import collate
from quintet.atomistic.neighbors import with_neighbors
from quintet.config import config_to_dict, from_dict, save_config
from quintet.io import atomic_save_json
from quintet.leignn.model import LEIGNN, LEIGNNModelConfig
from quintet.leignn.task import LossConfig, PotentialTask
from quintet.train import TrainConfig

__all__ = ["DataConfig", "EvalResult", "LEIGNNJob", "evaluate", "load_model", "load_splits", "train"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class DataConfig:
    """Where the frames come from and how they are split (MD17 protocol by default).

    Args:
        path: extxyz / ASE db / MD17-style npz (``R, z, E, F``) file with energies and forces.
        n_train, n_val: number of training and validation frames; ``n_test`` (``None``: the rest).
        seed: split seed (the split is written next to the data with its fingerprint).
        energy_scale: multiplies energies and forces when reading (e.g. 0.0433641 for kcal/mol → eV).
        split_dir: where the split csvs go (default: beside the data, or the cache if read-only).
    """

    path: str = ""
    n_train: int = 1000
    n_val: int = 500
    n_test: int | None = None
    seed: int = 0
    energy_scale: float = 1.0
    split_dir: str | None = None


def _train_defaults() -> TrainConfig:
    return TrainConfig(
        lr=5e-4,
        batch_size=32,
        max_epochs=300,
        steps_per_epoch=None,
        grad_clip=100.0,
        min_lr=5e-5,
        ema_warmup=True,
    )


@dataclass
class LEIGNNJob:
    """Everything ``quintet leignn train`` needs (YAML keys: data, model, loss, train, out, dtype)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: LEIGNNModelConfig = field(default_factory=LEIGNNModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=_train_defaults)
    out: str = "runs/leignn"
    dtype: Literal["float32", "float64"] = "float32"


def load_splits(
    data: DataConfig, cutoff: float, max_neighbors: int | None, dtype: torch.dtype
) -> dict[str, Any]:
    """Read the frames once and return ``{"train", "val", "test"}`` subsets with neighbour lists."""
    from quintet.atomistic.datasets import TrajectoryDataset, load_or_make_splits

    if not data.path:
        raise ValueError("data.path is empty: give an extxyz / ASE db / npz file with energies and forces")
    full = TrajectoryDataset(
        data.path,
        transform=lambda r: with_neighbors(r, cutoff, max_neighbors),
        dtype=dtype,
        energy_scale=data.energy_scale,
    )
    n = len(full)
    n_test = n - data.n_train - data.n_val if data.n_test is None else data.n_test
    if data.n_train < 1 or data.n_val < 1 or n_test < 0 or data.n_train + data.n_val + n_test > n:
        raise ValueError(
            f"{data.path}: {n} frames cannot be split into {data.n_train} train / {data.n_val} val / {n_test} test"
        )
    missing = [k for k in (K.ENERGY, K.FORCES) if k not in full.records[0]]
    if missing:
        raise ValueError(f"{data.path}: frames carry no {' / '.join(missing)} labels")
    rest = n - data.n_train - data.n_val - n_test
    split_dir = Path(data.split_dir) if data.split_dir else None
    if split_dir is None:
        from quintet.atomistic.datasets import writable_dir

        split_dir = writable_dir(Path(data.path).parent, "splits") / f"{Path(data.path).stem}_splits"
    fractions = (data.n_train, data.n_val, n_test + rest)
    ids = load_or_make_splits(full.ids, split_dir, full.fingerprint, fractions, data.seed)
    index = {i: k for k, i in enumerate(full.ids)}
    out = {s: Subset(full, [index[i] for i in ids[s]]) for s in ("train", "val", "test")}
    if rest:  # drop the unused tail of the test split deterministically
        out["test"] = Subset(full, [index[i] for i in ids["test"][:n_test]])
    return out


def train(job: LEIGNNJob) -> Path:
    """Train an LEIGNN model; returns the path of the best (EMA) model file ``<out>/best.pt``."""
    from quintet.train import fit

    dtype = DTYPES[job.dtype]
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(job, out / "config.yaml")
    splits = load_splits(job.data, job.model.cutoff, job.model.max_neighbors, dtype)
    torch.manual_seed(job.train.seed)  # initial weights follow train.seed too (committee members differ)
    model = LEIGNN(job.model).to(dtype)
    task = PotentialTask(model, job.loss)
    result = fit(
        task,
        splits["train"],
        splits["val"],
        job.train,
        out,
        collate_fn=collate,
        extra={
            "system": "leignn",
            "model": config_to_dict(job.model),
            "dtype": job.dtype,
            "job": config_to_dict(job),
        },
    )
    return Path(result.best_path)


def from_model_file(d: dict[str, Any], path: str | Path) -> LEIGNN:
    """Rebuild an LEIGNN model (eval mode, CPU) from a loaded model file (:func:`quintet.load_model`)."""
    extra = d["extra"]
    try:
        cfg = from_dict(LEIGNNModelConfig, extra["model"])
    except ValueError as exc:
        raise ValueError(f"{path}: its LEIGNN architecture is not valid here: {exc}") from exc
    from quintet.models import load_weights

    return load_weights(LEIGNN(cfg).to(DTYPES.get(extra.get("dtype", "float32"), torch.float32)), d, path)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LEIGNN:
    """Rebuild an LEIGNN model from a model file or pretrained name (``weights_only=True``), in eval mode."""
    from quintet.models import load_model as load_any

    return load_any(path, system="leignn")[0].to(device)


def predict_errors(
    model: torch.nn.Module, dataset: Any, batch_size: int = 32, desc: str = "eval"
) -> tuple[dict[str, float], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Errors of any quintet potential on a dataset of labelled records.

    Returns:
        metrics (energy MAE per atom and per structure in meV, force MAE/RMSE in meV/Å, timing) and
        the arrays (true/predicted energy per atom, true/predicted force components) for plots.
    """
    from tqdm.auto import tqdm

    model.eval()
    dtype = next(model.parameters()).dtype
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    e_true, e_pred, f_true, f_pred = [], [], [], []
    t0 = time.perf_counter()
    for batch in tqdm(loader, desc=desc, unit="batch"):
        pred = model(batch)
        n_at = batch[K.NUM_ATOMS].to(dtype)
        e_true.append((batch[K.ENERGY] / n_at).detach().numpy())
        e_pred.append((pred[K.ENERGY] / n_at).detach().numpy())
        f_true.append(batch[K.FORCES].detach().numpy().ravel())
        f_pred.append(pred[K.FORCES].detach().numpy().ravel())
    seconds = time.perf_counter() - t0
    et, ep, ft, fp = (np.concatenate(x) for x in (e_true, e_pred, f_true, f_pred))
    n_atoms = np.concatenate([[len(dataset[i][K.ATOMIC_NUMBERS])] for i in range(len(dataset))])
    metrics = {
        "energy_mae_meV_atom": float(1000 * np.abs(et - ep).mean()),
        "energy_mae_meV": float(1000 * np.abs((et - ep) * n_atoms).mean()),
        "force_mae_meV_A": float(1000 * np.abs(ft - fp).mean()),
        "force_rmse_meV_A": float(1000 * np.sqrt(((ft - fp) ** 2).mean())),
        "n_structures": len(et),
        "seconds": seconds,
    }
    return metrics, (et, ep, ft, fp)


@dataclass
class EvalResult:
    """Errors of a model on a split, plus where the outputs were written."""

    metrics: dict[str, float]
    parity_png: Path | None
    json_path: Path


@dataclass
class EvalConfig:
    """``quintet leignn eval``: a model file, the data (same split settings as training) and a split."""

    model: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    split: Literal["train", "val", "test"] = "test"
    batch_size: int = 32
    out: str = "runs/leignn_eval"
    max_frames: int | None = None


def evaluate(cfg: EvalConfig) -> EvalResult:
    """Energy MAE (meV/atom) and force MAE (meV/Å) on a split; writes JSON and a parity plot."""
    model = load_model(cfg.model)
    dtype = next(model.parameters()).dtype
    ds = load_splits(cfg.data, model.config.cutoff, model.config.max_neighbors, dtype)[cfg.split]
    if cfg.max_frames is not None:
        ds = Subset(ds, list(range(min(cfg.max_frames, len(ds)))))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    metrics, arrays = predict_errors(model, ds, cfg.batch_size, desc=f"eval {cfg.split}")
    json_path = out / "metrics.json"
    atomic_save_json(json_path, {"split": cfg.split, "model": cfg.model, **metrics})
    png = out / "parity.png"
    parity_plot(png, *arrays)
    print(
        f"{cfg.split}: energy MAE {metrics['energy_mae_meV_atom']:.2f} meV/atom, "
        f"force MAE {metrics['force_mae_meV_A']:.1f} meV/Å over {metrics['n_structures']} structures"
    )
    return EvalResult(metrics, png, json_path)


def parity_plot(path: Path, et: np.ndarray, ep: np.ndarray, ft: np.ndarray, fp: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from quintet.io import atomic_open

    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, t, p, name in (
        (axes[0], et, ep, "energy per atom (eV)"),
        (axes[1], ft, fp, "force component (eV/Å)"),
    ):
        ax.scatter(t, p, s=3, alpha=0.4)
        lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.set_xlabel(f"reference {name}")
        ax.set_ylabel(f"predicted {name}")
        ax.set_title(f"MAE {np.abs(t - p).mean() * 1000:.1f} m{name.split('(')[1][:-1]}")
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
