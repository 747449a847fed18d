"""LEIGNN training objective: weighted L1 (or MSE) on energies and forces, metrics in meV.

Loss = w_E · L(E) + w_F · L(F), as in the paper's scripts (ISO17/OC20: w_E = 1, w_F = 50;
periodic liquids/solids: 0.001 / 0.999). Atoms flagged ``FIXED`` are left out of the force terms.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from quintet.atomistic import keys as K
from quintet.leignn.model import LEIGNN
from quintet.train import StepOutput, Task

__all__ = ["LossConfig", "PotentialTask"]


@dataclass
class LossConfig:
    """Loss weights and form.

    Args:
        energy_weight: weight of the energy term.
        force_weight: weight of the force term.
        kind: ``"l1"`` (paper) or ``"mse"``.
        energy_per_atom: compare energies per atom (useful when structure sizes vary).
    """

    energy_weight: float = 1.0
    force_weight: float = 50.0
    kind: Literal["l1", "mse"] = "l1"
    energy_per_atom: bool = False


class PotentialTask(Task):
    """Energy + force regression for :class:`~quintet.leignn.model.LEIGNN` (and any model with its outputs)."""

    def __init__(self, model: LEIGNN, loss: LossConfig | None = None) -> None:
        super().__init__(model)
        self.loss_cfg = loss or LossConfig()
        self.grad_in_eval = getattr(model.config, "forces", "direct") == "conservative"

    def on_fit_start(self, train_dataset: Any) -> None:
        """Fit the energy reference and force scale on the training set (once; kept on resume)."""
        if not self.model.normalisation.fitted:
            self.model.fit_normalisation(train_dataset[i] for i in range(len(train_dataset)))

    def step(self, batch: Mapping[str, Tensor], split: str) -> StepOutput:
        out = self.model(batch)
        metrics = potential_errors(out, batch)
        cfg = self.loss_cfg
        n_atoms = batch[K.NUM_ATOMS].to(out[K.ENERGY].dtype)
        de = out[K.ENERGY] - batch[K.ENERGY]
        if cfg.energy_per_atom:
            de = de / n_atoms
        df = out[K.FORCES] - batch[K.FORCES]
        if K.FIXED in batch:
            df = df[~batch[K.FIXED]]
        if cfg.kind == "l1":
            loss = cfg.energy_weight * de.abs().mean() + cfg.force_weight * df.abs().mean()
        else:
            loss = cfg.energy_weight * de.pow(2).mean() + cfg.force_weight * df.pow(2).mean()
        return StepOutput(loss=loss, metrics=metrics, batch_size=int(n_atoms.numel()))


def potential_errors(out: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Energy MAE per atom (meV/atom), energy MAE per structure (meV) and force MAE/RMSE (meV/Å)."""
    with torch.no_grad():
        n = batch[K.NUM_ATOMS].to(out[K.ENERGY].dtype)
        de = (out[K.ENERGY] - batch[K.ENERGY]).detach()
        df = (out[K.FORCES] - batch[K.FORCES]).detach()
        if K.FIXED in batch:
            df = df[~batch[K.FIXED]]
        return {
            "energy_mae_meV_atom": 1000 * (de.abs() / n).mean(),
            "energy_mae_meV": 1000 * de.abs().mean(),
            "force_mae_meV_A": 1000 * df.abs().mean(),
            "force_rmse_meV_A": 1000 * df.pow(2).mean().sqrt(),
        }
