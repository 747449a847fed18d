"""``Task``: what a model contributes to the shared trainer (a loss and metrics per batch).

A task wraps the network in ``self.model`` and turns one batch into a :class:`StepOutput`. The
trainer owns everything else (optimizer, schedule, EMA, checkpoints, logging). Keep normalisation
statistics in buffers of ``self.model`` so that they travel inside the saved model file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["StepOutput", "Task"]


@dataclasses.dataclass
class StepOutput:
    """The result of one step of a :class:`Task`.

    Attributes:
        loss: scalar loss (differentiable during training).
        metrics: scalar metrics of the batch, logged as ``f"{split}/{name}"`` and averaged over the
            epoch weighted by ``batch_size``. The loss is logged as ``f"{split}/loss"`` unless
            ``metrics`` has its own ``"loss"`` entry.
        batch_size: weight of this batch in the epoch averages (e.g. the number of structures).
    """

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    batch_size: int = 1


class Task(nn.Module):
    """Base class of every trainable task: holds ``self.model`` and defines :meth:`step`.

    Subclasses implement :meth:`step` and may override :meth:`on_fit_start`. Set the class
    attribute ``grad_in_eval = True`` when validation needs autograd (e.g. forces as ``-dE/dr``):
    validation then runs with gradients enabled (weights are not updated).

    Args:
        model: the network being trained; its ``state_dict`` is what the model file stores.
    """

    #: run validation steps with ``torch.enable_grad()`` (forces from energy gradients)
    grad_in_eval: bool = False

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def step(self, batch: Any, split: str) -> StepOutput:
        """Loss and metrics of one batch.

        Args:
            batch: one collated batch, already on the training device.
            split: ``"train"`` or ``"val"``.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement step(batch, split)")

    def on_fit_start(self, train_dataset: Any) -> None:
        """Called once before training (and before a resumed state is loaded), e.g. to compute
        normalisation statistics from ``train_dataset``. The default does nothing."""

    def export_extra(self) -> dict[str, Any]:
        """Plain-typed metadata added to the ``extra`` of the saved model file (default: none)."""
        return {}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Calls ``self.model``."""
        return self.model(*args, **kwargs)


def check_step_output(out: Any, split: str, task: Task) -> StepOutput:
    """Validate what ``task.step`` returned; raise a clear ``TypeError``/``ValueError`` otherwise."""
    name = type(task).__name__
    if not isinstance(out, StepOutput):
        raise TypeError(f"{name}.step must return a StepOutput, got {type(out).__name__}")
    if not isinstance(out.loss, torch.Tensor) or out.loss.numel() != 1:
        raise ValueError(f"{name}.step({split!r}): loss must be a scalar tensor, got {out.loss!r}")
    if not isinstance(out.metrics, Mapping):
        raise TypeError(f"{name}.step({split!r}): metrics must be a dict of scalar tensors")
    if int(out.batch_size) < 1:
        raise ValueError(f"{name}.step({split!r}): batch_size must be >= 1, got {out.batch_size}")
    return out
