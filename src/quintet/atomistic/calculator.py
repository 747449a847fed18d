"""An ASE ``Calculator`` for any quintet energy(/forces/stress) model.

The model is called on a one-structure batch built from the ``Atoms``. Given the model's ``cutoff``, the
calculator keeps a Verlet neighbour list (:class:`~quintet.atomistic.neighbors.VerletList`, ``skin`` Å of
buffer) that is rebuilt only when an atom has moved more than half the skin or the cell changed; without a
cutoff the model builds its own list at every call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes
from torch import Tensor

from quintet.atomistic import keys as K
from quintet.atomistic.batch import collate
from quintet.atomistic.neighbors import VerletList
from quintet.atomistic.nn.compile import CompiledModel

__all__ = ["ModelCalculator"]


class ModelCalculator(Calculator):
    """Wrap ``model(batch, compute_stress=...) -> {ENERGY, FORCES[, STRESS]}`` as an ASE calculator.

    Args:
        model: a quintet potential (``nn.Module``); put in eval mode.
        dtype: float dtype used for the model's inputs (the model's parameter dtype by default).
        device: where the model runs.
        stress: whether the model can return stress (conservative models only).
        check: called on the atomic numbers before any computation (e.g. to reject unknown elements).
        compile: run the model through ``torch.compile`` (:class:`~quintet.atomistic.nn.CompiledModel`;
            eager again, with a warning, if compiling fails). The first call compiles (tens of seconds);
            later calls are faster on periodic cells of tens of atoms or more, slower on small molecules.
        cutoff: the model's neighbour cutoff, Å: the calculator then keeps the neighbour list itself.
        skin: Verlet buffer of that list, Å (0: a fresh list every call; with ``compile`` the model builds
            its own list every call).
        max_neighbors: the model's nearest-k truncation (a fresh list every call when set).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]  # noqa: RUF012

    def __init__(
        self,
        model: torch.nn.Module,
        dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
        stress: bool = True,
        check: Callable[[Tensor], None] | None = None,
        compile: bool = False,
        cutoff: float | None = None,
        skin: float = 0.5,
        max_neighbors: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # a compiled model was traced building its own graph: it keeps doing so
        self.neighbors = VerletList(cutoff, skin, max_neighbors) if cutoff is not None and not compile else None
        model = model.to(device).eval()
        self.model: Any = CompiledModel(model) if compile else model
        params = list(model.parameters())
        self.dtype = dtype or (params[0].dtype if params else torch.get_default_dtype())
        self.device = torch.device(device)
        self.supports_stress = stress
        self.check = check

    def _batch(self, atoms: Any) -> dict[str, Tensor]:
        if len(atoms) == 0:
            raise ValueError("empty structure: no atoms")
        pos = np.asarray(atoms.get_positions(), dtype=np.float64)
        if not np.isfinite(pos).all():
            raise ValueError("positions contain NaN or inf")
        rec = {
            K.POSITIONS: torch.tensor(pos, dtype=self.dtype, device=self.device),
            K.ATOMIC_NUMBERS: torch.tensor(atoms.get_atomic_numbers(), dtype=torch.long, device=self.device),
            K.CELL: torch.tensor(np.asarray(atoms.cell.array), dtype=self.dtype, device=self.device),
            K.PBC: torch.tensor(np.asarray(atoms.pbc), dtype=torch.bool, device=self.device),
        }
        if self.check is not None:
            self.check(rec[K.ATOMIC_NUMBERS])
        if self.neighbors is not None:
            ei, sh = self.neighbors(pos, np.asarray(atoms.cell.array), np.asarray(atoms.pbc))
            rec[K.EDGE_INDEX] = torch.from_numpy(ei).to(self.device)
            rec[K.EDGE_SHIFT] = torch.from_numpy(sh).to(device=self.device, dtype=self.dtype)
        return collate([rec])

    def predict(self, atoms: Any, stress: bool = False) -> Mapping[str, Tensor]:
        """Raw model outputs for ``atoms`` (tensors).

        Parameters are excluded from autograd during the call (restored afterwards): conservative
        models differentiate with respect to positions only, and direct models build no graph.
        """
        batch = self._batch(atoms)
        params = [p for p in self.model.parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        try:
            return self.model(batch, compute_stress=stress)
        finally:
            for p in params:
                p.requires_grad_(True)

    def calculate(
        self,
        atoms: Any = None,
        properties: list[str] | tuple[str, ...] = ("energy",),
        system_changes: list[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        want_stress = "stress" in properties
        if want_stress and not self.supports_stress:
            raise NotImplementedError("this model has no stress (train it with forces='conservative')")
        if want_stress and not self.atoms.pbc.all():
            raise ValueError("stress needs a fully periodic cell")
        out = self.predict(self.atoms, stress=want_stress)
        energy = float(out[K.ENERGY].detach().sum())
        self.results["energy"] = energy
        self.results["free_energy"] = energy
        self.results["forces"] = out[K.FORCES].detach().cpu().double().numpy().reshape(-1, 3)
        if want_stress:
            s = out[K.STRESS].detach().cpu().double().numpy().reshape(3, 3)
            self.results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
