"""Pure tensor maths of DeepRelax: offset encoding, Laplace NLL, targets, metrics, uncertainty.

Everything here is a plain function of tensors (no module state), so it can be tested by hand.
Conventions follow :mod:`quintet.atomistic.keys`: an edge ``(i, j)`` has centre ``i`` (row 0) and
neighbour ``j`` (row 1), and ``r_ij = r_j - r_i + S @ cell``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "LAPLACE_LEVEL",
    "OFFSET_FREQUENCIES",
    "calibration_factor",
    "cell_heights",
    "check_displacements",
    "coverage",
    "displace_distances",
    "edge_lengths",
    "graph_counts",
    "laplace_nll",
    "offset_encoding",
    "per_atom_uncertainty",
    "per_graph_mean",
    "spearman",
    "volume",
]

#: angular frequencies (rad per cell offset) of the offset encoding. ``1.0`` alone already makes
#: the map injective on all of Z (1 is not a rational multiple of pi); the lowest one keeps it
#: monotone, hence well separated in float32, for |offset| up to pi / 0.03 ≈ 100 cells.
OFFSET_FREQUENCIES: tuple[float, ...] = (0.03, 0.07, 0.15, 0.33, 0.7, 1.0, 1.9, 2.7)


def offset_encoding(shift: Tensor, frequencies: tuple[float, ...] = OFFSET_FREQUENCIES) -> Tensor:
    """Collision-free encoding of integer cell offsets.

    Each of the three components ``o`` is mapped to ``[sin(w o), cos(w o)]`` for every frequency
    ``w``. Two different integer offsets never share an encoding: at ``w = 1``, ``sin``/``cos``
    agree only when the difference is a multiple of 2π, which no non-zero integer is. (The
    published encoding packs the offset into one id ``(ox+2) + 5(oy+2) + 25(oz+2)`` that
    collides as soon as a component leaves [-2, 2].)

    Args:
        shift: (E, 3) integer cell multiples (any float or int dtype).
        frequencies: angular frequencies.

    Returns:
        (E, 3 * 2 * len(frequencies)) features in [-1, 1].
    """
    w = torch.tensor(frequencies, dtype=torch.float32, device=shift.device)
    ang = shift.to(torch.float32).unsqueeze(-1) * w  # (E, 3, F)
    enc = torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)  # (E, 3, 2F)
    return enc.reshape(shift.shape[0], -1)


def laplace_nll(
    mu: Tensor, log_b: Tensor, target: Tensor, log_b_min: float = -5.0, log_b_max: float = 3.0
) -> Tensor:
    """Element-wise negative log-likelihood of ``target`` under Laplace(mu, b).

    ``|mu - y| / b + log b + log 2`` with ``log b`` clamped to ``[log_b_min, log_b_max]`` (the
    clamp keeps a confident model from dividing by ~0).
    """
    lb = log_b.clamp(log_b_min, log_b_max)
    return (mu - target).abs() * torch.exp(-lb) + lb + math.log(2.0)


def _edge_cells(cell: Tensor, edge_index: Tensor, batch: Tensor | None) -> Tensor:
    if cell.dim() == 2:
        return cell.expand(edge_index.shape[1], 3, 3)
    if batch is None:
        if cell.shape[0] != 1:
            raise ValueError("a batched cell needs the batch vector")
        return cell.expand(edge_index.shape[1], 3, 3)
    return cell[batch[edge_index[0]]]


def edge_lengths(
    pos: Tensor, cell: Tensor, edge_index: Tensor, shift: Tensor, batch: Tensor | None = None
) -> Tensor:
    """``|r_j + S @ cell - r_i|`` per edge (differentiable in ``pos`` and ``cell``)."""
    i, j = edge_index[0], edge_index[1]
    vec = pos[j] - pos[i]
    if shift.numel():
        vec = vec + torch.einsum("ek,ekl->el", shift.to(pos.dtype), _edge_cells(cell, edge_index, batch))
    return torch.linalg.vector_norm(vec, dim=-1)


def displace_distances(
    moving: Tensor,
    anchors: Tensor,
    anchor_cell: Tensor,
    edge_index: Tensor,
    shift: Tensor,
    batch: Tensor | None = None,
) -> Tensor:
    """Cross-structure "displace" distances ``|moving_i - (anchors_j + S @ anchor_cell)|``.

    With ``moving`` = relaxed positions and ``anchors`` = unrelaxed positions this is the
    DeepRelax displace target: the distance from atom ``i``'s relaxed position to the *unrelaxed*
    position of its neighbour ``j``. It ties the relaxed structure to the unrelaxed frame.
    """
    i, j = edge_index[0], edge_index[1]
    anchor = anchors[j]
    if shift.numel():
        anchor = anchor + torch.einsum(
            "ek,ekl->el", shift.to(anchors.dtype), _edge_cells(anchor_cell, edge_index, batch)
        )
    return torch.linalg.vector_norm(moving[i] - anchor, dim=-1)


def cell_heights(cell: np.ndarray) -> np.ndarray:
    """Distances between opposite faces of the cell (3,), i.e. ``V / |a_k x a_l|``."""
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    vol = abs(np.linalg.det(cell))
    out = np.full(3, np.inf)
    for k in range(3):
        cross = np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3])
        n = np.linalg.norm(cross)
        if n > 1e-12 and vol > 1e-12:
            out[k] = vol / n
    return out


def check_displacements(
    unrelaxed_pos: np.ndarray,
    relaxed_pos: np.ndarray,
    relaxed_cell: np.ndarray,
    pbc: np.ndarray,
    max_fraction: float = 0.5,
    source: str = "pair",
) -> float:
    """Check that relaxed positions (already unwrapped to the nearest image) are unambiguous labels.

    Returns:
        The largest atomic displacement, Å.

    Raises:
        ValueError: an atom moved by at least ``max_fraction`` of a periodic cell vector (in fractional
            coordinates of the relaxed cell), so which periodic image it relaxed to is ambiguous.
    """
    up = np.asarray(unrelaxed_pos, dtype=np.float64)
    rp = np.asarray(relaxed_pos, dtype=np.float64)
    if up.shape != rp.shape:
        raise ValueError(f"{source}: relaxed positions {rp.shape} and unrelaxed positions {up.shape} differ")
    if len(up) == 0:
        return 0.0
    moved = np.linalg.norm(rp - up, axis=-1)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    if pbc.any():
        box = np.asarray(relaxed_cell, dtype=np.float64).reshape(3, 3).copy()
        for k in np.flatnonzero(~pbc):  # a vacuum direction may carry a zero vector: any normal will do
            n = np.cross(box[(k + 1) % 3], box[(k + 2) % 3])
            box[k] = n / max(np.linalg.norm(n), 1e-12) if np.linalg.norm(box[k]) < 1e-9 else box[k]
        dfrac = np.abs((rp - up) @ np.linalg.pinv(box))[:, pbc]
        k, c = np.unravel_index(int(dfrac.argmax()), dfrac.shape)
        if dfrac[k, c] >= max_fraction:
            raise ValueError(
                f"{source}: atom {k} moved {moved[k]:.2f} Å ({dfrac[k, c]:.2f} of a cell vector) between the "
                f"unrelaxed and relaxed structures: at {max_fraction:g} of a cell or more, the periodic image "
                "it relaxed to is ambiguous"
            )
    return float(moved.max())


def graph_counts(graph: Tensor, num_graphs: int, dtype: torch.dtype) -> Tensor:
    """(B,) number of entries of each graph, at least 1 (the denominator of :func:`per_graph_mean`)."""
    n = torch.zeros(num_graphs, dtype=dtype, device=graph.device)
    return n.index_add_(0, graph, torch.ones_like(graph, dtype=dtype)).clamp_min(1)


def per_graph_mean(values: Tensor, graph: Tensor, num_graphs: int) -> Tensor:
    """Mean of ``values`` (E,) or (E, k) per graph (graphs with no entry get 0)."""
    v = values.unsqueeze(-1) if values.dim() == 1 else values.flatten(1)
    s = torch.zeros(num_graphs, v.shape[1], dtype=v.dtype, device=v.device).index_add_(0, graph, v)
    out = s / graph_counts(graph, num_graphs, v.dtype).unsqueeze(-1)
    return out.reshape(num_graphs, *values.shape[1:]) if values.dim() > 1 else out[:, 0]


def per_atom_uncertainty(sigma: Tensor, centre: Tensor, num_atoms: int) -> Tensor:
    """Per-atom uncertainty (Å): the mean σ of the distances centred on each atom (``centre``).

    Atoms with no such distance get 0.
    """
    return per_graph_mean(sigma, centre, num_atoms)


def volume(cell: Tensor) -> Tensor:
    """|det(cell)| for (3, 3) or (B, 3, 3) cells."""
    return torch.linalg.det(cell.to(torch.float64)).abs().to(cell.dtype)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (NaN when fewer than 3 points or a constant input)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")

    def rank(a: np.ndarray) -> np.ndarray:
        order = a.argsort(kind="mergesort")
        r = np.empty(len(a))
        r[order] = np.arange(len(a), dtype=np.float64)
        # average ranks of ties
        vals, inv, counts = np.unique(a, return_inverse=True, return_counts=True)
        sums = np.zeros(len(vals))
        np.add.at(sums, inv, r)
        return (sums / counts)[inv]

    rx, ry = rank(x), rank(y)
    rx -= rx.mean()
    ry -= ry.mean()
    return float((rx * ry).sum() / np.sqrt((rx**2).sum() * (ry**2).sum()))


def coverage(mu: Tensor, sigma: Tensor, target: Tensor) -> float:
    """Fraction of targets inside ``mu ± sigma`` (a Laplace interval holds 1 - 1/e ≈ 63 %)."""
    if mu.numel() == 0:
        return float("nan")
    return float(((target - mu).abs() <= sigma).to(torch.float64).mean())


#: the nominal coverage of a Laplace band ``mu ± b``: P(|x - mu| <= b) = 1 - 1/e
LAPLACE_LEVEL = 1.0 - float(np.exp(-1.0))


def calibration_factor(sigma: np.ndarray, abs_error: np.ndarray, level: float = LAPLACE_LEVEL) -> float:
    """The factor ``s`` for which a fraction ``level`` of the errors lies inside ``± s·σ``.

    Multiplying every σ by ``s`` makes the bands' coverage on these errors equal ``level`` (the
    ``level`` quantile of ``|error| / σ``); NaN when there are no finite ratios.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.asarray(abs_error, dtype=np.float64).ravel() / np.asarray(sigma, dtype=np.float64).ravel()
    ratio = ratio[np.isfinite(ratio)]
    return float(np.quantile(ratio, level)) if len(ratio) else float("nan")
