"""Periodic neighbour lists (vesin) and edge vectors formed in torch.

The pair search runs in vesin (C++, the fastest list measured here); it returns integer cell
shifts ``S`` only. Edge vectors ``r_ij = r_j - r_i + S @ cell`` are then formed in torch by
:func:`edge_vectors`, so forces (−∂E/∂r) and stress (via a strain on the cell) flow by autograd.

Conventions (see :mod:`quintet.atomistic.keys`): ``edge_index[0]`` is the centre ``i`` that
receives the message, ``edge_index[1]`` the neighbour ``j``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from quintet.atomistic import keys as K

__all__ = [
    "TIE_TOL",
    "VerletList",
    "batch_graph",
    "batch_neighbor_list",
    "edge_vectors",
    "neighbor_list",
    "with_neighbors",
]

#: distances closer than this (Å) count as tied when neighbour lists are truncated to the nearest k
TIE_TOL = 1e-6


def _as_box(cell: np.ndarray, pbc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """vesin needs an invertible box whenever any direction is periodic.

    Non-periodic directions whose cell vector is zero get a unit vector orthogonal to the others
    (it is never used for shifts because the direction is not periodic).
    """
    cell = np.array(cell, dtype=np.float64).reshape(3, 3)
    if not pbc.any():
        return np.zeros((3, 3)), pbc
    if abs(np.linalg.det(cell)) > 1e-10:
        return cell, pbc
    box = cell.copy()
    for k in range(3):
        if not pbc[k] and np.linalg.norm(box[k]) < 1e-12:
            a, b = box[(k + 1) % 3], box[(k + 2) % 3]
            n = np.cross(a, b)
            if np.linalg.norm(n) < 1e-12:
                n = np.eye(3)[k]
            box[k] = n / np.linalg.norm(n)
    if abs(np.linalg.det(box)) < 1e-10:
        raise ValueError(
            f"cell {cell.tolist()} is singular in a periodic direction (pbc={pbc.tolist()}); "
            "a periodic structure needs three independent lattice vectors"
        )
    return box, pbc


def neighbor_list(
    positions: np.ndarray,
    cell: np.ndarray,
    pbc: np.ndarray | bool,
    cutoff: float,
    max_neighbors: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs within ``cutoff`` (periodic images included), optionally the nearest ``max_neighbors``.

    Correct for cells smaller than the cutoff (an atom may see many images of the same neighbour,
    including its own images), triclinic cells, mixed periodicity (2D slabs) and molecules with a
    zero cell.

    Args:
        positions: (N, 3) Cartesian positions, Å.
        cell: (3, 3) lattice vectors as rows, Å (ignored when nothing is periodic).
        pbc: (3,) periodic flags, or one bool.
        cutoff: radius, Å (strictly positive).
        max_neighbors: keep the nearest ``max_neighbors`` per centre, plus any neighbour whose distance
            ties (within ``TIE_TOL``) with the last one kept, so the graph is the same in every frame.

    Returns:
        ``edge_index`` (2, E) int64 with rows (i, j) (sorted by centre, distance, neighbour and shift
        when ``max_neighbors`` is set; otherwise in vesin's deterministic order), and
        ``shifts`` (E, 3) float64 integer cell multiples.
    """
    import vesin

    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"positions must have shape (N, 3), got {pos.shape}")
    if not np.isfinite(pos).all():
        raise ValueError("positions contain NaN or inf")
    if not cutoff > 0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    if max_neighbors is not None and max_neighbors < 1:
        raise ValueError(f"max_neighbors must be >= 1 or None, got {max_neighbors}")
    pbc_arr = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
    if len(pos) == 0:
        return np.zeros((2, 0), dtype=np.int64), np.zeros((0, 3))
    box, pbc_arr = _as_box(np.asarray(cell), pbc_arr)
    nl = vesin.NeighborList(cutoff=float(cutoff), full_list=True, sorted=False)
    i, j, s, d = nl.compute(pos, box, pbc_arr.tolist(), "ijSd")
    i = i.astype(np.int64)
    j = j.astype(np.int64)
    if max_neighbors is not None and len(i):
        # Order by centre, distance quantised to TIE_TOL, neighbour and cell shift: a rotated or
        # translated copy then gets the same edges in the same order even where distances tie exactly
        # (the ±S images of one atom, shells of a perfect lattice), which float round-off would
        # otherwise reorder. Keep the nearest max_neighbors per centre plus every neighbour tied with
        # the last one kept, so truncation never picks part of a shell by accident of the frame.
        dq = np.rint(d / TIE_TOL).astype(np.int64)
        order = np.lexsort((s[:, 2], s[:, 1], s[:, 0], j, dq, i))
        i, j, s, dq = i[order], j[order], s[order], dq[order]
        counts = np.bincount(i, minlength=len(pos))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.arange(len(i)) - np.repeat(starts, counts)
        last = np.full(len(pos), np.iinfo(np.int64).max)
        at_k = rank == max_neighbors - 1
        last[i[at_k]] = dq[at_k]
        keep = dq <= last[i]
        i, j, s = i[keep], j[keep], s[keep]
    return np.stack([i, j]), s.astype(np.float64)


class VerletList:
    """A neighbour list with a skin (Verlet buffer), for MD: built for ``cutoff + skin`` and reused while no
    atom has moved more than ``skin / 2`` since the build (and the cell, periodicity and atom count are
    unchanged); each call returns the pairs within ``cutoff`` now, the same set a fresh list would give.

    With ``skin=0`` or ``max_neighbors`` set (a nearest-k graph must be re-ranked every step) every call
    builds a fresh list. ``rebuilds`` counts the builds.
    """

    def __init__(self, cutoff: float, skin: float, max_neighbors: int | None = None) -> None:
        if not skin >= 0:
            raise ValueError(f"neighbour-list skin must be >= 0 Å, got {skin}")
        self.cutoff, self.skin, self.max_neighbors = float(cutoff), float(skin), max_neighbors
        self.rebuilds = 0
        self._built: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    def __call__(self, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(edge_index, shifts)`` of the pairs within ``cutoff`` (see :func:`neighbor_list`)."""
        pos = np.asarray(positions, dtype=np.float64)
        cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
        pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
        if self.skin == 0 or self.max_neighbors is not None:
            self.rebuilds += 1
            return neighbor_list(pos, cell, pbc, self.cutoff, self.max_neighbors)
        if not self._valid(pos, cell, pbc):
            ei, sh = neighbor_list(pos, cell, pbc, self.cutoff + self.skin)
            self._built = (pos.copy(), cell.copy(), pbc.copy(), ei, sh)
            self.rebuilds += 1
        _, _, _, ei, sh = self._built  # type: ignore[misc]
        vec = pos[ei[1]] - pos[ei[0]] + sh @ cell
        keep = np.einsum("ij,ij->i", vec, vec) < self.cutoff**2
        return ei[:, keep], sh[keep]

    def _valid(self, pos: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> bool:
        if self._built is None:
            return False
        pos0, cell0, pbc0, _, _ = self._built
        if pos.shape != pos0.shape or not np.array_equal(cell, cell0) or not np.array_equal(pbc, pbc0):
            return False
        moved = np.einsum("ij,ij->i", pos - pos0, pos - pos0).max(initial=0.0)
        return bool(moved < (self.skin / 2) ** 2)


def with_neighbors(
    record: Mapping[str, Tensor], cutoff: float, max_neighbors: int | None = None
) -> dict[str, Tensor]:
    """Return a copy of ``record`` with ``EDGE_INDEX`` and ``EDGE_SHIFT`` for ``cutoff``."""
    pos = record[K.POSITIONS].detach().cpu().numpy()
    cell = record[K.CELL].detach().cpu().numpy().reshape(3, 3)
    pbc = record[K.PBC].detach().cpu().numpy().astype(bool).reshape(3)
    ei, sh = neighbor_list(pos, cell, pbc, cutoff, max_neighbors)
    out = dict(record)
    out[K.EDGE_INDEX] = torch.from_numpy(ei)
    out[K.EDGE_SHIFT] = torch.from_numpy(sh).to(record[K.POSITIONS].dtype)
    return out


def batch_neighbor_list(
    batch: Mapping[str, Tensor], cutoff: float, max_neighbors: int | None = None
) -> tuple[Tensor, Tensor]:
    """Neighbour list of every structure in a collated batch (atom indices offset per structure).

    Returns:
        ``edge_index`` (2, E) long and ``edge_shift`` (E, 3) in the dtype of the positions.
    """
    pos = batch[K.POSITIONS].detach().cpu().numpy()
    cells = batch[K.CELL].detach().cpu().numpy().reshape(-1, 3, 3)
    pbcs = batch[K.PBC].detach().cpu().numpy().astype(bool).reshape(-1, 3)
    counts = batch[K.NUM_ATOMS].detach().cpu().numpy().reshape(-1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    eis, shs = [], []
    for g, (s0, n) in enumerate(zip(starts, counts, strict=True)):
        ei, sh = neighbor_list(pos[s0 : s0 + n], cells[g], pbcs[g], cutoff, max_neighbors)
        eis.append(ei + s0)
        shs.append(sh)
    device, dtype = batch[K.POSITIONS].device, batch[K.POSITIONS].dtype
    edge_index = torch.from_numpy(np.concatenate(eis, axis=1) if eis else np.zeros((2, 0), np.int64))
    shift = torch.from_numpy(np.concatenate(shs) if shs else np.zeros((0, 3)))
    return edge_index.to(device), shift.to(device=device, dtype=dtype)


def batch_graph(
    batch: Mapping[str, Tensor], cutoff: float, max_neighbors: int | None = None
) -> tuple[Tensor, Tensor]:
    """The batch's own ``EDGE_INDEX``/``EDGE_SHIFT`` when it carries them, else a fresh neighbour list.

    A batch without ``NUM_ATOMS`` is treated as one structure.
    """
    if K.EDGE_INDEX in batch and K.EDGE_SHIFT in batch:
        return batch[K.EDGE_INDEX], batch[K.EDGE_SHIFT]
    if K.NUM_ATOMS not in batch:
        batch = {**batch, K.NUM_ATOMS: torch.tensor([batch[K.POSITIONS].shape[0]])}
    return batch_neighbor_list(batch, cutoff, max_neighbors)


def edge_vectors(
    pos: Tensor, cell: Tensor, edge_index: Tensor, edge_shift: Tensor, batch: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``r_ij = r_j - r_i + S_ij @ cell`` and its length, differentiable w.r.t. ``pos`` and ``cell``.

    Args:
        pos: (N, 3) positions, Å.
        cell: (3, 3) or (B, 3, 3) lattice vectors as rows.
        edge_index: (2, E) rows (i, j).
        edge_shift: (E, 3) integer cell multiples (float dtype).
        batch: (N,) structure index of each atom (needed when ``cell`` is batched).

    Returns:
        ``vec`` (E, 3) and ``length`` (E,).
    """
    i, j = edge_index[0], edge_index[1]
    vec = pos[j] - pos[i]
    if edge_shift.numel():
        if cell.dim() == 2:
            vec = vec + edge_shift.to(pos.dtype) @ cell
        else:
            if batch is None:
                if cell.shape[0] != 1:
                    raise ValueError("a batched cell needs the batch vector")
                edge_cell = cell.expand(len(i), 3, 3)
            else:
                edge_cell = cell[batch[i]]
            vec = vec + torch.einsum("ek,ekl->el", edge_shift.to(pos.dtype), edge_cell)
    length = torch.linalg.vector_norm(vec, dim=-1)
    return vec, length
