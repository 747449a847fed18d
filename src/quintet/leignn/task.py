"""LEIGNN training objective: weighted L1 (or MSE) on energies, forces and stress, metrics in meV.

Loss = w_E · L(E) + w_F · L(F) [+ w_σ · L(σ)], as in the paper's scripts (ISO17/OC20: w_E = 1,
w_F = 50; periodic liquids/solids: 0.001 / 0.999). Each error is multiplied by its frame's weight
(``config_weight``, 1 by default) before the mean, as MACE does. Atoms flagged ``FIXED`` are left
out of the force terms. The stress term (periodic frames, conservative models) compares the virial
stress σ = (1/V) ∂E/∂ε with the labels, in eV/Å³.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from quintet.atomistic import keys as K
from quintet.leignn.data import WEIGHT
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
        stress_weight: weight of the stress term (0: no stress; > 0 needs ``model.forces=conservative``
            and fully periodic frames with stress labels).
    """

    energy_weight: float = 1.0
    force_weight: float = 50.0
    kind: Literal["l1", "mse"] = "l1"
    energy_per_atom: bool = False
    stress_weight: float = 0.0

    def __post_init__(self) -> None:
        if min(self.energy_weight, self.force_weight, self.stress_weight) < 0:
            raise ValueError("loss.energy_weight, loss.force_weight and loss.stress_weight must be >= 0")


class PotentialTask(Task):
    """Energy + force regression for :class:`~quintet.leignn.model.LEIGNN` (and any model with its outputs)."""

    def __init__(self, model: LEIGNN, loss: LossConfig | None = None) -> None:
        super().__init__(model)
        self.loss_cfg = loss or LossConfig()
        self.grad_in_eval = getattr(model.config, "forces", "direct") == "conservative"
        if self.loss_cfg.stress_weight > 0 and not self.grad_in_eval:
            raise ValueError("loss.stress_weight > 0 needs model.forces=conservative (stress is dE/dstrain)")

    def on_fit_start(self, train_dataset: Any) -> None:
        """Fit the energy reference and force scale on the training set (once; kept on resume)."""
        if not self.model.normalisation.fitted:
            self.model.fit_normalisation(train_dataset[i] for i in range(len(train_dataset)))

    def step(self, batch: Mapping[str, Tensor], split: str) -> StepOutput:
        cfg = self.loss_cfg
        with_stress = cfg.stress_weight > 0
        out = self.model(batch, compute_stress=True) if with_stress else self.model(batch)
        metrics = potential_errors(out, batch)
        n_atoms = batch[K.NUM_ATOMS].to(out[K.ENERGY].dtype)
        de = out[K.ENERGY] - batch[K.ENERGY]
        if cfg.energy_per_atom:
            de = de / n_atoms
        df = out[K.FORCES] - batch[K.FORCES]
        w = batch[WEIGHT].to(de.dtype) if WEIGHT in batch else None
        w_atom = None if w is None else w[batch[K.BATCH]].unsqueeze(-1)
        if K.FIXED in batch:
            df = df[~batch[K.FIXED]]
            w_atom = None if w_atom is None else w_atom[~batch[K.FIXED]]
        loss = cfg.energy_weight * _reduce(de, w, cfg.kind) + cfg.force_weight * _reduce(df, w_atom, cfg.kind)
        if with_stress:
            ds = (out[K.STRESS] - batch[K.STRESS]).reshape(-1, 9)
            loss = loss + cfg.stress_weight * _reduce(ds, None if w is None else w.unsqueeze(-1), cfg.kind)
        return StepOutput(loss=loss, metrics=metrics, batch_size=int(n_atoms.numel()))


def _reduce(err: Tensor, weight: Tensor | None, kind: str) -> Tensor:
    """Mean of |err| (l1) or err² (mse), each element multiplied by its frame's weight first."""
    e = err.abs() if kind == "l1" else err.pow(2)
    return (e if weight is None else e * weight).mean()


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
            **stress_errors(out, batch),
        }


def stress_errors(out: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Stress MAE in meV/Å³ when both the prediction and the labels carry stress (else nothing)."""
    if K.STRESS not in out or K.STRESS not in batch:
        return {}
    return {"stress_mae_meV_A3": 1000 * (out[K.STRESS] - batch[K.STRESS]).detach().abs().mean()}
