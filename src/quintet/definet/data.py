"""Build DefiNet records from ASE structures: defect labels, vacancy placeholders, relaxed targets.

A DefiNet record is an atomistic record (:mod:`quintet.atomistic.keys`) whose nodes are the real
atoms followed by one placeholder node per vacancy, with ``DEFECT`` labels 0/1/2. For training
pairs ``RELAXED_POSITIONS`` holds the relaxed positions unwrapped to the periodic image nearest
each unrelaxed atom (placeholders keep their site, and are ignored by the loss).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from quintet.atomistic import keys as K
from quintet.atomistic.defects import DefectLabels, label_defects, pristine_supercell

__all__ = ["defect_record", "load_host", "strip_placeholders", "unwrap_to_reference"]


def unwrap_to_reference(
    positions: np.ndarray, reference: np.ndarray, cell: np.ndarray, pbc: np.ndarray
) -> np.ndarray:
    """Move each position to its periodic image nearest the matching reference position (same cell).

    A thin alias of :func:`quintet.atomistic.datasets.unwrap_to_nearest` with DefiNet's argument order.
    """
    from quintet.atomistic.datasets import unwrap_to_nearest

    return unwrap_to_nearest(reference, positions, cell, pbc)


def defect_record(
    atoms,
    pristine,
    relaxed=None,
    tol: float = 0.3,
    name: str = "structure",
    dtype: torch.dtype = torch.float32,
) -> tuple[dict[str, Tensor], DefectLabels]:
    """Label a defect structure against its pristine supercell and make a DefiNet record.

    Args:
        atoms: the unrelaxed defect supercell (``ase.Atoms``).
        pristine: the pristine supercell (``ase.Atoms``) with the same cell.
        relaxed: optional relaxed structure with the same atoms in the same order (training pairs).
        tol: site-matching tolerance, Å.
        name: used in error messages.
        dtype: float dtype of the record.

    Returns:
        The record and the labels (which map nodes back to atoms and pristine sites).

    Raises:
        ValueError: see :func:`quintet.atomistic.defects.label_defects`; a relaxed structure whose
            atoms differ from the unrelaxed one.
    """
    lab = label_defects(
        atoms.numbers,
        atoms.positions,
        np.asarray(atoms.cell),
        atoms.pbc,
        pristine.numbers,
        pristine.positions,
        np.asarray(pristine.cell),
        tol=tol,
        name=name,
    )
    cell = np.asarray(atoms.cell, dtype=float)
    rec: dict[str, Tensor] = {
        K.POSITIONS: torch.as_tensor(lab.positions, dtype=dtype),
        K.ATOMIC_NUMBERS: torch.as_tensor(lab.numbers, dtype=torch.long),
        K.DEFECT: torch.as_tensor(lab.labels, dtype=torch.long),
        K.CELL: torch.as_tensor(cell, dtype=dtype),
        K.PBC: torch.as_tensor(np.asarray(atoms.pbc, dtype=bool)),
    }
    if relaxed is not None:
        if len(relaxed) != len(atoms) or not np.array_equal(relaxed.numbers, atoms.numbers):
            raise ValueError(
                f"{name}: the relaxed structure has {len(relaxed)} atoms "
                f"({relaxed.get_chemical_formula()}), the unrelaxed one {len(atoms)} "
                f"({atoms.get_chemical_formula()}); they must list the same atoms in the same order"
            )
        rel = unwrap_to_reference(relaxed.positions, atoms.positions, cell, atoms.pbc)
        rel = np.concatenate([rel, lab.positions[lab.num_atoms :]], axis=0)
        rec[K.RELAXED_POSITIONS] = torch.as_tensor(rel, dtype=dtype)
    return rec, lab


def strip_placeholders(positions: Tensor | np.ndarray, defect: Tensor | np.ndarray) -> np.ndarray:
    """The rows of ``positions`` that belong to real atoms (vacancy placeholders removed)."""
    p = positions.detach().cpu().numpy() if isinstance(positions, Tensor) else np.asarray(positions)
    d = defect.detach().cpu().numpy() if isinstance(defect, Tensor) else np.asarray(defect)
    return p[d != 2]


def load_host(pristine: str | Path | None = None, unit_cell: str | Path | None = None, supercell=None):
    """The pristine supercell, either read from a file or built from a unit cell and a size.

    Args:
        pristine: a pristine supercell file (CIF/POSCAR/extxyz).
        unit_cell: a pristine unit-cell file (used with ``supercell``).
        supercell: ``(n1, n2, n3)`` repetitions of the unit cell.

    Raises:
        ValueError: neither or both ways given; FileNotFoundError: a missing file.
    """
    from ase.io import read

    if (pristine is None) == (unit_cell is None):
        raise ValueError("give either the pristine supercell file or a unit cell plus a supercell size")
    path = Path(pristine if pristine is not None else unit_cell)
    if not path.is_file():
        raise FileNotFoundError(f"pristine host file {path} does not exist")
    try:
        host = read(str(path))
    except Exception as exc:  # ase raises many types for malformed files
        raise ValueError(f"{path}: cannot read the pristine host ({exc})") from exc
    if unit_cell is not None:
        if supercell is None:
            raise ValueError("a unit cell needs a supercell size, e.g. 5,5,1")
        host = pristine_supercell(host, supercell)
    return host
