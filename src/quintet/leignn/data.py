"""Labelled frames for LEIGNN training: which file(s), which keys, which split.

Two ways to give the data (as MACE and NequIP users expect one or the other):

- ``data.path``: one file split by counts (``n_train`` / ``n_val`` / ``n_test``, seeded, the split
  saved beside the data with the data's fingerprint: the MD17 protocol);
- ``data.train_file`` + ``data.valid_file`` (+ ``data.test_file``): files already split; every
  frame of each file is used.

Labels are read from configurable keys (MACE writes ``REF_energy``, ``REF_forces``, ``REF_stress``):
a key is looked up in ``atoms.info`` / ``atoms.arrays`` first, then in the single-point results
ASE attaches for ``energy`` / ``forces`` / ``stress``. ``weight_key`` (MACE's ``config_weight``)
gives each frame a weight in the loss (1 when absent). A frame missing a label, or with a NaN/inf
label, is refused with the file, the frame and the key named.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from quintet.atomistic import keys as K
from quintet.atomistic.structures import from_ase, read_structures
from quintet.io import fingerprint

__all__ = ["WEIGHT", "DataConfig", "LabelledFrames", "load_splits", "read_frames"]

WEIGHT = K.register_key("config_weight", "graph")  # () float per record, (B,) batched: loss weight


@dataclass
class DataConfig:
    """Where the labelled frames come from, under which keys, and how they are split.

    Args:
        path: one extxyz / ASE db / MD17-style npz file, split by ``n_train`` / ``n_val`` / ``n_test``.
        train_file, valid_file, test_file: files already split (instead of ``path``); ``test_file``
            is only needed by ``eval --split test``.
        n_train, n_val: frames of ``path`` for training and validation; ``n_test`` (``None``: the rest).
        seed: split seed (the split is saved with the data's fingerprint under the cache and reused).
        energy_scale: multiplies energies, forces and stress when reading (0.0433641: kcal/mol → eV).
        split_dir: where the split csvs go (default: read from `<stem>_splits` beside the data when there,
            new ones written under the cache, `$QUINTET_CACHE`; never into the data).
        energy_key, forces_key, stress_key: label names in the files (MACE: ``REF_energy`` ...).
        weight_key: per-frame loss weight in ``atoms.info`` (absent: 1).
    """

    path: str = ""
    train_file: str = ""
    valid_file: str = ""
    test_file: str = ""
    n_train: int = 1000
    n_val: int = 500
    n_test: int | None = None
    seed: int = 0
    energy_scale: float = 1.0
    split_dir: str | None = None
    energy_key: str = "energy"
    forces_key: str = "forces"
    stress_key: str = "stress"
    weight_key: str = "config_weight"

    def __post_init__(self) -> None:
        if self.path and (self.train_file or self.valid_file):
            raise ValueError(
                "give either data.path (one file, split by n_train/n_val) or data.train_file + data.valid_file, not both"
            )
        if bool(self.train_file) != bool(self.valid_file):
            raise ValueError(
                "data.train_file and data.valid_file go together; to split one file use data.path with n_train/n_val"
            )


def _label(atoms: Any, key: str, per_atom: bool) -> Any:
    """The label ``key`` of a frame: info/arrays first, then the calculator results; ``None`` if absent."""
    store = atoms.arrays if per_atom else atoms.info
    if key in store:
        return store[key]
    calc = getattr(atoms, "calc", None)
    results = getattr(calc, "results", None) or {}
    return results.get(key)


def _require(atoms: Any, key: str, per_atom: bool, what: str, where: str, cfg_key: str) -> np.ndarray:
    value = _label(atoms, key, per_atom)
    if value is None:
        found = sorted(atoms.arrays if per_atom else atoms.info)
        calc = getattr(getattr(atoms, "calc", None), "results", None) or {}
        raise ValueError(
            f"{where}: no {what} under key {key!r} (found {sorted({*found, *calc})}); "
            f"set data.{cfg_key}=<the key your file uses>"
        )
    arr = np.asarray(value, dtype=float)
    if not np.isfinite(arr).all():
        raise ValueError(f"{where}: {what} ({key!r}) contain NaN or inf; fix or remove this frame")
    return arr


def _stress_3x3(s: np.ndarray, where: str, key: str) -> np.ndarray:
    """Voigt (6,) ``xx yy zz yz xz xy``, flat (9,) or (3, 3) stress → (3, 3)."""
    if s.size == 6:
        from ase.stress import voigt_6_to_full_3x3_stress

        return voigt_6_to_full_3x3_stress(s.reshape(6))
    if s.size == 9:
        return s.reshape(3, 3)
    raise ValueError(f"{where}: stress ({key!r}) has shape {s.shape}, expected 6 (Voigt) or 3x3 values")


def _record(
    atoms: Any, cfg: DataConfig, where: str, stress: bool, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """One labelled record (energy, forces, optional stress, weight) from a frame."""
    rec = from_ase(atoms, dtype=dtype, with_results=False)
    e = _require(atoms, cfg.energy_key, False, "energy", where, "energy_key")
    f = _require(atoms, cfg.forces_key, True, "forces", where, "forces_key")
    if f.shape != (len(atoms), 3):
        raise ValueError(
            f"{where}: forces ({cfg.forces_key!r}) have shape {f.shape}, expected ({len(atoms)}, 3)"
        )
    rec[K.ENERGY] = torch.tensor(float(e) * cfg.energy_scale, dtype=dtype)
    rec[K.FORCES] = torch.as_tensor(f * cfg.energy_scale, dtype=dtype)
    if stress:
        if not atoms.pbc.all():
            raise ValueError(
                f"{where}: stress in the loss needs fully periodic frames; set loss.stress_weight=0"
            )
        s = _require(atoms, cfg.stress_key, False, "stress", where, "stress_key")
        rec[K.STRESS] = torch.as_tensor(_stress_3x3(s, where, cfg.stress_key) * cfg.energy_scale, dtype=dtype)
    w = float(atoms.info.get(cfg.weight_key, 1.0))
    if not (np.isfinite(w) and w >= 0):
        raise ValueError(f"{where}: {cfg.weight_key}={w} must be a finite number >= 0")
    rec[WEIGHT] = torch.tensor(w, dtype=dtype)
    return rec


class LabelledFrames(Dataset):
    """The labelled frames of one file as records (with ``transform`` applied on access).

    Attributes:
        records, ids (``"<file stem>:<frame>"``), fingerprint, path.
    """

    def __init__(
        self,
        path: str | Path,
        records: list[dict[str, torch.Tensor]],
        ids: list[str],
        fp: str,
        transform: Any,
    ):
        self.path = Path(path)
        self.records = records
        self.ids = ids
        self.fingerprint = fp
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rec = {k: v.clone() for k, v in self.records[i].items()}
        return self.transform(rec) if self.transform is not None else rec


def _npz_frames(
    path: Path, cfg: DataConfig, stress: bool, dtype: torch.dtype
) -> list[dict[str, torch.Tensor]]:
    from quintet.atomistic.datasets import TrajectoryDataset

    if stress:
        raise ValueError(f"{path}: MD17-style npz files carry no stress; set loss.stress_weight=0")
    if (cfg.energy_key, cfg.forces_key) != ("energy", "forces"):
        raise ValueError(
            f"{path}: npz files are read by their arrays R, z, E, F; data.energy_key / data.forces_key "
            "apply to extxyz / ASE db files (leave them at energy / forces)"
        )
    ds = TrajectoryDataset(path, dtype=dtype, energy_scale=cfg.energy_scale)
    out = []
    for k, rec in enumerate(ds.records):
        if K.ENERGY not in rec or K.FORCES not in rec:
            raise ValueError(f"{path}: npz needs arrays E and F (energies and forces)")
        if not (torch.isfinite(rec[K.FORCES]).all() and torch.isfinite(rec[K.ENERGY])):
            raise ValueError(
                f"{path} (frame {k}): energy or forces contain NaN or inf; fix or remove this frame"
            )
        rec = {key: v for key, v in rec.items() if key != K.STRUCTURE_ID}
        rec[WEIGHT] = torch.tensor(1.0, dtype=dtype)
        out.append(rec)
    return out


def read_frames(
    path: str | Path, cfg: DataConfig, dtype: torch.dtype, stress: bool = False, transform: Any = None
) -> LabelledFrames:
    """Read every labelled frame of ``path`` (extxyz / ASE db / traj / npz) with ``cfg``'s keys; a file
    written by ``quintet data md`` is first checked against the hash in its summary."""
    from quintet.atomistic.datasets import verify_trajectory

    path = Path(path)
    if path.is_file():
        verify_trajectory(path)
    if path.suffix.lower() == ".npz":
        records = _npz_frames(path, cfg, stress, dtype)
    else:
        frames = read_structures(path, index=":")
        records = [_record(a, cfg, f"{path} (frame {k})", stress, dtype) for k, a in enumerate(frames)]
    for k, rec in enumerate(records):
        rec[K.STRUCTURE_ID] = torch.tensor(k, dtype=torch.long)
    ids = [f"{path.stem}:{k}" for k in range(len(records))]
    # the same fingerprint as quintet.atomistic.datasets.TrajectoryDataset, so existing splits stay valid
    fp = fingerprint("trajectory", ids, [path.stat().st_size], cfg.energy_scale)
    return LabelledFrames(path, records, ids, fp, transform)


def _split_one_file(full: LabelledFrames, data: DataConfig) -> dict[str, Any]:
    from quintet.atomistic.datasets import load_or_make_splits, split_cache_dir

    n = len(full)
    n_test = n - data.n_train - data.n_val if data.n_test is None else data.n_test
    if data.n_train < 1 or data.n_val < 1 or n_test < 0 or data.n_train + data.n_val + n_test > n:
        raise ValueError(
            f"{data.path}: {n} frames cannot be split into {data.n_train} train / {data.n_val} val / {n_test} test"
        )
    rest = n - data.n_train - data.n_val - n_test
    # splits beside the data are read when they are there; new ones go to the cache, never into the data
    beside = Path(data.path).parent / f"{Path(data.path).stem}_splits"
    split_dir = Path(data.split_dir) if data.split_dir else beside
    write_dir = None if data.split_dir else split_cache_dir(beside)
    fractions = (data.n_train, data.n_val, n_test + rest)
    ids = load_or_make_splits(full.ids, split_dir, full.fingerprint, fractions, data.seed, write_dir)
    index = {i: k for k, i in enumerate(full.ids)}
    out = {s: Subset(full, [index[i] for i in ids[s]]) for s in ("train", "val", "test")}
    if rest:  # drop the unused tail of the test split deterministically
        out["test"] = Subset(full, [index[i] for i in ids["test"][:n_test]])
    return out


def load_splits(
    data: DataConfig,
    cutoff: float,
    max_neighbors: int | None,
    dtype: torch.dtype,
    stress: bool = False,
    splits: tuple[str, ...] = ("train", "val", "test"),
) -> dict[str, Any]:
    """``{"train", "val", "test"}`` datasets of records with neighbour lists (only the asked-for splits
    are read when the data comes as separate files; a missing ``test_file`` leaves ``"test"`` out)."""
    from quintet.atomistic.neighbors import with_neighbors

    def transform(r: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return with_neighbors(r, cutoff, max_neighbors)

    if data.path:
        return _split_one_file(read_frames(data.path, data, dtype, stress, transform), data)
    if not data.train_file:
        raise ValueError(
            "no data: give data.path=<file> (split by n_train/n_val) or data.train_file + data.valid_file"
        )
    files = {"train": data.train_file, "val": data.valid_file, "test": data.test_file}
    out = {}
    for split in splits:
        if files[split]:
            out[split] = read_frames(files[split], data, dtype, stress, transform)
            if len(out[split]) == 0:
                raise ValueError(f"{files[split]}: no frames")
    return out


def all_frames(data: DataConfig, cutoff: float, max_neighbors: int | None, dtype: torch.dtype) -> Any:
    """Every frame of the data (``data.path``, or train + valid + test files), for ``eval split=all``:
    a whole file scored without a split."""
    from torch.utils.data import ConcatDataset

    from quintet.atomistic.neighbors import with_neighbors

    files = [data.path] if data.path else [f for f in (data.train_file, data.valid_file, data.test_file) if f]
    if not files:
        raise ValueError("no data: give data.path=<file> (or data.train_file/valid_file/test_file)")
    sets = [read_frames(f, data, dtype, False, lambda r: with_neighbors(r, cutoff, max_neighbors)) for f in files]
    return sets[0] if len(sets) == 1 else ConcatDataset(sets)
