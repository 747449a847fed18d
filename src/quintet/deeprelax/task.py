"""DeepRelax as a trainer task: Laplace NLL (displace) + Laplace NLL (relaxed) + L1 (cell)
(+ the position error of the network's first guess, not in the paper: see :class:`LossConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from quintet.atomistic import keys as K
from quintet.deeprelax import model as M
from quintet.deeprelax.graph import DISPLACE
from quintet.deeprelax.inference import SolveConfig, relax_batch
from quintet.deeprelax.maths import displace_distances, edge_lengths, laplace_nll, per_graph_mean
from quintet.train.task import StepOutput, Task

__all__ = ["DeepRelaxTask", "LossConfig", "targets"]


@dataclass
class LossConfig:
    """Loss weights and clamps (published: 1 : 1 : 1, log b clamped to [-3, 3]).

    Attributes:
        displace_weight: weight of the displace-distance Laplace NLL.
        relaxed_weight: weight of the relaxed-distance Laplace NLL.
        cell_weight: weight of the L1 cell loss (mean over the 9 entries, Å), and of the Laplace NLL of
            the cell's scale b_cell (periodic entries; the cell itself detached) when the model has one.
        log_b_min: lower clamp of log b in the loss (-3 in the paper; lower lets the scale follow
            the sub-0.05 Å errors of nearly relaxed inputs).
        log_b_max: upper clamp of log b in the loss.
        position_weight: weight of the mean Euclidean error (Å) of the network's first guess
            ``p = u F + δ`` against the relaxed positions (``residual_base="displaced"`` only; 0 is the
            published loss). The Laplace NLLs reach δ only through distances, with an L1-like,
            scale-free gradient; this term gives it a direct per-atom signal. Its measured effect is
            small but not negative (docs/deeprelax.md, "What differs from the paper").
        solve_in_val: run the coordinate solve during validation and log ``val/coord_mae``.
        solve: solve settings used for validation.
    """

    displace_weight: float = 1.0
    relaxed_weight: float = 1.0
    cell_weight: float = 1.0
    log_b_min: float = -5.0
    log_b_max: float = 3.0
    position_weight: float = 1.0
    solve_in_val: bool = True
    solve: SolveConfig = field(default_factory=SolveConfig)


def targets(
    batch: dict[str, Tensor], edge_index: Tensor, shift: Tensor, disp: Tensor
) -> tuple[Tensor, Tensor]:
    """Training targets: displace distances |r^rel_i - r^unrel_j| and relaxed edge lengths (relaxed cell)."""
    cell_u = batch[K.CELL].reshape(-1, 3, 3)
    cell_r = batch[K.RELAXED_CELL].reshape(-1, 3, 3)
    rel = batch[K.RELAXED_POSITIONS]
    y_d = displace_distances(
        rel, batch[K.POSITIONS], cell_u, edge_index[:, disp], shift[disp], batch[K.BATCH]
    )
    y_r = edge_lengths(rel, cell_r, edge_index, shift, batch[K.BATCH])
    return y_d, y_r


class DeepRelaxTask(Task):
    """Trainer task for :class:`~quintet.deeprelax.model.DeepRelax`.

    Metrics (per split): ``disp_mae`` / ``rel_mae`` (distance MAE, Å), ``cell_mae`` (Å),
    ``dummy_rel_mae`` / ``dummy_cell_mae`` (the unrelaxed input as prediction) and, in validation with
    ``solve_in_val``, ``coord_mae`` / ``dummy_coord_mae`` (Å, after the coordinate solve).
    """

    def __init__(self, model: M.DeepRelax, loss: LossConfig | None = None) -> None:
        super().__init__(model)
        self.loss_cfg = loss or LossConfig()

    def export_extra(self) -> dict[str, Any]:
        """The architecture, so :func:`quintet.load_model` can rebuild the model."""
        return {"system": "deeprelax", "model": self.model.config_dict()}

    def step(self, batch: dict[str, Tensor], split: str) -> StepOutput:
        c = self.loss_cfg
        out = self.model(batch)
        ei, shift, disp = out[K.EDGE_INDEX], out[K.EDGE_SHIFT], out[DISPLACE]
        y_d, y_r = targets(batch, ei, shift, disp)
        nll_d = laplace_nll(out[M.MU_DISPLACE], out[M.LOG_B_DISPLACE], y_d, c.log_b_min, c.log_b_max)
        nll_r = laplace_nll(out[M.MU_RELAXED], out[M.LOG_B_RELAXED], y_r, c.log_b_min, c.log_b_max)
        cell_r = batch[K.RELAXED_CELL].reshape(-1, 3, 3)
        cell_u = batch[K.CELL].reshape(-1, 3, 3)
        cell_err = (out[M.PRED_CELL] - cell_r).abs().mean()
        zero = out[M.MU_RELAXED].sum() * 0
        loss = (
            c.displace_weight * (nll_d.mean() if nll_d.numel() else zero)
            + c.relaxed_weight * (nll_r.mean() if nll_r.numel() else zero)
            + c.cell_weight * cell_err
        )
        num_graphs = cell_u.shape[0]
        cell_nll = None
        if M.LOG_B_CELL in out:  # the cell's Laplace scale, on the detached cell (its L1 above is unchanged)
            per = batch[K.PBC].reshape(-1, 3).to(cell_r.dtype)
            entry = per.unsqueeze(-1) * per.unsqueeze(-2)  # (B, 3, 3) entries the cell head may change
            nll = laplace_nll(
                out[M.PRED_CELL].detach(), out[M.LOG_B_CELL][:, None, None].expand_as(cell_r), cell_r,
                c.log_b_min, c.log_b_max,
            )  # fmt: skip
            if entry.sum() > 0:
                cell_nll = (nll * entry).sum() / entry.sum()
                loss = loss + c.cell_weight * cell_nll
        init = out[M.INIT_POS]
        # Euclidean error with a 1e-6 Å floor: finite gradient when the guess is exact
        guess_err = ((init - batch[K.RELAXED_POSITIONS]).square().sum(-1) + 1e-12).sqrt()
        if c.position_weight and init.requires_grad:
            loss = loss + c.position_weight * per_graph_mean(guess_err, batch[K.BATCH], num_graphs).mean()
        with torch.no_grad():
            d_unrel = edge_lengths(batch[K.POSITIONS], cell_u, ei, shift, batch[K.BATCH])
            metrics = {
                "disp_mae": (out[M.MU_DISPLACE] - y_d).abs().mean() if y_d.numel() else zero.detach(),
                "rel_mae": (out[M.MU_RELAXED] - y_r).abs().mean() if y_r.numel() else zero.detach(),
                "dummy_rel_mae": (d_unrel - y_r).abs().mean() if y_r.numel() else zero.detach(),
                "cell_mae": cell_err.detach(),
                **(
                    {"cell_sigma": out[M.LOG_B_CELL].clamp(c.log_b_min, c.log_b_max).exp().mean()}
                    if cell_nll is not None
                    else {}
                ),
                "dummy_cell_mae": (cell_u - cell_r).abs().mean(),
                "guess_mae": per_graph_mean(
                    (init - batch[K.RELAXED_POSITIONS]).abs().mean(-1), batch[K.BATCH], num_graphs
                ).mean(),
            }
            if split != "train" and c.solve_in_val:
                res = relax_batch(self.model, batch, c.solve)
                err = (res["positions"] - batch[K.RELAXED_POSITIONS]).abs().mean(-1)
                dummy = (batch[K.POSITIONS] - batch[K.RELAXED_POSITIONS]).abs().mean(-1)
                metrics["coord_mae"] = per_graph_mean(err, batch[K.BATCH], num_graphs).mean()
                metrics["dummy_coord_mae"] = per_graph_mean(dummy, batch[K.BATCH], num_graphs).mean()
        return StepOutput(loss=loss, metrics=metrics, batch_size=num_graphs)
