"""DefiNet jobs: ``train`` on 2DMD-layout folders (several hosts at once) and model loading.

Each job is one typed function taking a dataclass config (``quintet definet train`` is a thin
wrapper). The resolved config is saved next to the run's outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import ConcatDataset, Dataset

from quintet.atomistic.datasets import training_domain
from quintet.config import save_config
from quintet.definet.model import DefiNet, DefiNetConfig
from quintet.definet.task import DefiNetTask
from quintet.train import FitResult, TrainConfig, fit

__all__ = [
    "DataConfig",
    "TrainJob",
    "host_folders",
    "load_definet",
    "load_pairs",
    "train",
]


@dataclass
class DataConfig:
    """Where the defect pairs are and how they are split.

    Attributes:
        root: a folder of host folders in the 2DMD layout (``<host>/CIF/<id>_{un}relaxed.cif``,
            ``<host>/meta.csv``, ``<host>/<host>_pristine_supercell.cif`` or ``<host>/<host>.cif``),
            or one host folder.
        hosts: host folders to use (empty: every host folder under ``root``).
        exclude_hosts: host folders to leave out (e.g. a held-out host).
        split_seed: seed of the per-host 80/10/10 split (written once, reused while the data match).
        split_dir: where split files go (default: read beside the data when there, new ones written to the cache).
        defect_tol: largest atom–site distance when labelling defects, Å.
        cache_dir: keep the parsed pairs here (parsed once per data fingerprint).
        max_train: use at most this many training pairs per host (quick runs; ``None``: all).
    """

    root: str = "../shared/data/materials/defects2d"
    hosts: list[str] = field(default_factory=list)
    exclude_hosts: list[str] = field(default_factory=list)
    split_seed: int = 0
    split_dir: str | None = None
    defect_tol: float = 0.1
    cache_dir: str | None = None
    max_train: int | None = None


def _default_train() -> TrainConfig:
    return TrainConfig(
        max_epochs=200,
        batch_size=8,
        lr=1e-3,
        grad_clip=150.0,
        ema_decay=0.999,
        ema_warmup=True,
        plateau_patience=5,
        min_lr=1e-6,
        early_stop_patience=20,
        monitor="val/coord_mae",
    )


@dataclass
class TrainJob:
    """``quintet definet train``: data, architecture, trainer settings and the output folder.

    Attributes:
        data: the pairs (see :class:`DataConfig`).
        model: the architecture (see :class:`~quintet.definet.model.DefiNetConfig`).
        train: the shared trainer's settings (``quintet.train.TrainConfig``).
        out: run folder (``best.pt``, ``last.ckpt``, ``history.csv``, ``config.yaml``).
        supervise_all_layers: average the loss over every layer's positions.
        resume: continue from ``out/last.ckpt`` when present.
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: DefiNetConfig = field(default_factory=DefiNetConfig)
    train: TrainConfig = field(default_factory=_default_train)
    out: str = "runs/definet"
    supervise_all_layers: bool = False
    resume: bool = True


def host_folders(
    root: str | Path, hosts: list[str] | None = None, exclude: list[str] | None = None
) -> list[Path]:
    """The 2DMD host folders under ``root`` (or ``root`` itself when it is one).

    Raises:
        FileNotFoundError: ``root`` or a requested host does not exist, or nothing is left.
    """
    root = Path(root)
    if root.is_file():
        raise ValueError(
            f"{root}: a file, but the data must be a host folder (CIF/, meta.csv) or a folder of host folders; "
            "pass its folder to --data (key data.root)"
        )
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    if (root / "CIF").is_dir():
        found = {root.name: root}
    else:
        found = {d.name: d for d in sorted(root.iterdir()) if (d / "CIF").is_dir()}
    if not found:
        raise FileNotFoundError(f"{root}: no host folder with a CIF/ sub-folder (2DMD layout)")
    names = list(hosts) if hosts else list(found)
    missing = [h for h in names if h not in found]
    if missing:
        raise FileNotFoundError(f"{root}: no host folder(s) {missing}; found {sorted(found)}")
    names = [h for h in names if h not in set(exclude or [])]
    if not names:
        raise FileNotFoundError(f"{root}: every host was excluded")
    return [found[h] for h in names]


class _WithNeighbors:
    """Picklable transform adding the model's graph to each record."""

    def __init__(self, cutoff: float, max_neighbors: int | None) -> None:
        self.cutoff = cutoff
        self.max_neighbors = max_neighbors

    def __call__(self, record: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        from quintet.atomistic.neighbors import with_neighbors

        return with_neighbors(record, self.cutoff, self.max_neighbors)


def load_pairs(
    data: DataConfig,
    split: str | None,
    model: DefiNetConfig | None = None,
    hosts: list[str] | None = None,
    exclude: list[str] | None = None,
    limit: int | None = None,
) -> Dataset:
    """The relaxation pairs of the selected hosts (one split), with the model's graph attached.

    Args:
        data: data settings.
        split: ``"train"``/``"val"``/``"test"`` or ``None`` for every pair.
        model: the architecture (its cutoff/max_neighbors build the graph; ``None``: build no graph).
        hosts: override ``data.hosts``.
        exclude: override ``data.exclude_hosts``.
        limit: at most this many pairs per host.
    """
    from quintet.atomistic.datasets import RelaxPairDataset

    transform = _WithNeighbors(model.cutoff, model.max_neighbors) if model is not None else None
    parts = []
    for folder in host_folders(
        data.root,
        hosts if hosts is not None else data.hosts,
        exclude if exclude is not None else data.exclude_hosts,
    ):
        ds = RelaxPairDataset(
            folder,
            layout="2dmd",
            split=split,
            transform=transform,
            split_dir=None if data.split_dir is None else Path(data.split_dir) / folder.name,
            seed=data.split_seed,
            defect_tol=data.defect_tol,
            dtype=torch.float32,
            cache_dir=data.cache_dir,
        )
        if limit is not None and len(ds) > limit:
            ds = torch.utils.data.Subset(ds, list(range(limit)))
        parts.append(ds)
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


def train(job: TrainJob) -> FitResult:
    """Train DefiNet on the job's hosts; returns the trainer's result (``best.pt`` is the model file)."""
    from quintet.atomistic.batch import collate

    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(job, out / "config.yaml")
    torch.manual_seed(job.train.seed)
    train_ds = load_pairs(job.data, "train", job.model, limit=job.data.max_train)
    val_ds = load_pairs(job.data, "val", job.model)
    task = DefiNetTask(DefiNet(job.model), supervise_all_layers=job.supervise_all_layers)
    return fit(
        task,
        train_ds,
        val_ds,
        job.train,
        out,
        collate_fn=collate,
        resume=job.resume,
        extra={**task.export_extra(), "domain": training_domain(train_ds)},
    )


def from_model_file(d: dict[str, Any], path: str | Path) -> DefiNet:
    """Rebuild a :class:`DefiNet` (eval mode) from a loaded model file (:func:`quintet.load_model`)."""
    from quintet.models import build

    return build(DefiNet, DefiNetConfig, d, path)


def load_definet(path: str | Path) -> tuple[DefiNet, dict[str, Any]]:
    """Rebuild a trained DefiNet from a model file (``best.pt``) or pretrained name; returns the model
    (eval mode) and the file.

    Raises:
        FileNotFoundError: missing file. ValueError: not a DefiNet model file, or a corrupted one.
    """
    from quintet.models import load_model

    return load_model(path, system="definet")
