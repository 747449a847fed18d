"""Batched Euclidean distance-geometry solve: predicted distances -> relaxed coordinates.

DeepRelax predicts distances, not coordinates. The coordinates are recovered by minimising a
penalty that keeps every solved distance inside its predicted band ``mu ± sigma``:

- displace edges ``(i, j)``: ``d = |x_i - (u_j + S @ cell_u)|`` with the unrelaxed anchors ``u`` fixed;
- all edges: ``d = |x_j + S @ cell_pred - x_i|`` in the predicted cell.

Adam starts from the unrelaxed positions. All structures of a batch are solved together: the
objective is a sum of per-structure means and Adam's update is element-wise, so each structure
follows exactly the trajectory it would follow alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from quintet.deeprelax.maths import displace_distances, edge_lengths, graph_counts, per_graph_mean

__all__ = ["SolveResult", "band_penalty", "band_penalty_slope", "solve_positions"]

Objective = Literal["hinge", "laplace"]


def band_penalty(d: Tensor, mu: Tensor, sigma: Tensor, objective: Objective = "hinge") -> Tensor:
    """Per-edge penalty of a solved distance ``d`` against a prediction ``(mu, sigma)``.

    ``hinge`` (published): ``relu(d - (mu + sigma)) + relu(relu(mu - sigma) - d)``, zero inside the band.
    ``laplace``: ``|d - mu| / sigma``, the negative log-likelihood up to constants (a MAP estimate).
    """
    if objective == "hinge":
        return torch.relu(d - (mu + sigma)) + torch.relu(torch.relu(mu - sigma) - d)
    if objective == "laplace":
        return (d - mu).abs() / sigma.clamp_min(1e-6)
    raise ValueError(f"unknown solve objective {objective!r}; use 'hinge' or 'laplace'")


@dataclass
class SolveResult:
    """Output of :func:`solve_positions`.

    Attributes:
        positions: (N, 3) solved positions, Å.
        displace_residual: (B,) mean |d_solved - mu| over each structure's displace edges, Å.
        relaxed_residual: (B,) mean |d_solved - mu| over each structure's edges in the predicted cell, Å.
    """

    positions: Tensor
    displace_residual: Tensor
    relaxed_residual: Tensor


def _select_edges(edges: tuple[Tensor, ...], keep: Tensor) -> tuple[Tensor, ...]:
    """(i, j, graph, mu, sigma, const) restricted to the edges where ``keep``."""
    return tuple(t[keep] for t in edges)


def _loop_penalty(
    x: Tensor, ed: tuple[Tensor, ...], em: tuple[Tensor, ...], num_graphs: int, objective: Objective
) -> Tensor:
    """(B,) mean band penalty of each structure over its displace edges ``ed`` and moving edges ``em``.

    Each edge tuple is ``(i, j, graph, mu, sigma, const)``. The cells are fixed during the solve, so
    the constant part of every distance is precomputed: for a displace edge ``const`` is the anchor
    point ``u_j + S @ cell_u`` (distance ``|x_i - const|``), for a moving edge it is the image offset
    ``S @ cell`` (distance ``|x_j - x_i + const|``). Same arithmetic as :func:`displace_distances` and
    :func:`edge_lengths`, without rebuilding (E, 3, 3) cells in every step.
    """
    dd = torch.linalg.vector_norm(x[ed[0]] - ed[5], dim=-1)
    dr = torch.linalg.vector_norm(x[em[1]] - x[em[0]] + em[5], dim=-1)
    return per_graph_mean(band_penalty(dd, ed[3], ed[4], objective), ed[2], num_graphs) + per_graph_mean(
        band_penalty(dr, em[3], em[4], objective), em[2], num_graphs
    )


def band_penalty_slope(d: Tensor, mu: Tensor, sigma: Tensor, objective: Objective = "hinge") -> Tensor:
    """d(:func:`band_penalty`)/dd per edge: +1 above the band, -1 below it, 0 inside (hinge), or
    sign(d - mu) / σ (laplace); the subgradient 0 at the kinks, as autograd takes it."""
    if objective == "hinge":
        return (d > mu + sigma).to(d.dtype) - (d < torch.relu(mu - sigma)).to(d.dtype)
    if objective == "laplace":
        return torch.sign(d - mu) / sigma.clamp_min(1e-6)
    raise ValueError(f"unknown solve objective {objective!r}; use 'hinge' or 'laplace'")


def _edge_weights(graph: Tensor, num_graphs: int, dtype: torch.dtype) -> Tensor:
    """(E,) 1 / (number of edges of the edge's structure): the weights of :func:`per_graph_mean`."""
    return 1.0 / graph_counts(graph, num_graphs, dtype)[graph]


def _loop_gradient(
    x: Tensor, ed: tuple[Tensor, ...], em: tuple[Tensor, ...], wd: Tensor, wm: Tensor, objective: Objective
) -> Tensor:
    """(N, 3) gradient of ``_loop_penalty(x, ...).sum()`` in closed form (``wd``/``wm``: edge weights).

    A displace edge's length ``|x_i - c|`` moves ``x_i`` along its unit vector; a moving edge's
    ``|x_j - x_i + o|`` moves ``x_j`` along it and ``x_i`` against it. Each is scaled by the penalty's
    slope and the edge's weight in its structure's mean. No autograd graph is built: the loop of the
    solve costs one pass over the edges per step instead of a forward and a backward pass.
    """
    grad = torch.zeros_like(x)
    vd = x[ed[0]] - ed[5]
    dd = torch.linalg.vector_norm(vd, dim=-1)
    gd = (band_penalty_slope(dd, ed[3], ed[4], objective) * wd / dd.clamp_min(1e-12)).unsqueeze(-1) * vd
    grad.index_add_(0, ed[0], gd)
    vm = x[em[1]] - x[em[0]] + em[5]
    dm = torch.linalg.vector_norm(vm, dim=-1)
    gm = (band_penalty_slope(dm, em[3], em[4], objective) * wm / dm.clamp_min(1e-12)).unsqueeze(-1) * vm
    grad.index_add_(0, em[1], gm)
    grad.index_add_(0, em[0], -gm)
    return grad


def _offsets(shift: Tensor, cell: Tensor, graph: Tensor, dtype: torch.dtype) -> Tensor:
    """(E, 3) Cartesian image offsets ``S @ cell`` of edges whose structure is ``graph``."""
    if not shift.numel():
        return shift.to(dtype).reshape(-1, 3)
    return torch.einsum("ek,ekl->el", shift.to(dtype), cell[graph])


def _loop_edges(
    init_pos: Tensor, anchor_pos: Tensor, anchor_cell: Tensor, cell: Tensor, edge_index: Tensor, shift: Tensor,
    d_ei: Tensor, d_sh: Tensor, d_graph: Tensor, r_graph: Tensor, mu_d: Tensor, sg_d: Tensor, mu_r: Tensor,
    sg_r: Tensor,
) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:  # fmt: skip
    """The edges the solve works on, as ``(i, j, graph, mu, sigma, const)`` of the displace edges (anchored
    at the unrelaxed images) and of the relaxed edges that can move an atom.

    An edge from an atom to its own image has a fixed length in a fixed cell: it cannot move the atom,
    and leaving it in would let Adam blow float round-off (+g - g) up to full steps."""
    moving = edge_index[0] != edge_index[1]
    m_ei, m_sh, m_graph = edge_index[:, moving], shift[moving], r_graph[moving]
    anchor = anchor_pos[d_ei[1]] + _offsets(d_sh, anchor_cell, d_graph, anchor_pos.dtype)
    loop_d = (d_ei[0], d_ei[1], d_graph, mu_d, sg_d, anchor)
    loop_m = (m_ei[0], m_ei[1], m_graph, mu_r[moving], sg_r[moving], _offsets(m_sh, cell, m_graph, init_pos.dtype))
    return loop_d, loop_m


def _adam_solve(
    x: Tensor, loop_d: tuple[Tensor, ...], loop_m: tuple[Tensor, ...], num_graphs: int, steps: int, lr: float,
    objective: Objective, lr_decay: bool,
) -> Tensor:  # fmt: skip
    """Adam on the positions ``x`` (in place) against the loop edges; cosine learning-rate decay to 1 %."""
    if steps > 0 and (loop_d[0].numel() or loop_m[0].numel()):
        wd = _edge_weights(loop_d[2], num_graphs, x.dtype)
        wm = _edge_weights(loop_m[2], num_graphs, x.dtype)
        opt = torch.optim.Adam([x], lr=lr)
        for t in range(steps):
            if lr_decay:
                for group in opt.param_groups:
                    group["lr"] = lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t / steps)))
            x.grad = _loop_gradient(x, loop_d, loop_m, wd, wm, objective)
            opt.step()
    return x


def solve_positions(
    init_pos: Tensor,
    anchor_pos: Tensor,
    anchor_cell: Tensor,
    cell: Tensor,
    edge_index: Tensor,
    shift: Tensor,
    displace: Tensor,
    batch: Tensor,
    num_graphs: int,
    mu_displace: Tensor,
    sigma_displace: Tensor,
    mu_relaxed: Tensor,
    sigma_relaxed: Tensor,
    steps: int = 100,
    lr: float = 0.1,
    objective: Objective = "hinge",
    lr_decay: bool = True,
    skip_converged: bool = True,
) -> SolveResult:
    """Recover relaxed coordinates of a batch of structures from predicted distances.

    Args:
        init_pos: (N, 3) starting positions (the unrelaxed ones).
        anchor_pos: (N, 3) unrelaxed positions used as fixed anchors of the displace edges.
        anchor_cell: (B, 3, 3) unrelaxed cells (anchor images).
        cell: (B, 3, 3) predicted relaxed cells.
        edge_index: (2, E) rows (i, j); shift: (E, 3) integer cell multiples.
        displace: (E,) bool, the displace edges (``mu_displace``/``sigma_displace`` follow their order).
        batch: (N,) structure of each atom; num_graphs: B.
        mu_displace, sigma_displace: (E_d,) predicted displace distances and scales.
        mu_relaxed, sigma_relaxed: (E,) predicted relaxed distances and scales (every edge).
        steps: Adam iterations (0 returns the start).
        lr: Adam learning rate (Å per step at most); with ``lr_decay`` it follows a cosine to 1 % of it.
        objective: ``"hinge"`` (published band penalty) or ``"laplace"``.
        lr_decay: cosine-decay the learning rate, which lets Adam settle instead of oscillating.
        skip_converged: with the hinge, leave out of the loop every structure whose start already
            lies inside all its bands. Its gradient is exactly 0, so Adam would never move it; the
            result is the same, and the solve costs nothing for such structures.

    Returns:
        :class:`SolveResult` (positions detached).
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    d_ei = edge_index[:, displace]
    d_sh = shift[displace]
    d_graph = batch[d_ei[0]] if d_ei.numel() else d_ei.new_zeros(0)
    r_graph = batch[edge_index[0]] if edge_index.numel() else edge_index.new_zeros(0)
    anchor_pos = anchor_pos.detach()
    anchor_cell, cell = anchor_cell.detach(), cell.detach()
    mu_d, sg_d = mu_displace.detach(), sigma_displace.detach()
    mu_r, sg_r = mu_relaxed.detach(), sigma_relaxed.detach()

    def distances(x: Tensor) -> tuple[Tensor, Tensor]:
        dd = displace_distances(x, anchor_pos, anchor_cell, d_ei, d_sh, batch)
        dr = edge_lengths(x, cell, edge_index, shift, batch)
        return dd, dr

    loop_d, loop_m = _loop_edges(init_pos, anchor_pos, anchor_cell, cell, edge_index, shift, d_ei, d_sh, d_graph,
                                 r_graph, mu_d, sg_d, mu_r, sg_r)  # fmt: skip
    if skip_converged and objective == "hinge" and steps > 0:
        with torch.no_grad():
            pen = _loop_penalty(init_pos.detach(), loop_d, loop_m, num_graphs, objective)
        active = ~(pen == 0)  # NaN counts as active: a broken prediction must not pass silently
        loop_d = _select_edges(loop_d, active[d_graph])
        loop_m = _select_edges(loop_m, active[loop_m[2]])
    x = _adam_solve(init_pos.detach().clone(), loop_d, loop_m, num_graphs, steps, lr, objective, lr_decay)
    with torch.no_grad():
        dd, dr = distances(x)
        res_d = per_graph_mean((dd - mu_d).abs(), d_graph, num_graphs)
        res_r = per_graph_mean((dr - mu_r).abs(), r_graph, num_graphs)
    return SolveResult(positions=x.detach(), displace_residual=res_d, relaxed_residual=res_r)
