"""The DefiNet training task: mean Euclidean position error over real atoms, coordinate metrics.

Logged metrics (per split, averaged over structures):

- ``loss``: mean ‖r̂ − r‖ over real atoms (vacancy placeholders excluded), Å; with
  ``supervise_all_layers`` the mean of that error over every layer's positions;
- ``coord_mae``: per-structure mean |Δ| over Cartesian components, Å (the paper's metric);
- ``dummy_coord_mae``: the same for the unrelaxed input (the "dummy" baseline);
- ``ratio_vs_dummy``: ``coord_mae / dummy_coord_mae`` of the batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from quintet.atomistic import keys as K
from quintet.definet.metrics import coord_mae_per_structure, position_loss, real_atom_mask
from quintet.definet.model import PRED_POSITIONS, DefiNet
from quintet.train.task import StepOutput, Task

__all__ = ["DefiNetTask"]


class DefiNetTask(Task):
    """Wraps a :class:`~quintet.definet.model.DefiNet` for :func:`quintet.train.fit`.

    Args:
        model: the network.
        supervise_all_layers: average the position loss over the output of every layer (an option
            of the paper's code; only the last layer is supervised by default).
    """

    def __init__(self, model: DefiNet, supervise_all_layers: bool = False) -> None:
        super().__init__(model)
        self.supervise_all_layers = supervise_all_layers

    def step(self, batch: dict[str, Tensor], split: str) -> StepOutput:
        """Loss and coordinate metrics of one batch of records with ``RELAXED_POSITIONS``."""
        if K.RELAXED_POSITIONS not in batch:
            raise ValueError("DefiNet training needs relaxed positions (RELAXED_POSITIONS) in every record")
        out = self.model(batch, return_layers=self.supervise_all_layers)
        pred = out[PRED_POSITIONS]
        target = batch[K.RELAXED_POSITIONS]
        defect = batch.get(K.DEFECT, torch.zeros_like(batch[K.ATOMIC_NUMBERS]))
        mask = real_atom_mask(defect)
        if self.supervise_all_layers:
            loss = torch.stack([position_loss(p, target, mask) for p in out["layer_positions"]]).mean()
        else:
            loss = position_loss(pred, target, mask)
        num_graphs = int(batch[K.NUM_ATOMS].shape[0])
        with torch.no_grad():
            mae = coord_mae_per_structure(pred, target, mask, batch[K.BATCH], num_graphs)
            dummy = coord_mae_per_structure(batch[K.POSITIONS], target, mask, batch[K.BATCH], num_graphs)
            metrics = {
                "pos_err": position_loss(pred, target, mask).detach(),
                "coord_mae": torch.nanmean(mae),
                "dummy_coord_mae": torch.nanmean(dummy),
                "ratio_vs_dummy": torch.nanmean(mae) / torch.nanmean(dummy).clamp_min(1e-12),
            }
        return StepOutput(loss=loss, metrics=metrics, batch_size=num_graphs)

    def export_extra(self) -> dict[str, Any]:
        """The architecture, so :func:`quintet.definet.predict.load_definet` can rebuild the model."""
        import dataclasses

        return {"model": dataclasses.asdict(self.model.cfg), "system": "definet"}
