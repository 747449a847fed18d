"""One-shot relaxation of a batch: network forward pass + batched distance-geometry solve."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from quintet.atomistic import keys as K
from quintet.deeprelax import model as M
from quintet.deeprelax.graph import DISPLACE
from quintet.deeprelax.maths import per_atom_uncertainty, per_graph_mean
from quintet.deeprelax.solve import solve_positions

__all__ = ["SolveConfig", "relax_batch", "sigma_from_log_b"]


@dataclass
class SolveConfig:
    """Settings of the coordinate solve (published: hinge, Adam lr 0.1, 100 steps, σ = exp(clamp(log b, -5, 2))).

    Attributes:
        steps: Adam iterations.
        lr: Adam learning rate (Å).
        objective: ``"hinge"`` (band penalty, published) or ``"laplace"`` (|d - mu| / σ).
        lr_decay: cosine-decay the learning rate over the steps (not in the paper; lets Adam settle).
        skip_converged: leave structures whose start is inside all bands out of the loop (hinge only;
            same result, their solve costs nothing).
        log_b_min: lower clamp of log b when turning it into σ.
        log_b_max: upper clamp of log b.
    """

    steps: int = 100
    lr: float = 0.1
    objective: Literal["hinge", "laplace"] = "hinge"
    lr_decay: bool = True
    skip_converged: bool = True
    log_b_min: float = -5.0
    log_b_max: float = 2.0


def sigma_from_log_b(log_b: Tensor, cfg: SolveConfig) -> Tensor:
    """σ = exp(clamp(log b)), the Laplace scale in Å."""
    return torch.exp(log_b.clamp(cfg.log_b_min, cfg.log_b_max))


@torch.no_grad()
def relax_batch(
    model: M.DeepRelax, batch: dict[str, Tensor], solve: SolveConfig | None = None
) -> dict[str, Tensor]:
    """Predict relaxed structures for a collated batch of unrelaxed ones.

    Returns:
        dict with ``positions`` (N, 3), ``cell`` (B, 3, 3), ``atom_uncertainty`` (N,) Å (mean σ of
        the distances centred on each atom: its displace edges and its edges in the relaxed cell),
        ``uncertainty`` (B,) (mean over atoms),
        ``displace_residual`` / ``relaxed_residual`` (B,) (mean |solved - predicted| distance, Å), and
        the raw predictions (``mu_*``, ``sigma_*``, edges) for evaluation.
    """
    solve = solve or SolveConfig()
    out = model(batch)
    ei, shift, disp = out[K.EDGE_INDEX], out[K.EDGE_SHIFT], out[DISPLACE]
    sig_d = sigma_from_log_b(out[M.LOG_B_DISPLACE], solve)
    sig_r = sigma_from_log_b(out[M.LOG_B_RELAXED], solve)
    pos = batch[K.POSITIONS]
    cell = batch[K.CELL].reshape(-1, 3, 3)
    num_graphs = cell.shape[0]
    res = solve_positions(
        init_pos=out[M.INIT_POS],
        anchor_pos=pos,
        anchor_cell=cell,
        cell=out[M.PRED_CELL],
        edge_index=ei,
        shift=shift,
        displace=disp,
        batch=batch[K.BATCH],
        num_graphs=num_graphs,
        mu_displace=out[M.MU_DISPLACE],
        sigma_displace=sig_d,
        mu_relaxed=out[M.MU_RELAXED],
        sigma_relaxed=sig_r,
        steps=solve.steps,
        lr=solve.lr,
        objective=solve.objective,
        lr_decay=solve.lr_decay,
        skip_converged=solve.skip_converged,
    )
    # every distance an atom is the centre of (its displace edges and its edges in the relaxed cell)
    atom_unc = per_atom_uncertainty(torch.cat([sig_d, sig_r]), torch.cat([ei[0, disp], ei[0]]), pos.shape[0])
    return {
        "positions": res.positions,
        "cell": out[M.PRED_CELL].detach(),
        "init_positions": out[M.INIT_POS].detach(),
        "atom_uncertainty": atom_unc,
        "uncertainty": per_graph_mean(atom_unc, batch[K.BATCH], num_graphs),
        "displace_residual": res.displace_residual,
        "relaxed_residual": res.relaxed_residual,
        "mu_displace": out[M.MU_DISPLACE],
        "sigma_displace": sig_d,
        "mu_relaxed": out[M.MU_RELAXED],
        "sigma_relaxed": sig_r,
        K.EDGE_INDEX: ei,
        K.EDGE_SHIFT: shift,
        DISPLACE: disp,
    }
