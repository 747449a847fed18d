"""One-shot relaxation of a batch: network forward pass + batched distance-geometry solve."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from quintet.atomistic import keys as K
from quintet.deeprelax import model as M
from quintet.deeprelax.graph import DISPLACE
from quintet.deeprelax.maths import per_atom_uncertainty, per_graph_mean
from quintet.deeprelax.solve import solve_positions

__all__ = ["SolveConfig", "cell_share", "check_ensemble", "relax_batch", "relax_ensemble", "sigma_from_log_b", "uncertainty_scale"]


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


GRAPH_FIELDS = ("cutoff", "max_neighbors", "max_displace", "canonical_cell")  # ensemble members must agree


def check_ensemble(models: Sequence[M.DeepRelax]) -> None:
    """Raise ``ValueError`` unless ``models`` is a non-empty list of models that build the same edges."""
    if not models:
        raise ValueError("an ensemble needs at least one model")
    ref = {f: getattr(models[0].cfg, f) for f in GRAPH_FIELDS}
    for k, m in enumerate(models[1:], start=1):
        got = {f: getattr(m.cfg, f) for f in GRAPH_FIELDS}
        if got != ref:
            raise ValueError(
                f"ensemble member {k} builds other edges than member 0 ({got} vs {ref}); members must share "
                f"{', '.join(GRAPH_FIELDS)}"
            )


def _combine(outs: list[dict[str, Tensor]], solve: SolveConfig) -> dict[str, Tensor]:
    """Members' predictions -> one: mean μ, cell and first guess; each distance's scale moment-matched.

    A mixture of Laplace(μ_m, b_m) has variance mean(2 b_m²) + var(μ_m); the Laplace with the same
    variance has b = sqrt(mean(b_m²) + var(μ_m) / 2), the members' own scale plus their disagreement.
    ``atom_spread`` is the RMS distance of the members' first guesses from their mean, per atom (Å).
    """
    out = {k: outs[0][k] for k in (K.EDGE_INDEX, K.EDGE_SHIFT, DISPLACE)}
    for mu_key, lb_key, sig_key in (
        (M.MU_DISPLACE, M.LOG_B_DISPLACE, "sigma_displace"),
        (M.MU_RELAXED, M.LOG_B_RELAXED, "sigma_relaxed"),
    ):
        mu = torch.stack([o[mu_key] for o in outs])
        b = torch.stack([sigma_from_log_b(o[lb_key], solve) for o in outs])
        out[mu_key] = mu.mean(0)
        out[sig_key] = b[0] if len(outs) == 1 else ((b**2).mean(0) + mu.var(0, correction=0) / 2).sqrt()
    init = torch.stack([o[M.INIT_POS] for o in outs])
    out[M.INIT_POS] = init.mean(0)
    out[M.PRED_CELL] = torch.stack([o[M.PRED_CELL] for o in outs]).mean(0)
    out["atom_spread"] = ((init - out[M.INIT_POS]) ** 2).sum(-1).mean(0).sqrt()
    if all(M.LOG_B_CELL in o for o in outs):  # the cell's scale, moment-matched the same way
        cells = torch.stack([o[M.PRED_CELL] for o in outs])  # (M, B, 3, 3)
        bc = torch.stack([sigma_from_log_b(o[M.LOG_B_CELL], solve) for o in outs])  # (M, B)
        disagreement = cells.var(0, correction=0).mean((-1, -2))  # (B,) over the 9 entries
        out["sigma_cell"] = bc[0] if len(outs) == 1 else ((bc**2).mean(0) + disagreement / 2).sqrt()
    return out


def uncertainty_scale(models: Sequence[M.DeepRelax]) -> float:
    """The factor on every reported σ: the mean of the members' ``uncertainty_scale`` (1 when uncalibrated).

    A model file calibrated on held-out pairs (:func:`quintet.deeprelax.jobs.calibrate`; ``train`` does it
    on its validation split) stores the factor that makes the bands ``mu ± σ`` hold their nominal share of
    true distances; the coordinate solve still uses the network's own σ, so positions do not change.
    """
    return float(sum(getattr(m, "uncertainty_scale", 1.0) for m in models) / len(models))


def cell_share(sigma_cell: Tensor, pos: Tensor, cell: Tensor, pbc: Tensor, batch: Tensor) -> Tensor:
    """(N,) the cell's share of each atom's uncertainty, Å: ``b_cell · |f_i|``.

    An atom at fractional coordinates f (periodic directions only) moves by f · ΔC when the cell is off
    by ΔC; with every entry of ΔC Laplace(0, b_cell) its position error has the Laplace scale
    b_cell |f|, so atoms far from the origin inherit more of the cell's uncertainty.
    """
    box = M.safe_box(cell)
    frac = torch.linalg.solve(box.transpose(-1, -2)[batch], pos.unsqueeze(-1)).squeeze(-1)
    frac = frac * pbc.reshape(-1, 3).to(pos.dtype)[batch]
    return sigma_cell[batch] * torch.linalg.vector_norm(frac, dim=-1)


def _atom_uncertainty(
    out: dict[str, Tensor], batch: dict[str, Tensor], sig_d: Tensor, sig_r: Tensor, scale: float
) -> tuple[Tensor, Tensor]:
    """(N,) each atom's uncertainty: the mean σ of every distance it is the centre of (its displace edges and
    its edges in the relaxed cell), with the cell's share added in quadrature; and (B,) the cell's scale."""
    ei, disp, pos = out[K.EDGE_INDEX], out[DISPLACE], batch[K.POSITIONS]
    atom_unc = per_atom_uncertainty(torch.cat([sig_d, sig_r]), torch.cat([ei[0, disp], ei[0]]), pos.shape[0])
    cell = batch[K.CELL].reshape(-1, 3, 3)
    sigma_cell = out.get("sigma_cell", pos.new_zeros(cell.shape[0])) * scale
    if "sigma_cell" in out:  # Laplace scales of independent parts add in quadrature
        atom_unc = (atom_unc**2 + cell_share(sigma_cell, pos, cell, batch[K.PBC], batch[K.BATCH]) ** 2).sqrt()
    return atom_unc, sigma_cell


@torch.no_grad()
def relax_ensemble(
    models: Sequence[M.DeepRelax], batch: dict[str, Tensor], solve: SolveConfig | None = None
) -> dict[str, Tensor]:
    """Predict relaxed structures for a collated batch with a deep ensemble (one model or several).

    Every member predicts the distance bands, the cell and a first guess on the same edges; the
    predictions are combined (:func:`_combine`: mean μ, moment-matched σ, mean cell and first guess)
    and the coordinates come from **one** solve of the combined bands, so an ensemble of M costs M
    forward passes and a single solve. With one model this is :func:`relax_batch`.

    With a cell scale (``ModelConfig.cell_uncertainty``) each atom's uncertainty also carries the cell's
    share, ``sqrt(σ_atom² + (b_cell |f|)²)`` (:func:`cell_share`), and ``cell_uncertainty`` (B,) is b_cell
    (moment-matched over members like the distances' σ; 0 without the head).

    Returns:
        what :func:`relax_batch` returns, plus ``atom_spread`` (N,) and ``spread`` (B,): how far the
        members' first guesses lie from their mean (RMS per atom, Å; 0 for one model), an epistemic
        uncertainty that the Laplace scales of a single model do not carry.
    """
    solve = solve or SolveConfig()
    models = list(models)
    check_ensemble(models)
    batch = M.ensure_graph(batch, models[0].cfg)  # built once, shared by the members
    out = _combine([m(batch) for m in models], solve)
    ei, shift, disp = out[K.EDGE_INDEX], out[K.EDGE_SHIFT], out[DISPLACE]
    sig_d, sig_r = out["sigma_displace"], out["sigma_relaxed"]
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
    # the solve used the network's σ; what is reported is calibrated (:func:`uncertainty_scale`)
    scale = uncertainty_scale(models)
    sig_d, sig_r = sig_d * scale, sig_r * scale
    atom_unc, sigma_cell = _atom_uncertainty(out, batch, sig_d, sig_r, scale)
    return {
        "cell_uncertainty": sigma_cell,
        "positions": res.positions,
        "cell": out[M.PRED_CELL].detach(),
        "init_positions": out[M.INIT_POS].detach(),
        "atom_uncertainty": atom_unc,
        "uncertainty": per_graph_mean(atom_unc, batch[K.BATCH], num_graphs),
        "atom_spread": out["atom_spread"],
        "spread": per_graph_mean(out["atom_spread"], batch[K.BATCH], num_graphs),
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


def relax_batch(
    model: M.DeepRelax, batch: dict[str, Tensor], solve: SolveConfig | None = None
) -> dict[str, Tensor]:
    """Predict relaxed structures for a collated batch of unrelaxed ones with one model.

    Returns:
        dict with ``positions`` (N, 3), ``cell`` (B, 3, 3), ``atom_uncertainty`` (N,) Å (mean σ of
        the distances centred on each atom: its displace edges and its edges in the relaxed cell),
        ``uncertainty`` (B,) (mean over atoms),
        ``displace_residual`` / ``relaxed_residual`` (B,) (mean |solved - predicted| distance, Å), and
        the raw predictions (``mu_*``, ``sigma_*``, edges) for evaluation (and the ensemble's
        ``atom_spread`` / ``spread``, zero here; see :func:`relax_ensemble`).
    """
    return relax_ensemble([model], batch, solve)
