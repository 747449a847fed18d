"""DeepRelax data: record checks, the graph transform, ASE pairs to records."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from quintet.atomistic import keys as K
from quintet.deeprelax.graph import with_deeprelax_graph
from quintet.deeprelax.maths import check_displacements

__all__ = ["DeepRelaxTransform", "canonical_record", "check_record", "from_canonical", "pairs_to_records"]

#: largest supported cell (atoms); beyond it the O(N^2) displace search is refused with a clear error
MAX_ATOMS = 20000


def check_record(record: Mapping[str, Tensor], source: str = "structure") -> None:
    """Validate an input record for DeepRelax.

    Raises:
        ValueError: no atoms, too many atoms, a non-periodic structure (DeepRelax needs a cell),
            a singular periodic cell, or relaxed labels whose periodic image is ambiguous.
    """
    n = int(record[K.POSITIONS].shape[0])
    if n == 0:
        raise ValueError(f"{source}: no atoms")
    if n > MAX_ATOMS:
        raise ValueError(
            f"{source}: {n} atoms is more than the {MAX_ATOMS} DeepRelax supports in one structure"
        )
    pbc = record[K.PBC].detach().cpu().numpy().astype(bool).reshape(3)
    if not pbc.any():
        raise ValueError(
            f"{source}: not periodic (pbc all False); DeepRelax relaxes crystals and slabs with a cell"
        )
    cell = record[K.CELL].detach().cpu().numpy().reshape(3, 3).astype(np.float64)
    sub = cell[pbc]
    if np.linalg.matrix_rank(sub, tol=1e-6) < int(pbc.sum()):
        raise ValueError(
            f"{source}: the cell vectors along the periodic directions are degenerate: {cell.tolist()}"
        )
    if K.RELAXED_POSITIONS in record:
        rel_cell = record.get(K.RELAXED_CELL, record[K.CELL]).detach().cpu().numpy().reshape(3, 3)
        check_displacements(
            record[K.POSITIONS].detach().cpu().numpy(),
            record[K.RELAXED_POSITIONS].detach().cpu().numpy(),
            rel_cell,
            pbc,
            source=source,
        )


def canonical_record(record: Mapping[str, Tensor], reduce: bool = True) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """The record in a canonical basis of its lattice, so the cell a user wrote does not change the prediction.

    A 3D-periodic cell becomes its Niggli-reduced basis ``M @ cell`` (``M`` integer, det ±1: the same lattice),
    with every atom wrapped into it by a lattice translation ``n`` (the relaxed labels get the same basis
    change and the same translation in the relaxed lattice). Non-periodic directions, or ``reduce=False`` (a model
    trained on cells as written), leave it unchanged.

    Returns:
        ``(record, M, n)``; :func:`from_canonical` maps a prediction back to the input's basis and images.
    """
    cell = record[K.CELL].reshape(3, 3)
    n_atoms = record[K.POSITIONS].shape[0]
    if not reduce or not bool(record[K.PBC].all()):
        return dict(record), torch.eye(3, dtype=cell.dtype), torch.zeros(n_atoms, 3, dtype=cell.dtype)
    from ase.cell import Cell

    op = np.asarray(Cell(cell.double().numpy()).niggli_reduce()[1]).T  # (op @ cell) has the reduced metric
    op = _unique_basis(op @ cell.double().numpy()) @ op
    m = torch.as_tensor(op, dtype=cell.dtype)
    red = m @ cell
    n = torch.floor(torch.linalg.solve(red.T, record[K.POSITIONS].T).T + 1e-6)
    rec = {**record, K.CELL: red.reshape(record[K.CELL].shape), K.POSITIONS: record[K.POSITIONS] - n @ red}
    if K.RELAXED_POSITIONS in record:
        rel_red = m @ record.get(K.RELAXED_CELL, record[K.CELL]).reshape(3, 3)
        rec[K.RELAXED_POSITIONS] = record[K.RELAXED_POSITIONS] - n @ rel_red
        if K.RELAXED_CELL in record:
            rec[K.RELAXED_CELL] = rel_red.reshape(record[K.RELAXED_CELL].shape)
    return rec, m, n


#: the 26 non-zero integer vectors with entries in {-1, 0, 1}: the rows a reduced basis' automorphisms draw from
_ROWS = np.array([v for v in np.ndindex(3, 3, 3) if any(x != 1 for x in v)]) - 1


def _unique_basis(red: np.ndarray) -> np.ndarray:
    """The integer ``S`` that picks one basis among a reduced lattice's equivalent ones (a cubic or hexagonal
    lattice has several bases with the same metric): of all ``S`` with rows in {-1, 0, 1}³, ``S G Sᵀ = G`` and
    a right-handed ``S @ red``, the one whose basis is lexicographically largest in Cartesian coordinates; every
    setting of one lattice then lands on the same basis (S = ±I for a lattice without symmetry)."""
    g = red @ red.T
    tol = 1e-6 * np.abs(g).max()
    norms = np.einsum("ij,jk,ik->i", _ROWS, g, _ROWS)
    allowed = [_ROWS[np.abs(norms - g[i, i]) < tol] for i in range(3)]  # rows of the same length as row i
    cand = np.array([np.stack(rows) for rows in itertools.product(*allowed)])
    same = np.abs(cand @ g @ cand.transpose(0, 2, 1) - g).max((1, 2)) < tol
    sym = cand[same & (np.linalg.det(cand @ red) > 0)]  # right-handed bases of the same metric
    keys = np.round(sym @ red, 4).reshape(len(sym), -1)
    return sym[np.lexsort(keys.T[::-1])[-1]]


def from_canonical(positions: Tensor, cell: Tensor, m: Tensor, n: Tensor) -> tuple[Tensor, Tensor]:
    """A prediction made on :func:`canonical_record`'s record, back in the input's basis: ``(positions, cell)``
    with each atom moved back by its translation in the predicted lattice."""
    return positions + n @ cell, torch.linalg.solve(m, cell)


class DeepRelaxTransform:
    """Dataset transform: validate a record, drop fields DeepRelax does not use, put it in the canonical basis
    (:func:`canonical_record`), add both edge sets.

    Vacancy placeholders (``DEFECT == 2``, added by 2DMD loaders) are removed: DeepRelax sees the
    defect structure as it is.

    Args:
        cutoff, max_neighbors, max_displace: graph settings (match the model's :class:`ModelConfig`).
        canonical: put each record in its Niggli basis (``ModelConfig.canonical_cell``).
    """

    keep = (K.POSITIONS, K.ATOMIC_NUMBERS, K.CELL, K.PBC, K.RELAXED_POSITIONS, K.RELAXED_CELL, K.STRUCTURE_ID)

    def __init__(
        self, cutoff: float = 6.0, max_neighbors: int | None = 30, max_displace: int = 20, canonical: bool = True
    ) -> None:
        self.canonical = canonical
        self.cutoff = cutoff
        self.max_neighbors = max_neighbors
        self.max_displace = max_displace

    def __call__(self, record: Mapping[str, Tensor]) -> dict[str, Tensor]:
        rec = dict(record)
        if K.DEFECT in rec:
            real = rec[K.DEFECT] != 2
            for k in (K.POSITIONS, K.ATOMIC_NUMBERS, K.RELAXED_POSITIONS):
                if k in rec:
                    rec[k] = rec[k][real]
        rec = {k: v for k, v in rec.items() if k in self.keep}
        sid = int(rec[K.STRUCTURE_ID]) if K.STRUCTURE_ID in rec else -1
        check_record(rec, source=f"structure {sid}")
        rec = canonical_record(rec, self.canonical)[0]  # trained and scored in the basis predict uses
        return with_deeprelax_graph(rec, self.cutoff, self.max_neighbors, self.max_displace)


def pairs_to_records(
    pairs: Sequence[tuple[Any, Any]], dtype: torch.dtype = torch.float32
) -> list[dict[str, Tensor]]:
    """(unrelaxed, relaxed) ASE pairs → records with unwrapped relaxed positions."""
    from quintet.atomistic.datasets import pair_record

    out = []
    for k, (u, r) in enumerate(pairs):
        rec = pair_record(u, r, dtype=dtype, source=f"pair {k}")  # refuses pairs of different atoms
        rec[K.STRUCTURE_ID] = torch.tensor(k)
        out.append(rec)
    return out
