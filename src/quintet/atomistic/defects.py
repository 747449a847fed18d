"""Defect labelling: match a defect supercell to its pristine host under periodic boundaries.

DefiNet needs, for every node, a label ``0`` (pristine site, same element), ``1`` (substitution:
the site holds another element) or ``2`` (vacancy placeholder: a pristine site with no atom,
appended to the structure as a node carrying the missing element). The reference code matched
sites by rounding fractional coordinates, which only works when the defect structure sits exactly
on the lattice; here every atom is matched to the nearest pristine site by its minimum-image
Cartesian distance, within a tolerance (default 0.3 Å). Interstitials and adatoms (no site within
the tolerance), two atoms on one site, and hosts whose cell differs are rejected with errors that
name the atoms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "PRISTINE",
    "SUBSTITUTION",
    "VACANCY",
    "DefectLabels",
    "label_atoms",
    "label_defects",
    "load_host",
    "minimum_image_distances",
    "repeat_unit_cell",
]

PRISTINE = 0
SUBSTITUTION = 1
VACANCY = 2


@dataclass(frozen=True)
class DefectLabels:
    """Result of :func:`label_defects`.

    Attributes:
        labels: ``(N + V,)`` int64, one per atom of the defect structure followed by one per vacancy.
        numbers: ``(N + V,)`` atomic numbers; the vacancy placeholders carry the missing element.
        positions: ``(N + V, 3)`` Cartesian positions, Å; placeholders sit on their pristine site
            (the image nearest the defect structure's origin convention: the pristine coordinates).
        site_of_atom: ``(N,)`` index of the pristine site each atom was matched to.
        vacancy_sites: ``(V,)`` indices of the pristine sites left empty.
        match_distance: ``(N,)`` distance from each atom to its site, Å.
    """

    labels: np.ndarray
    numbers: np.ndarray
    positions: np.ndarray
    site_of_atom: np.ndarray
    vacancy_sites: np.ndarray
    match_distance: np.ndarray

    @property
    def num_atoms(self) -> int:
        """Number of real atoms (without placeholders)."""
        return int(self.site_of_atom.shape[0])

    @property
    def num_vacancies(self) -> int:
        """Number of vacancy placeholders appended."""
        return int(self.vacancy_sites.shape[0])

    def summary(self) -> str:
        """Short human-readable description, e.g. ``"1 substitution, 2 vacancies"``."""
        n_sub = int((self.labels == SUBSTITUTION).sum())
        return f"{n_sub} substitution(s), {self.num_vacancies} vacancy(ies)"


def _image_shifts(pbc: np.ndarray) -> np.ndarray:
    rng = [(-1, 0, 1) if p else (0,) for p in pbc]
    return np.array([(a, b, c) for a in rng[0] for b in rng[1] for c in rng[2]], dtype=float)


def minimum_image_distances(
    a: np.ndarray, b: np.ndarray, cell: np.ndarray, pbc: np.ndarray, chunk: int = 256
) -> np.ndarray:
    """Minimum-image distances between two sets of points in one cell.

    The fractional difference is wrapped into [-0.5, 0.5) along periodic axes and the 27 (or fewer)
    neighbouring images are searched, which is exact for any reasonably shaped cell.

    Args:
        a: ``(Na, 3)`` Cartesian positions, Å.
        b: ``(Nb, 3)`` Cartesian positions, Å.
        cell: ``(3, 3)`` lattice vectors as rows, Å (ignored on non-periodic axes).
        pbc: ``(3,)`` periodic flags.
        chunk: rows of ``a`` processed at once (memory bound).

    Returns:
        ``(Na, Nb)`` distances, Å.
    """
    a = np.asarray(a, dtype=float).reshape(-1, 3)
    b = np.asarray(b, dtype=float).reshape(-1, 3)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    cell = np.asarray(cell, dtype=float).reshape(3, 3)
    if not pbc.any():
        return np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)
    # non-periodic axes are never wrapped; a zero lattice row there is replaced by a basis vector
    work = cell.copy()
    for k in range(3):
        if np.linalg.norm(work[k]) < 1e-12:
            if pbc[k]:
                raise ValueError(f"periodic axis {k} has a zero lattice vector")
            best_det, best_e = -1.0, np.eye(3)[k]
            for e in np.eye(3):
                trial = work.copy()
                trial[k] = e
                rows = [
                    trial[j] if (np.linalg.norm(trial[j]) > 1e-12 or j == k) else np.eye(3)[j]
                    for j in range(3)
                ]
                det = abs(np.linalg.det(np.array(rows)))
                if det > best_det:
                    best_det, best_e = det, e
            work[k] = best_e
    if abs(np.linalg.det(work)) < 1e-9:
        raise ValueError("singular cell: cannot compute periodic distances")
    inv = np.linalg.inv(work)
    shifts = _image_shifts(pbc) @ work  # (S, 3)
    out = np.empty((a.shape[0], b.shape[0]))
    per = pbc.astype(float)
    for s in range(0, a.shape[0], chunk):
        d = b[None, :, :] - a[s : s + chunk, None, :]  # (c, Nb, 3)
        f = d @ inv
        f = f - per * np.round(f)
        d = f @ work
        dist = np.linalg.norm(d[:, :, None, :] + shifts[None, None, :, :], axis=-1).min(axis=-1)
        out[s : s + chunk] = dist
    return out


def repeat_unit_cell(unit_cell, size: Sequence[int]):
    """Repeat a pristine unit cell (``ase.Atoms``) ``size = (n1, n2, n3)`` times.

    Raises:
        ValueError: a size entry is not a positive integer.
    """
    size = tuple(int(n) for n in size)
    if len(size) != 3 or any(n < 1 for n in size):
        raise ValueError(f"supercell size must be three positive integers, got {size}")
    return unit_cell.repeat(size)


def _describe(i: int, symbol: str, pos: np.ndarray) -> str:
    return f"atom {i} ({symbol} at {pos[0]:.3f}, {pos[1]:.3f}, {pos[2]:.3f} Å)"


def label_defects(
    numbers: np.ndarray,
    positions: np.ndarray,
    cell: np.ndarray,
    pbc: np.ndarray,
    pristine_numbers: np.ndarray,
    pristine_positions: np.ndarray,
    pristine_cell: np.ndarray,
    tol: float = 0.3,
    cell_tol: float = 0.05,
    name: str = "structure",
) -> DefectLabels:
    """Label each atom of a defect supercell against its pristine host; append vacancy placeholders.

    Args:
        numbers: ``(N,)`` atomic numbers of the defect structure.
        positions: ``(N, 3)`` Cartesian positions, Å.
        cell: ``(3, 3)`` lattice vectors (rows), Å.
        pbc: ``(3,)`` periodic flags.
        pristine_numbers: ``(M,)`` atomic numbers of the pristine supercell.
        pristine_positions: ``(M, 3)`` Cartesian positions, Å.
        pristine_cell: ``(3, 3)`` pristine lattice vectors, Å; must equal ``cell`` within ``cell_tol``.
        tol: largest distance (Å) between an atom and the pristine site it occupies.
        cell_tol: largest absolute difference (Å) between the two cells' entries.
        name: used in error messages (e.g. the file name).

    Returns:
        The labels, with vacancy placeholders appended after the real atoms.

    Raises:
        ValueError: empty input, mismatched cells, an interstitial/adatom (no site within ``tol``),
            two atoms on one site, or a host whose sites are mostly unmatched.
    """
    numbers = np.asarray(numbers, dtype=np.int64).reshape(-1)
    positions = np.asarray(positions, dtype=float).reshape(-1, 3)
    pnum = np.asarray(pristine_numbers, dtype=np.int64).reshape(-1)
    ppos = np.asarray(pristine_positions, dtype=float).reshape(-1, 3)
    cell = np.asarray(cell, dtype=float).reshape(3, 3)
    _check_label_inputs(numbers, positions, pnum, cell, np.asarray(pristine_cell, dtype=float).reshape(3, 3),
                        tol, cell_tol, name)  # fmt: skip
    dist = minimum_image_distances(positions, ppos, cell, np.asarray(pbc, dtype=bool).reshape(3))
    site = dist.argmin(axis=1)
    best = dist[np.arange(len(site)), site]
    _check_unmatched(numbers, positions, best, tol, name)
    counts = np.bincount(site, minlength=pnum.size)
    _check_occupancy(numbers, positions, pnum, site, counts, tol, name)
    vac = np.flatnonzero(counts == 0)
    labels = np.where(pnum[site] == numbers, PRISTINE, SUBSTITUTION).astype(np.int64)
    return DefectLabels(
        labels=np.concatenate([labels, np.full(vac.size, VACANCY, dtype=np.int64)]),
        numbers=np.concatenate([numbers, pnum[vac]]),
        positions=np.concatenate([positions, ppos[vac]], axis=0),
        site_of_atom=site.astype(np.int64),
        vacancy_sites=vac.astype(np.int64),
        match_distance=best,
    )


def _check_label_inputs(
    numbers: np.ndarray, positions: np.ndarray, pnum: np.ndarray, cell: np.ndarray, pcell: np.ndarray,
    tol: float, cell_tol: float, name: str,
) -> None:  # fmt: skip
    if tol <= 0:
        raise ValueError(f"tolerance must be positive, got {tol}")
    if numbers.size == 0:
        raise ValueError(f"{name}: the defect structure has no atoms")
    if pnum.size == 0:
        raise ValueError(f"{name}: the pristine host has no atoms")
    if numbers.shape[0] != positions.shape[0]:
        raise ValueError(f"{name}: {numbers.shape[0]} atomic numbers but {positions.shape[0]} positions")
    diff = np.abs(cell - pcell).max()
    if diff > cell_tol:
        raise ValueError(
            f"{name}: the cell does not match the pristine host (largest difference {diff:.3f} Å > "
            f"{cell_tol} Å); defect cell rows {np.round(cell, 3).tolist()}, pristine "
            f"{np.round(pcell, 3).tolist()}. Is the supercell size right?"
        )


def _check_unmatched(numbers: np.ndarray, positions: np.ndarray, best: np.ndarray, tol: float, name: str) -> None:
    """Atoms with no pristine site within ``tol``: interstitials/adatoms, or the wrong host."""
    from ase.data import chemical_symbols

    far = np.flatnonzero(best > tol)
    if not far.size:
        return
    listed = "; ".join(
        f"{_describe(int(i), chemical_symbols[numbers[i]], positions[i])}: nearest site {best[i]:.3f} Å away"
        for i in far[:5]
    )
    more = f" and {far.size - 5} more" if far.size > 5 else ""
    if far.size > 0.5 * numbers.size:
        raise ValueError(
            f"{name}: {far.size} of {numbers.size} atoms match no pristine site within {tol} Å — the "
            f"host does not match this structure ({listed}{more})"
        )
    raise ValueError(f"{name}: interstitials/adatoms are not supported: {listed}{more} (tolerance {tol} Å)")


def _check_occupancy(
    numbers: np.ndarray, positions: np.ndarray, pnum: np.ndarray, site: np.ndarray, counts: np.ndarray,
    tol: float, name: str,
) -> None:  # fmt: skip
    """No site holds two atoms, and most sites are occupied (else the host is the wrong one)."""
    from ase.data import chemical_symbols

    doubled = np.flatnonzero(counts > 1)
    if doubled.size:
        s = int(doubled[0])
        who = ", ".join(_describe(int(i), chemical_symbols[numbers[i]], positions[i]) for i in np.flatnonzero(site == s))
        raise ValueError(
            f"{name}: {who} all sit on pristine site {s} ({chemical_symbols[pnum[s]]}); "
            f"{doubled.size} site(s) are doubly occupied (interstitial or tolerance {tol} Å too large)"
        )
    vac = int((counts == 0).sum())
    if vac > 0.5 * pnum.size:
        raise ValueError(
            f"{name}: {vac} of {pnum.size} pristine sites are empty — the host does not match this structure"
        )


def label_atoms(unrelaxed: Any, pristine: Any, tol: float = 0.3, name: str = "structure") -> DefectLabels:
    """:func:`label_defects` for two ASE ``Atoms`` (the defect structure and its pristine supercell)."""
    return label_defects(
        np.asarray(unrelaxed.numbers),
        np.asarray(unrelaxed.positions, dtype=float),
        np.asarray(unrelaxed.cell[:], dtype=float),
        np.asarray(unrelaxed.pbc, dtype=bool),
        np.asarray(pristine.numbers),
        np.asarray(pristine.positions, dtype=float),
        np.asarray(pristine.cell[:], dtype=float),
        tol=tol,
        name=name,
    )


def load_host(pristine: Any = None, unit_cell: Any = None, supercell: Sequence[int] | None = None) -> Any:
    """The pristine supercell, either read from a file or built from a unit-cell file and a size.

    Args:
        pristine: a pristine supercell file (CIF/POSCAR/extxyz).
        unit_cell: a pristine unit-cell file (used with ``supercell``).
        supercell: ``(n1, n2, n3)`` repetitions of the unit cell.

    Raises:
        ValueError: neither or both ways given, an unreadable file; FileNotFoundError: a missing file.
    """
    from pathlib import Path

    from quintet.atomistic.structures import read_structure

    if (pristine is None) == (unit_cell is None):
        raise ValueError("give either the pristine supercell file (--pristine) or --unit-cell plus --supercell")
    path = Path(pristine if pristine is not None else unit_cell)
    if not path.is_file():
        raise FileNotFoundError(f"pristine host file {path} does not exist")
    host = read_structure(path)
    if unit_cell is not None:
        if supercell is None:
            raise ValueError(f"{path}: a unit cell needs a supercell size, e.g. --supercell 5,5,1")
        host = repeat_unit_cell(host, supercell)
    return host
