"""The two DeepRelax edge sets, built on the unrelaxed structure.

- **displace** edges: for every atom ``i`` the ``max_displace`` nearest *other* atoms ``j`` of the same
  cell (image (0, 0, 0), no radius limit). Their targets are the distances from ``i``'s relaxed
  position to ``j``'s unrelaxed position; with ≥ 4 non-coplanar anchors they place ``i`` uniquely.
- **image** edges: the periodic neighbour list within ``cutoff`` (nearest ``max_neighbors`` per atom)
  restricted to pairs with a non-zero cell offset.

Both sets share ``EDGE_INDEX``/``EDGE_SHIFT``; :data:`DISPLACE` marks the displace edges.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from quintet.atomistic import keys as K

__all__ = ["DISPLACE", "build_edges", "displace_edges", "image_edges", "with_deeprelax_graph"]

#: (E,) bool edge field: True for intra-cell displace edges, False for inter-cell image edges
DISPLACE: str = K.register_key("deeprelax_displace", "edge")

_BLOCK = 512


def displace_edges(positions: np.ndarray, max_displace: int) -> np.ndarray:
    """The ``max_displace`` nearest same-cell atoms of every atom (no periodic images).

    Memory stays bounded for large cells: distances are computed in blocks of rows.

    Returns:
        (2, E) int64 rows (i, j), sorted by centre then distance; ``E = N * min(max_displace, N - 1)``.
    """
    pos = np.asarray(positions, dtype=np.float64)
    n = len(pos)
    k = min(int(max_displace), n - 1)
    if k <= 0:
        return np.zeros((2, 0), dtype=np.int64)
    rows, cols = [], []
    for s in range(0, n, _BLOCK):
        blk = pos[s : s + _BLOCK]
        d = np.linalg.norm(blk[:, None, :] - pos[None, :, :], axis=-1)
        d[np.arange(len(blk)), np.arange(s, s + len(blk))] = np.inf
        if k < n - 1:
            idx = np.argpartition(d, k - 1, axis=1)[:, :k]
        else:
            idx = np.broadcast_to(np.arange(n), d.shape).copy()
            idx = idx[~np.isinf(d)].reshape(len(blk), n - 1)
        dd = np.take_along_axis(d, idx, axis=1)
        order = np.lexsort((idx, dd), axis=1)
        idx = np.take_along_axis(idx, order, axis=1)
        rows.append(np.repeat(np.arange(s, s + len(blk)), k))
        cols.append(idx.reshape(-1))
    return np.stack([np.concatenate(rows), np.concatenate(cols)]).astype(np.int64)


def image_edges(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float, max_neighbors: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour-list edges within ``cutoff`` that cross into another cell (non-zero shift)."""
    from quintet.atomistic.neighbors import neighbor_list

    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    if not pbc.any():
        return np.zeros((2, 0), dtype=np.int64), np.zeros((0, 3))
    ei, sh = neighbor_list(positions, cell, pbc, cutoff, max_neighbors)
    keep = np.abs(sh).sum(axis=1) > 0
    return ei[:, keep], sh[keep]


def build_edges(
    positions: np.ndarray,
    cell: np.ndarray,
    pbc: np.ndarray,
    cutoff: float = 6.0,
    max_neighbors: int | None = 30,
    max_displace: int = 20,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both edge sets of one structure.

    Returns:
        ``edge_index`` (2, E) int64, ``shift`` (E, 3) float64, ``displace`` (E,) bool (displace edges first).
    """
    d_ei = displace_edges(positions, max_displace)
    i_ei, i_sh = image_edges(positions, cell, pbc, cutoff, max_neighbors)
    ei = np.concatenate([d_ei, i_ei], axis=1)
    sh = np.concatenate([np.zeros((d_ei.shape[1], 3)), i_sh], axis=0)
    mask = np.zeros(ei.shape[1], dtype=bool)
    mask[: d_ei.shape[1]] = True
    return ei, sh, mask


def with_deeprelax_graph(
    record: Mapping[str, Tensor], cutoff: float = 6.0, max_neighbors: int | None = 30, max_displace: int = 20
) -> dict[str, Tensor]:
    """Return a copy of ``record`` with ``EDGE_INDEX``, ``EDGE_SHIFT`` and :data:`DISPLACE`."""
    pos = record[K.POSITIONS].detach().cpu().numpy()
    cell = record[K.CELL].detach().cpu().numpy().reshape(3, 3)
    pbc = record[K.PBC].detach().cpu().numpy().astype(bool).reshape(3)
    ei, sh, mask = build_edges(pos, cell, pbc, cutoff, max_neighbors, max_displace)
    out = dict(record)
    out[K.EDGE_INDEX] = torch.from_numpy(ei)
    out[K.EDGE_SHIFT] = torch.from_numpy(sh).to(record[K.POSITIONS].dtype)
    out[DISPLACE] = torch.from_numpy(mask)
    return out
