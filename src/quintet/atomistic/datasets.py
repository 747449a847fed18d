"""Datasets of atomistic records: trajectories and relaxation pairs, with seeded on-disk splits.

- :class:`TrajectoryDataset`: frames with energy/forces from extxyz, ASE db/json/traj, or an
  MD17-style ``npz`` (``R`` (F, N, 3), ``z`` (N,), ``E`` (F,) and ``F`` (F, N, 3)).
- :class:`RelaxPairDataset`: unrelaxed → relaxed pairs in the DeepRelax *custom* layout
  (``CIF/<id>_unrelaxed.cif`` + ``CIF/<id>_relaxed.cif``) or the *2DMD* layout (the same plus
  ``<host>.cif`` / ``<host>_pristine_supercell.cif``; point defects labelled against the pristine
  supercell, vacancies appended as placeholder nodes). The relaxed positions are unwrapped to the
  periodic image nearest each unrelaxed atom.

Splits (``train.csv`` / ``val.csv`` / ``test.csv``, column ``atoms_id``) are seeded and written with
the data's fingerprint in ``split.json``; they are reused while the fingerprint matches and remade
(with a message) when it does not. Split files that come with the data (no ``split.json``) are used
as they are. Parsed structures are cached (in memory, and optionally on disk) so CIF parsing happens
once, not every epoch.
"""

from __future__ import annotations

import csv
import io
import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from quintet.atomistic import keys as K
from quintet.atomistic.structures import from_ase, read_structure, read_structures
from quintet.io import (
    atomic_save_json,
    atomic_torch_save,
    atomic_write_text,
    file_sha256,
    fingerprint,
    load_json,
    verify_dataset,
)

__all__ = [
    "MAX_PAIR_DISPLACEMENT",
    "SPLITS",
    "RelaxPairDataset",
    "TrajectoryDataset",
    "check_pair_order",
    "dataset_ids",
    "dataset_meta",
    "default_cache_dir",
    "load_or_make_splits",
    "make_splits",
    "pair_record",
    "pristine_supercell",
    "read_pair",
    "split_cache_dir",
    "training_domain",
    "unwrap_to_nearest",
    "verify_trajectory",
    "writable_dir",
]

PathLike = str | os.PathLike[str]
Record = dict[str, torch.Tensor]
Transform = Callable[[Record], Record]
SPLITS = ("train", "val", "test")
_CACHE_VERSION = 2  # 2: pairs are checked for atom correspondence (check_pair_order)


def default_cache_dir() -> Path:
    """``$QUINTET_CACHE`` or ``~/.cache/quintet``: where splits and parsed data go when the data folder is read-only."""
    return Path(os.environ.get("QUINTET_CACHE", Path.home() / ".cache" / "quintet"))


def _info(msg: str) -> None:
    print(f"quintet.data: {msg}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# pure maths: unwrapping and defect labelling
# --------------------------------------------------------------------------------------------


def unwrap_to_nearest(
    ref_positions: np.ndarray,
    positions: np.ndarray,
    cell: np.ndarray,
    pbc: np.ndarray | Sequence[bool] = (True, True, True),
    ref_cell: np.ndarray | None = None,
) -> np.ndarray:
    """Move each atom of ``positions`` to its periodic image nearest the same atom of ``ref_positions``.

    The image is first guessed from fractional coordinates (``ref_positions`` expressed in ``ref_cell``,
    ``positions`` in ``cell``), then refined among the 27 neighbouring images of ``cell`` by Cartesian
    distance, so cell changes between the two structures are handled.

    Args:
        ref_positions: (N, 3) reference (e.g. unrelaxed) positions, Å.
        positions: (N, 3) positions to unwrap (e.g. relaxed), Å.
        cell: (3, 3) cell of ``positions`` (rows are lattice vectors).
        pbc: periodic directions; no image shift along the others.
        ref_cell: (3, 3) cell of ``ref_positions`` (default ``cell``).

    Returns:
        (N, 3) unwrapped positions: ``positions + n @ cell`` with integer n per atom.
    """
    ref = np.asarray(ref_positions, dtype=float)
    pos = np.asarray(positions, dtype=float)
    cell = np.asarray(cell, dtype=float)
    pbc = np.asarray(pbc, dtype=bool)
    if ref.shape != pos.shape:
        raise ValueError(f"positions {pos.shape} and reference {ref.shape} differ in shape")
    if not pbc.any():
        return pos.copy()
    rcell = cell if ref_cell is None else np.asarray(ref_cell, dtype=float)
    periodic = np.flatnonzero(pbc)
    f_pos = _frac(pos, cell, pbc)
    f_ref = _frac(ref, rcell, pbc)
    n0 = np.zeros_like(pos)
    n0[:, periodic] = np.round(f_ref[:, periodic] - f_pos[:, periodic])
    grid = np.stack(np.meshgrid(*[[-1, 0, 1] if p else [0] for p in pbc], indexing="ij"), -1).reshape(-1, 3)
    cand = (n0[:, None, :] + grid[None]).astype(float)  # (N, G, 3)
    shifted = pos[:, None, :] + cand @ cell  # (N, G, 3)
    best = np.argmin(np.linalg.norm(shifted - ref[:, None, :], axis=-1), axis=1)
    return shifted[np.arange(len(pos)), best]


def _frac(pos: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """Fractional coordinates along periodic directions (non-periodic ones completed orthogonally)."""
    from ase.cell import Cell

    c = Cell(cell.copy())
    full = c.complete()[:] if c.rank < 3 else cell
    return np.linalg.solve(full.T, pos.T).T


def _frac_basis(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    from ase.cell import Cell

    c = Cell(np.asarray(cell, dtype=float).copy())
    return c.complete()[:] if c.rank < 3 else np.asarray(cell, dtype=float)


def pristine_supercell(unit: Any, cell: np.ndarray, source: str = "unit cell") -> Any:
    """Repeat a unit cell into the supercell whose lattice is ``cell`` (integer matrix inferred).

    Raises:
        ValueError: ``cell`` is not an integer combination of the unit cell's vectors.
    """
    from ase.build import make_supercell

    cell = np.asarray(cell, dtype=float)
    m = cell @ np.linalg.inv(np.asarray(unit.cell[:], dtype=float))
    mi = np.round(m)
    sup = make_supercell(unit, mi.astype(int), wrap=True) if np.abs(m - mi).max() < 1e-2 else None
    if sup is None or np.abs(sup.cell[:] - cell).max() > 1e-2 * max(1.0, np.abs(cell).max()):
        raise ValueError(
            f"{source}: the supercell {np.round(cell, 4).tolist()} is not an integer multiple of the "
            f"unit cell {np.round(unit.cell[:], 4).tolist()}"
        )
    return sup


# --------------------------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------------------------


def make_splits(
    ids: Sequence[str], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, list[str]]:
    """Seeded random split of ``ids`` into train/val/test by ``fractions`` (sorted ids first, so the
    result depends only on the set of ids, the fractions and the seed)."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ValueError(f"fractions must be three non-negative numbers, got {list(fractions)}")
    ids = sorted(ids)
    n = len(ids)
    fr = np.asarray(fractions, dtype=float) / float(sum(fractions))
    n_val = round(n * fr[1])
    n_test = round(n * fr[2])
    if n >= 3:
        n_val = max(n_val, 1) if fr[1] > 0 else 0
        n_test = max(n_test, 1) if fr[2] > 0 else 0
    n_train = n - n_val - n_test
    perm = np.random.default_rng(seed).permutation(n)
    order = [ids[k] for k in perm]
    return {
        "train": sorted(order[:n_train]),
        "val": sorted(order[n_train : n_train + n_val]),
        "test": sorted(order[n_train + n_val :]),
    }


def _read_id_csv(path: Path, column: str = "atoms_id") -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or column not in reader.fieldnames:
            # DeepRelax-style csvs may have no header: first column holds the id
            fh.seek(0)
            rows = [r for r in csv.reader(fh) if r]
            if not rows:
                return []
            return [r[0].strip() for r in rows]
        return [row[column].strip() for row in reader if row.get(column)]


def _write_id_csv(path: Path, ids: Iterable[str]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["atoms_id"])
    for i in ids:
        w.writerow([i])
    atomic_write_text(path, buf.getvalue())


def load_or_make_splits(
    ids: Sequence[str],
    split_dir: PathLike,
    data_fingerprint: str,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    write_dir: PathLike | None = None,
) -> dict[str, list[str]]:
    """Read the split files in ``split_dir`` (then ``write_dir``) or make them in ``write_dir``.

    - ``split.json`` present with the same fingerprint, seed and fractions: the csvs are reused.
    - csvs present without ``split.json``: splits shipped with the data, used as they are (ids not
      in ``ids`` are an error).
    - otherwise (none, or a stale fingerprint): a new seeded split is written to ``write_dir``
      (default ``split_dir``), with a message.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``.
    """
    want = {"fingerprint": data_fingerprint, "seed": int(seed), "fractions": [float(f) for f in fractions]}
    target = Path(write_dir if write_dir is not None else split_dir)
    for folder in dict.fromkeys([Path(split_dir), target]):
        found = _existing_splits(ids, folder, want)
        if found is not None:
            return found
    _info(f"writing a seeded {list(fractions)} split (seed {seed}) to {target}")
    splits = make_splits(ids, fractions, seed)
    target.mkdir(parents=True, exist_ok=True)
    for s in SPLITS:
        _write_id_csv(target / f"{s}.csv", splits[s])
    atomic_save_json(target / "split.json", {**want, "counts": {s: len(v) for s, v in splits.items()}})
    return splits


def _existing_splits(ids: Sequence[str], split_dir: Path, want: dict[str, Any]) -> dict[str, list[str]] | None:
    """The splits in ``split_dir`` when they fit (see :func:`load_or_make_splits`), else ``None``."""
    files = {s: split_dir / f"{s}.csv" for s in SPLITS}
    meta_path = split_dir / "split.json"
    if meta_path.is_file():
        meta = load_json(meta_path)
        if all(meta.get(k) == v for k, v in want.items()) and all(f.is_file() for f in files.values()):
            return {s: _read_id_csv(f) for s, f in files.items()}
        _info(
            f"split files in {split_dir} were made for other data or settings "
            f"(fingerprint {meta.get('fingerprint')} seed {meta.get('seed')}, now {want['fingerprint']} "
            f"seed {want['seed']}); not using them"
        )
        return None
    if not any(f.is_file() for f in files.values()):
        return None
    known = set(ids)
    out = {s: _read_id_csv(f) if f.is_file() else [] for s, f in files.items()}
    for s, lst in out.items():
        missing = [i for i in lst if i not in known]
        if missing:
            raise ValueError(f"{files[s]}: ids not found in the data: {missing[:5]} ({len(missing)} in all)")
    return out


def split_cache_dir(root: Path) -> Path:
    """Where new split files of the data folder ``root`` are written: under :func:`default_cache_dir`,
    never inside the data (a command never writes into its input data)."""
    return default_cache_dir() / "splits" / f"{root.name}-{fingerprint(str(root.resolve()), length=10)}"


def writable_dir(root: Path, kind: str) -> Path:
    """``root`` if we may write there, else a folder under the cache named after ``root``.

    Read-only mode bits are honoured even for root (who could write anyway): data folders shipped
    read-only stay untouched.
    """
    if root.is_dir() and os.access(root, os.W_OK) and root.stat().st_mode & stat.S_IWUSR:
        return root
    return default_cache_dir() / kind / f"{root.name}-{fingerprint(str(root.resolve()), length=10)}"


_writable_dir = writable_dir  # older name, used by other systems


# --------------------------------------------------------------------------------------------
# trajectories
# --------------------------------------------------------------------------------------------


def _read_npz_frames(path: Path, energy_scale: float) -> list[dict[str, np.ndarray]]:
    R, z, E, F = _npz_arrays(path)
    frames = []
    for k in range(len(R)):
        fr = {"pos": R[k], "z": z}
        if E is not None:
            fr["energy"] = E[k] * energy_scale
        if F is not None:
            fr["forces"] = F[k] * energy_scale
        frames.append(fr)
    return frames


def _npz_arrays(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``R, z, E, F`` of an MD17-style npz, checked: plain numeric arrays (never pickles), shapes, finite."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in ("R", "z", "E", "F") if k in data.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise ValueError(
                f"{path}: holds Python objects (pickled arrays), which quintet never loads; "
                "save plain numeric arrays R, z, E, F (np.savez)"
            ) from None
        raise ValueError(f"{path}: not a readable npz file ({exc}); re-save it with np.savez") from None
    except Exception as exc:
        raise ValueError(f"{path}: not a readable npz file ({type(exc).__name__}: {exc}); re-save it with np.savez") from None
    missing = [k for k in ("R", "z") if k not in arrays]
    if missing:
        raise ValueError(f"{path}: MD17-style npz needs keys R and z (and E, F); missing {missing}")
    bad = [k for k, v in arrays.items() if not np.issubdtype(v.dtype, np.number)]
    if bad:
        raise ValueError(f"{path}: arrays {bad} are not numeric ({[str(arrays[k].dtype) for k in bad]})")
    R = arrays["R"].astype(float)
    z = arrays["z"].astype(np.int64).reshape(-1)
    if R.ndim == 2:
        R = R[None]
    if R.ndim != 3 or R.shape[1:] != (len(z), 3):
        raise ValueError(f"{path}: R has shape {R.shape}, expected (frames, {len(z)}, 3)")
    E = arrays["E"].astype(float).reshape(-1) if "E" in arrays else None
    F = arrays["F"].astype(float) if "F" in arrays else None
    if E is not None and E.shape != (len(R),):
        raise ValueError(f"{path}: E has {E.size} values for {len(R)} frames")
    if F is not None and F.shape != R.shape:
        raise ValueError(f"{path}: F has shape {F.shape}, expected {R.shape}")
    for name, arr in (("R", R), ("E", E), ("F", F)):
        if arr is not None and not np.all(np.isfinite(arr)):
            k = int(np.flatnonzero(~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1))[0])
            raise ValueError(f"{path} (frame {k}): non-finite (NaN/inf) {name}; fix or drop that frame")
    return R, z, E, F


def verify_trajectory(path: Path) -> None:
    """A trajectory written by ``quintet data md`` has its SHA-256 in ``<stem>.summary.json``: refuse the file
    (naming it) when its content no longer matches. Files without such a summary pass."""
    summary = path.with_name(path.stem + ".summary.json")
    if not summary.is_file():
        return
    want = load_json(summary).get("sha256")
    if want and file_sha256(path) != want:
        raise ValueError(
            f"{path}: content differs from the hash in {summary.name} (changed or damaged since it was "
            "generated); regenerate it, or remove the sha256 entry if the edit was intended"
        )


class TrajectoryDataset(Dataset):
    """Frames (positions, atomic numbers, cell, pbc, energy, forces[, stress]) as records.

    Args:
        paths: one file or several (extxyz, ASE db/json/traj, MD17-style npz).
        index: ASE frame index applied to each ASE-readable file.
        transform: applied to every record on access (e.g. ``lambda r: with_neighbors(r, 5.0)``).
        dtype: float dtype of the records (default ``torch.get_default_dtype()``).
        energy_scale: multiplies energies and forces (e.g. 0.0433641 for kcal/mol → eV).
        validate: check every frame (NaN, overlapping atoms, ...).
        split: keep only ``"train"``/``"val"``/``"test"`` frames of a seeded on-disk split.
        split_dir: where the split files live (default: read from ``<stem>_splits`` beside the first
            file when there, written under :func:`default_cache_dir`: never into the data).
        fractions: train/val/test fractions of a new split.
        seed: seed of a new split.

    Attributes:
        ids: ``"<file stem>:<frame>"`` for each kept frame.
    """

    def __init__(
        self,
        paths: PathLike | Sequence[PathLike],
        index: str = ":",
        transform: Transform | None = None,
        dtype: torch.dtype | None = None,
        energy_scale: float = 1.0,
        validate: bool = True,
        split: str | None = None,
        split_dir: PathLike | None = None,
        fractions: Sequence[float] = (0.8, 0.1, 0.1),
        seed: int = 0,
    ) -> None:
        plist = [Path(paths)] if isinstance(paths, str | os.PathLike) else [Path(p) for p in paths]
        if not plist:
            raise ValueError("TrajectoryDataset needs at least one file")
        self.transform = transform
        self.dtype = dtype or torch.get_default_dtype()
        records: list[Record] = []
        ids: list[str] = []
        for p in plist:
            if not p.is_file():
                raise FileNotFoundError(f"{p}: no such trajectory file")
            verify_trajectory(p)
            if p.suffix.lower() == ".npz":
                for k, fr in enumerate(_read_npz_frames(p, energy_scale)):
                    from ase import Atoms

                    atoms = Atoms(numbers=fr["z"], positions=fr["pos"])
                    if validate:
                        from quintet.atomistic.structures import check_atoms

                        check_atoms(atoms, f"{p} (frame {k})")
                    rec = from_ase(atoms, dtype=self.dtype, with_results=False)
                    if "energy" in fr:
                        rec[K.ENERGY] = torch.tensor(float(fr["energy"]), dtype=self.dtype)
                    if "forces" in fr:
                        rec[K.FORCES] = torch.as_tensor(fr["forces"], dtype=self.dtype)
                    records.append(rec)
                    ids.append(f"{p.stem}:{k}")
            else:
                for k, atoms in enumerate(read_structures(p, index=index, validate=validate)):
                    rec = from_ase(atoms, dtype=self.dtype)
                    if energy_scale != 1.0:
                        for key in (K.ENERGY, K.FORCES, K.STRESS):
                            if key in rec:
                                rec[key] = rec[key] * energy_scale
                    records.append(rec)
                    ids.append(f"{p.stem}:{k}")
        self.files = plist
        self.fingerprint = fingerprint("trajectory", ids, [p.stat().st_size for p in plist], energy_scale)
        if split is not None:
            if split not in SPLITS:
                raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
            sdir = Path(split_dir) if split_dir else plist[0].parent / f"{plist[0].stem}_splits"
            wdir = None if split_dir else split_cache_dir(sdir)
            keep = set(load_or_make_splits(ids, sdir, self.fingerprint, fractions, seed, wdir)[split])
            sel = [k for k, i in enumerate(ids) if i in keep]
            records = [records[k] for k in sel]
            ids = [ids[k] for k in sel]
        for k, rec in enumerate(records):
            rec[K.STRUCTURE_ID] = torch.tensor(k, dtype=torch.long)
        self.records = records
        self.ids = ids

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Record:
        rec = {k: v.clone() for k, v in self.records[i].items()}  # in-place transforms leave the data intact
        return self.transform(rec) if self.transform is not None else rec


# --------------------------------------------------------------------------------------------
# relaxation pairs
# --------------------------------------------------------------------------------------------


def read_pair(unrelaxed_path: PathLike, relaxed_path: PathLike | None) -> tuple[Any, Any | None]:
    """Read an unrelaxed/relaxed pair of files and check they describe the same atoms.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: a file is invalid, or the two differ in atom count or species order.
    """
    u = read_structure(unrelaxed_path)
    if relaxed_path is None:
        return u, None
    r = read_structure(relaxed_path)
    _check_same_atoms(u, r, str(relaxed_path), str(unrelaxed_path))
    return u, r


def _check_same_atoms(
    unrelaxed: Any, relaxed: Any, source: str, other: str = "its unrelaxed structure"
) -> None:
    """A pair must list the same atoms in the same order (else every target is another atom's).

    ``source`` names the relaxed structure (or the pair), ``other`` the unrelaxed one."""
    if len(relaxed) != len(unrelaxed):
        why = f"{len(relaxed)} atoms, but {other} has {len(unrelaxed)}"
    elif not np.array_equal(relaxed.numbers, unrelaxed.numbers):
        k = int(np.flatnonzero(relaxed.numbers != unrelaxed.numbers)[0])
        r_sym, u_sym = relaxed.get_chemical_symbols()[k], unrelaxed.get_chemical_symbols()[k]
        why = f"species differ from {other} (atom {k}: {r_sym} vs {u_sym})"
    else:
        return
    raise ValueError(f"{source}: {why}; a pair must list the same atoms in the same order")


#: an atom of a pair that moves farther than this (Å, after carrying the unrelaxed atoms into the relaxed
#: cell) means the two files do not list the atoms in corresponding order. Real relaxations move atoms far
#: less (largest seen in the shared bulk-oxide and 2D-defect sets: 1.4 Å); a swap of two neighbours moves
#: them by a bond length (2-3 Å). Override with ``pair_record(max_displacement=...)``.
MAX_PAIR_DISPLACEMENT = 2.0


def check_pair_order(
    unrelaxed: Any, relaxed: Any, source: str = "pair", max_displacement: float = MAX_PAIR_DISPLACEMENT
) -> None:
    """Raise ``ValueError`` naming ``source`` and the atom when a pair's atoms do not correspond: same
    count and species order (checked first), and no matched displacement above ``max_displacement`` Å."""
    _check_same_atoms(unrelaxed, relaxed, source)
    pbc = np.asarray(unrelaxed.pbc, dtype=bool)
    cell, rel_cell = np.asarray(unrelaxed.cell[:], dtype=float), np.asarray(relaxed.cell[:], dtype=float)
    pos = np.asarray(unrelaxed.positions, dtype=float)
    mapped = _frac(pos, cell, pbc) @ _frac_basis(rel_cell, pbc) if pbc.any() else pos
    rel = unwrap_to_nearest(mapped, np.asarray(relaxed.positions, dtype=float), rel_cell, pbc)
    d = np.linalg.norm(rel - mapped, axis=1)
    if not np.all(np.isfinite(d)):
        raise ValueError(f"{source}: non-finite (NaN/inf) positions or cell in the pair")
    k = int(np.argmax(d))
    if d[k] > max_displacement:
        sym = unrelaxed.get_chemical_symbols()[k]
        raise ValueError(
            f"{source}: atom {k} ({sym}) moves {d[k]:.2f} Å between the unrelaxed and relaxed structure "
            f"(more than {max_displacement} Å): the two files do not list the atoms in the same order; "
            "reorder the relaxed file to match the unrelaxed one"
        )


def pair_record(
    unrelaxed: Any,
    relaxed: Any | None,
    pristine: Any | None = None,
    defect_tol: float = 0.1,
    dtype: torch.dtype | None = None,
    source: str = "pair",
    max_displacement: float = MAX_PAIR_DISPLACEMENT,
) -> Record:
    """Build the record of one relaxation pair.

    Keys: ``POSITIONS`` / ``CELL`` / ``PBC`` of the unrelaxed structure, ``ATOMIC_NUMBERS``,
    ``RELAXED_POSITIONS`` (unwrapped to the image nearest each unrelaxed atom) and ``RELAXED_CELL``
    when ``relaxed`` is given, and ``DEFECT`` when ``pristine`` is given (vacancy placeholders
    appended with the pristine element, the same position in both structures, label 2).

    Raises:
        ValueError: the pair's atoms do not correspond (:func:`check_pair_order`, bound ``max_displacement`` Å).
    """
    dtype = dtype or torch.get_default_dtype()
    pos = np.asarray(unrelaxed.positions, dtype=float)
    z = np.asarray(unrelaxed.numbers, dtype=np.int64)
    cell = np.asarray(unrelaxed.cell[:], dtype=float)
    pbc = np.asarray(unrelaxed.pbc, dtype=bool)
    rel_pos = rel_cell = None
    if relaxed is not None:
        check_pair_order(unrelaxed, relaxed, source, max_displacement)
        rel_cell = np.asarray(relaxed.cell[:], dtype=float)
        rel_pos = unwrap_to_nearest(
            pos, np.asarray(relaxed.positions, dtype=float), rel_cell, pbc, ref_cell=cell
        )
    defect = None
    if pristine is not None:
        from quintet.atomistic.defects import label_atoms

        lab = label_atoms(unrelaxed, pristine, tol=defect_tol, name=source)
        n = lab.num_atoms
        defect = lab.labels
        pos = np.concatenate([pos, lab.positions[n:]])
        z = lab.numbers.astype(np.int64)
        if rel_pos is not None:
            vac_rel = lab.positions[n:]
            if rel_cell is not None and not np.allclose(rel_cell, cell):
                vac_rel = vac_rel @ np.linalg.solve(_frac_basis(cell, pbc), _frac_basis(rel_cell, pbc))
            rel_pos = np.concatenate([rel_pos, vac_rel])
    rec: Record = {
        K.POSITIONS: torch.as_tensor(pos, dtype=dtype),
        K.ATOMIC_NUMBERS: torch.as_tensor(z, dtype=torch.long),
        K.CELL: torch.as_tensor(cell, dtype=dtype),
        K.PBC: torch.as_tensor(pbc),
    }
    if rel_pos is not None:
        rec[K.RELAXED_POSITIONS] = torch.as_tensor(rel_pos, dtype=dtype)
        rec[K.RELAXED_CELL] = torch.as_tensor(rel_cell, dtype=dtype)
    if defect is not None:
        rec[K.DEFECT] = torch.as_tensor(defect, dtype=torch.long)
    return rec


@dataclass
class _Source:
    """Where one pair lives."""

    id: str
    unrelaxed: Path
    relaxed: Path | None
    group: str  # host folder (2DMD) or root


class RelaxPairDataset(Dataset):
    """Unrelaxed → relaxed structure pairs as records, for DeepRelax and DefiNet.

    Layouts:
        ``"custom"`` (DeepRelax): ``root/CIF/<id>_unrelaxed.cif``, ``root/CIF/<id>_relaxed.cif``,
        ids from ``root/{train,val,test}.csv`` or ``root/meta.csv`` (column ``atoms_id``) or the CIF folder.

        ``"2dmd"`` (DefiNet): ``root`` is a host folder with ``CIF/`` pairs, ``meta.csv`` and
        ``<host>_pristine_supercell.cif`` (or ``<host>.cif``, a unit cell repeated to the supercell),
        or a folder of such host folders (each split separately, then combined). Records carry
        ``DEFECT`` labels with vacancy placeholders.

    Args:
        root: the data folder.
        layout: ``"custom"`` or ``"2dmd"``.
        split: ``None`` (all pairs) or ``"train"``/``"val"``/``"test"``.
        transform: applied to every record on access.
        split_dir: where split files are read/written (default: read from the data folder when it
            holds them, written under :func:`default_cache_dir`: never into the data). For several
            2DMD hosts, one sub-folder per host.
        fractions: train/val/test fractions of a new split.
        seed: seed of a new split.
        defects: label defects (default: ``True`` for ``"2dmd"``).
        defect_tol: largest atom–site distance when labelling defects, Å.
        require_relaxed: a missing relaxed file is an error (else the record lacks relaxed keys,
            e.g. for prediction inputs).
        dtype: float dtype of the records.
        cache_dir: also keep the parsed pairs in ``<cache_dir>/pairs-<fingerprint>.pt`` (parsed once,
            reloaded by later runs while the data are unchanged). Parsed pairs are always cached in memory.
        preload: parse every pair now (with a progress bar) instead of on first access.
        ids: restrict to these ids (after splitting).

    Attributes:
        ids: the pair ids in order. ``groups``: host (or root) name of each pair. ``meta``: rows of
        ``meta.csv`` by id (strings), when present. ``fingerprint``: the data fingerprint.
    """

    def __init__(
        self,
        root: PathLike,
        layout: Literal["custom", "2dmd"] = "custom",
        split: str | None = None,
        transform: Transform | None = None,
        split_dir: PathLike | None = None,
        fractions: Sequence[float] = (0.8, 0.1, 0.1),
        seed: int = 0,
        defects: bool | None = None,
        defect_tol: float = 0.1,
        require_relaxed: bool = True,
        dtype: torch.dtype | None = None,
        cache_dir: PathLike | None = None,
        preload: bool = False,
        ids: Sequence[str] | None = None,
    ) -> None:
        root = Path(root)
        if root.is_file():
            raise ValueError(
                f"{root}: a file, but the data must be a folder of relaxation pairs (CIF/<id>_unrelaxed.cif, "
                "CIF/<id>_relaxed.cif); pass its folder to --data (key data.root)"
            )
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such data folder")
        if layout not in ("custom", "2dmd"):
            raise ValueError(f"layout must be 'custom' or '2dmd', got {layout!r}")
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
        self.root = root
        self.layout = layout
        self.transform = transform
        self.dtype = dtype or torch.get_default_dtype()
        self.defects = (layout == "2dmd") if defects is None else bool(defects)
        self.defect_tol = float(defect_tol)
        self.require_relaxed = require_relaxed
        sources, fps = self._collect(root, layout, split, split_dir, fractions, seed)
        if ids is not None:
            want = list(ids)
            by_id = {s.id: s for s in sources}
            unknown = [i for i in want if i not in by_id]
            if unknown:
                raise ValueError(f"{root}: unknown pair ids {unknown[:5]}")
            sources = [by_id[i] for i in want]
        if not sources:
            raise ValueError(f"{root}: no relaxation pairs found (layout {layout!r}, split {split!r})")
        self._sources = sources
        self.ids = [s.id for s in sources]
        self.groups = [s.group for s in sources]
        self.fingerprint = fingerprint(fps, self.defects, self.defect_tol, str(self.dtype), _CACHE_VERSION)
        self._cache: dict[str, dict[str, np.ndarray]] = {}
        self._pristine: dict[str, Any] = {}
        self._cache_file = (
            Path(cache_dir) / f"pairs-{fingerprint(self.fingerprint, self.ids)}.pt" if cache_dir else None
        )
        if self._cache_file is not None and self._cache_file.is_file():
            loaded = torch.load(self._cache_file, weights_only=True)
            self._cache = {i: {k: v for k, v in d.items()} for i, d in loaded.items()}
        elif preload or self._cache_file is not None:
            self.preload()

    def _collect(
        self, root: Path, layout: str, split: str | None, split_dir: PathLike | None,
        fractions: Sequence[float], seed: int,
    ) -> tuple[list[_Source], list[str]]:  # fmt: skip
        """The pairs of every group folder (restricted to ``split``), their meta rows and pristine hosts,
        and each group's data fingerprint."""
        groups = self._group_dirs(root, layout)
        sources: list[_Source] = []
        self.meta: dict[str, dict[str, str]] = {}
        self._pristine_paths: dict[str, Path] = {}
        fps = []
        for gname, gdir in groups:
            verify_dataset(gdir)  # a generated folder: every file as it was written
            gsources = self._scan(gdir, gname)
            self.meta.update(_read_meta(gdir / "meta.csv"))
            if self.defects:
                self._pristine_paths[gname] = self._find_pristine(gdir, gname)
            sizes = [(s.id, s.unrelaxed.stat().st_size, s.relaxed.stat().st_size if s.relaxed else 0) for s in gsources]
            gfp = fingerprint(layout, sizes)
            fps.append(gfp)
            if split is not None:
                if split_dir is None:
                    sdir, wdir = gdir, split_cache_dir(gdir)
                else:
                    sdir, wdir = (Path(split_dir) / gname if len(groups) > 1 else Path(split_dir)), None
                keep = set(load_or_make_splits([s.id for s in gsources], sdir, gfp, fractions, seed, wdir)[split])
                gsources = [s for s in gsources if s.id in keep]
            sources.extend(gsources)
        return sources, fps

    # -- discovery ----------------------------------------------------------------------------

    @staticmethod
    def _group_dirs(root: Path, layout: str) -> list[tuple[str, Path]]:
        if (root / "CIF").is_dir():
            return [(root.name, root)]
        if layout == "2dmd":
            subs = sorted(d for d in root.iterdir() if d.is_dir() and (d / "CIF").is_dir())
            if subs:
                return [(d.name, d) for d in subs]
        raise FileNotFoundError(
            f"{root}: no CIF/ folder (expected the {layout} layout: CIF/<id>_unrelaxed.cif)"
        )

    def _scan(self, gdir: Path, gname: str) -> list[_Source]:
        cif = gdir / "CIF"
        ids: list[str] | None = None
        shipped = [gdir / f"{s}.csv" for s in SPLITS if (gdir / f"{s}.csv").is_file()]
        if (gdir / "meta.csv").is_file():
            ids = _read_id_csv(gdir / "meta.csv")
        elif shipped:
            ids = [i for f in shipped for i in _read_id_csv(f)]
        else:
            ids = sorted(p.name[: -len("_unrelaxed.cif")] for p in cif.glob("*_unrelaxed.cif"))
        ids = [i[: -len("_relaxed")] if i.endswith("_relaxed") else i for i in ids]
        out = []
        for i in dict.fromkeys(ids):
            u = cif / f"{i}_unrelaxed.cif"
            r = cif / f"{i}_relaxed.cif"
            if not u.is_file():
                raise FileNotFoundError(f"{u}: listed in {gdir} but missing")
            if not r.is_file():
                if self.require_relaxed:
                    raise FileNotFoundError(f"{r}: relaxed partner of {u} is missing")
                r = None
            out.append(_Source(i, u, r, gname))
        return out

    @staticmethod
    def _find_pristine(gdir: Path, gname: str) -> Path:
        for cand in (
            gdir / f"{gname}_pristine_supercell.cif",
            gdir / f"{gname}.cif",
            gdir.parent / f"{gname}.cif",
        ):
            if cand.is_file():
                return cand
        raise FileNotFoundError(
            f"{gdir}: no pristine reference ({gname}_pristine_supercell.cif or {gname}.cif) to label defects against"
        )

    # -- parsing and caching ------------------------------------------------------------------

    def _pristine_for(self, group: str, cell: np.ndarray) -> Any:
        key = group
        if key not in self._pristine:
            path = self._pristine_paths[group]
            atoms = read_structure(path)
            if not np.allclose(atoms.cell[:], cell, atol=1e-2):
                atoms = pristine_supercell(atoms, cell, source=str(path))
            self._pristine[key] = atoms
        return self._pristine[key]

    def _parse(self, k: int) -> dict[str, np.ndarray]:
        s = self._sources[k]
        u, r = read_pair(s.unrelaxed, s.relaxed)
        pristine = self._pristine_for(s.group, u.cell[:]) if self.defects else None
        rec = pair_record(u, r, pristine, self.defect_tol, dtype=torch.float64, source=str(s.unrelaxed))
        return {key: v.numpy() if isinstance(v, torch.Tensor) else v for key, v in rec.items()}

    def parsed(self, k: int) -> dict[str, np.ndarray]:
        """The parsed arrays of pair ``k`` (cached)."""
        i = self.ids[k]
        if i not in self._cache:
            self._cache[i] = self._parse(k)
        return self._cache[i]

    def preload(self) -> None:
        """Parse every pair once (progress bar) and, with ``cache_dir``, save them for later runs."""
        from tqdm.auto import tqdm

        todo = [k for k, i in enumerate(self.ids) if i not in self._cache]
        for k in tqdm(todo, desc=f"parsing {self.root.name}", unit="pair", disable=len(todo) < 50):
            self.parsed(k)
        if self._cache_file is not None and todo:
            atomic_torch_save(
                self._cache_file,
                {i: {key: torch.as_tensor(v) for key, v in d.items()} for i, d in self._cache.items()},
            )

    def atoms(self, k: int) -> tuple[Any, Any | None]:
        """The ASE (unrelaxed, relaxed) structures of pair ``k`` as read from disk."""
        s = self._sources[k]
        return read_pair(s.unrelaxed, s.relaxed)

    def __len__(self) -> int:
        return len(self._sources)

    def __getitem__(self, k: int) -> Record:
        arrays = self.parsed(k)
        rec: Record = {}
        for key, v in arrays.items():
            t = torch.as_tensor(np.asarray(v)) if not isinstance(v, torch.Tensor) else v
            rec[key] = t.to(self.dtype, copy=True) if t.is_floating_point() else t.clone()
        rec[K.STRUCTURE_ID] = torch.tensor(k, dtype=torch.long)
        return self.transform(rec) if self.transform is not None else rec


def _read_meta(path: Path) -> dict[str, dict[str, str]]:
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "atoms_id" not in reader.fieldnames:
            raise ValueError(f"{path}: meta.csv needs an 'atoms_id' column (found {reader.fieldnames})")
        return {row["atoms_id"]: dict(row) for row in reader}


def training_domain(dataset: Any) -> dict[str, list[Any]]:
    """A training set's domain of applicability, stored as a model file's ``extra["domain"]``: its
    elements (symbols, sorted) and, when records carry ``DEFECT`` labels, the labels seen."""
    from ase.data import chemical_symbols

    zs: set[int] = set()
    labels: set[int] = set()
    for rec in _raw_records(dataset):
        zs.update(int(z) for z in np.unique(np.asarray(rec[K.ATOMIC_NUMBERS])))
        if K.DEFECT in rec:
            labels.update(int(v) for v in np.unique(np.asarray(rec[K.DEFECT])))
    domain: dict[str, list[Any]] = {"elements": [chemical_symbols[z] for z in sorted(zs)]}
    if labels:
        domain["defect_labels"] = sorted(labels)
    return domain


def _raw_records(ds: Any) -> Iterator[Mapping[str, Any]]:
    """The records of a dataset without its transform (parsed arrays when the dataset keeps them)."""
    from torch.utils.data import ConcatDataset, Subset

    if isinstance(ds, ConcatDataset):
        for part in ds.datasets:
            yield from _raw_records(part)
    elif isinstance(ds, Subset):
        base = ds.dataset
        yield from (base.parsed(i) if hasattr(base, "parsed") else base[i] for i in ds.indices)
    elif hasattr(ds, "parsed"):
        yield from (ds.parsed(k) for k in range(len(ds)))
    elif isinstance(getattr(ds, "records", None), list):
        yield from ds.records
    else:
        yield from (ds[k] for k in range(len(ds)))


def records_summary(records: Iterable[Mapping[str, torch.Tensor]]) -> dict[str, Any]:
    """Counts for ``quintet data info``: structures, atoms per structure, elements, energy range."""
    n = 0
    sizes = []
    elements: set[int] = set()
    energies = []
    for r in records:
        n += 1
        sizes.append(len(r[K.ATOMIC_NUMBERS]))
        elements.update(int(z) for z in torch.unique(r[K.ATOMIC_NUMBERS]))
        if K.ENERGY in r:
            energies.append(float(r[K.ENERGY]))
    out: dict[str, Any] = {"structures": n}
    if sizes:
        out.update(atoms_min=min(sizes), atoms_max=max(sizes), atoms_mean=float(np.mean(sizes)))
    from ase.data import chemical_symbols

    out["elements"] = [chemical_symbols[z] for z in sorted(elements)]
    if energies:
        out.update(energy_min=min(energies), energy_max=max(energies), energy_mean=float(np.mean(energies)))
    return out


def dataset_meta(ds: Any) -> dict[str, dict[str, str]]:
    """The ``meta.csv`` rows (by pair id) behind a RelaxPairDataset, a Subset or a ConcatDataset of those."""
    from torch.utils.data import ConcatDataset, Subset

    if isinstance(ds, ConcatDataset):
        return {k: v for d in ds.datasets for k, v in dataset_meta(d).items()}
    if isinstance(ds, Subset):
        return dataset_meta(ds.dataset)
    return dict(getattr(ds, "meta", {}))


def dataset_ids(ds: Any) -> list[str]:
    """Pair ids of a RelaxPairDataset, a Subset of one, or a ConcatDataset of those (``[]`` for a
    dataset without ids, e.g. pairs from an ASE db)."""
    from torch.utils.data import ConcatDataset, Subset

    if isinstance(ds, ConcatDataset):
        return [i for d in ds.datasets for i in dataset_ids(d)]
    if isinstance(ds, Subset):
        inner = dataset_ids(ds.dataset)
        return [inner[i] for i in ds.indices] if inner else []
    return list(getattr(ds, "ids", []))
