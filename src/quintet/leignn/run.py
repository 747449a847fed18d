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
from quintet.config import config_to_dict, save_config
from quintet.io import atomic_save_json
from quintet.leignn.data import DataConfig, all_frames, load_splits
from quintet.leignn.model import LEIGNN, LEIGNNModelConfig
from quintet.leignn.task import LossConfig, PotentialTask
from quintet.train import TrainConfig

__all__ = ["DataConfig", "EvalResult", "LEIGNNJob", "evaluate", "load_model", "load_splits", "train"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}


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
    """Everything ``quintet leignn train`` needs (YAML keys: data, model, loss, train, out, dtype, init_from).

    ``init_from``: fine-tune from any LEIGNN model file: its architecture, weights and fitted energy
    reference are kept (``model.*`` must then be left at its defaults or match the file), and the new
    data may only hold elements the model was trained on.
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: LEIGNNModelConfig = field(default_factory=LEIGNNModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=_train_defaults)
    out: str = "runs/leignn"
    dtype: Literal["float32", "float64"] = "float32"
    init_from: str = ""


def _initial_model(job: LEIGNNJob, dtype: torch.dtype) -> LEIGNN:
    """A fresh model (seeded by ``train.seed``) or the one of ``init_from`` for fine-tuning."""
    torch.manual_seed(job.train.seed)  # initial weights follow train.seed too (committee members differ)
    if not job.init_from:
        return LEIGNN(job.model).to(dtype)
    model = load_model(job.init_from).to(dtype).train()
    if job.model not in (LEIGNNModelConfig(), model.config):
        diff = {
            k: (getattr(job.model, k), getattr(model.config, k))
            for k in vars(model.config)
            if getattr(job.model, k) != getattr(model.config, k)
        }
        raise ValueError(
            f"init_from={job.init_from}: model.* keys differ from the model file ({diff}, yours vs file); "
            "drop them: fine-tuning keeps the file's architecture"
        )
    return model


def check_new_elements(model: LEIGNN, datasets: dict[str, Any], data: str, base: str) -> None:
    """Raise if the fine-tuning data holds elements the base model never saw, listing them."""
    from ase.data import chemical_symbols

    known = set(torch.nonzero(model.normalisation.known_elements).flatten().tolist())
    seen: set[int] = set()
    for ds in datasets.values():  # the records themselves: no neighbour lists needed
        frames, idx = (ds.dataset, ds.indices) if isinstance(ds, Subset) else (ds, range(len(ds)))
        for i in idx:
            seen.update(frames.records[i][K.ATOMIC_NUMBERS].unique().tolist())
    new = sorted(seen - known)
    if new:
        raise ValueError(
            f"fine-tuning data {data} holds element(s) {', '.join(chemical_symbols[z] for z in new)} that the base "
            f"model {base} was not trained on (it knows {', '.join(chemical_symbols[z] for z in sorted(known))}); "
            "train a new model on all elements instead of fine-tuning"
        )


def train(job: LEIGNNJob) -> Path:
    """Train an LEIGNN model; returns the path of the best (EMA) model file ``<out>/best.pt``."""
    from quintet.train import fit

    dtype = DTYPES[job.dtype]
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(job, out / "config.yaml")
    model = _initial_model(job, dtype)
    stress = job.loss.stress_weight > 0
    splits = load_splits(
        job.data, model.config.cutoff, model.config.max_neighbors, dtype, stress, ("train", "val")
    )
    if job.init_from:
        files = job.data.path or f"{job.data.train_file} + {job.data.valid_file}"
        check_new_elements(model, splits, files, job.init_from)
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
            "model": config_to_dict(model.config),
            "dtype": job.dtype,
            "job": config_to_dict(job),
        },
    )
    return Path(result.best_path)


def from_model_file(d: dict[str, Any], path: str | Path) -> LEIGNN:
    """Rebuild an LEIGNN model (eval mode, CPU) from a loaded model file (:func:`quintet.load_model`)."""
    from quintet.models import build

    dtype = DTYPES.get(d["extra"].get("dtype", "float32"), torch.float32)
    return build(LEIGNN, LEIGNNModelConfig, d, path, dtype)


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
    param = next(model.parameters())
    dtype, device = param.dtype, param.device
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    e_true, e_pred, f_true, f_pred = [], [], [], []
    t0 = time.perf_counter()
    for cpu_batch in tqdm(loader, desc=desc, unit="batch"):
        batch = {k: v.to(device) for k, v in cpu_batch.items()}
        pred = {k: v.detach().cpu() for k, v in model(batch).items()}
        n_at = cpu_batch[K.NUM_ATOMS].to(dtype)
        e_true.append((cpu_batch[K.ENERGY] / n_at).numpy())
        e_pred.append((pred[K.ENERGY] / n_at).numpy())
        f_true.append(cpu_batch[K.FORCES].numpy().ravel())
        f_pred.append(pred[K.FORCES].numpy().ravel())
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
    """``quintet leignn eval``: a model file, the data (same split settings as training) and a split.

    ``device``: where the model runs (``cpu``, ``cuda``, ``cuda:1``...).
    """

    model: str = ""
    device: str = "cpu"
    data: DataConfig = field(default_factory=DataConfig)
    split: Literal["train", "val", "test", "all"] = "test"
    batch_size: int = 32
    out: str = "runs/leignn_eval"
    max_frames: int | None = None


def evaluate(cfg: EvalConfig) -> EvalResult:
    """Energy MAE (meV/atom) and force MAE (meV/Å) on a split; writes JSON and a parity plot."""
    model = load_model(cfg.model, cfg.device)
    dtype = next(model.parameters()).dtype
    if cfg.split == "all":  # a whole file, scored without a split
        ds = all_frames(cfg.data, model.config.cutoff, model.config.max_neighbors, dtype)
    else:
        splits = load_splits(cfg.data, model.config.cutoff, model.config.max_neighbors, dtype, splits=(cfg.split,))
        if cfg.split not in splits:
            raise ValueError(f"split={cfg.split} needs data.test_file=<file> (the data comes as separate files)")
        ds = splits[cfg.split]
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
