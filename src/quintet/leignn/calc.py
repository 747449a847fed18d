"""``LEIGNNCalculator``: an ASE calculator backed by a trained LEIGNN model file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from quintet.atomistic.calculator import ModelCalculator
from quintet.leignn.model import LEIGNN

__all__ = ["LEIGNNCalculator", "calculator"]


class LEIGNNCalculator(ModelCalculator):
    """Energy, forces (and stress for conservative models) from an LEIGNN model.

    Elements the model was not trained on raise a ``ValueError`` before any computation. The neighbour
    list is a Verlet list with ``skin`` Å of buffer (default 0.5), rebuilt only when an atom has moved more
    than half of it (:class:`~quintet.atomistic.neighbors.VerletList`).
    """

    def __init__(self, model: LEIGNN, device: str | torch.device = "cpu", **kwargs: Any) -> None:
        kwargs.setdefault("cutoff", model.config.cutoff)
        kwargs.setdefault("max_neighbors", model.config.max_neighbors)
        super().__init__(
            model,
            device=device,
            stress=model.config.forces == "conservative",
            check=model.check_elements,
            **kwargs,
        )

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str | torch.device = "cpu", **kwargs: Any
    ) -> LEIGNNCalculator:
        """Load a model file written by ``quintet leignn train`` (``weights_only=True``)."""
        from quintet.leignn.run import load_model

        return cls(load_model(path, device), device=device, **kwargs)


def calculator(model: str | Path, device: str | torch.device = "cpu", **kwargs: Any) -> Any:
    """The one-call API: an ASE calculator from a model file, a pretrained name or an exported TorchScript
    file (``quintet leignn export``): ``atoms.calc = quintet.leignn.calculator("best.pt")``."""
    from quintet.leignn.export import exported_calculator, is_exported

    if Path(model).is_file() and is_exported(model):
        return exported_calculator(model, device, **kwargs)
    return LEIGNNCalculator.from_checkpoint(model, device, **kwargs)
