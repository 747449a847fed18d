"""Per-element energy reference and energy/force scales fitted on a training set.

Kept as buffers, so they travel inside every checkpoint. Any energy model (ours or a wrapped
peer) uses the same fit, so comparisons start from the same reference energies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from quintet.atomistic import keys as K

__all__ = ["EnergyNormalisation"]


class EnergyNormalisation(nn.Module):
    """atom energy = ``energy_scale`` · raw + ``energy_shift[Z]``; forces scale = ``force_scale``.

    Args:
        num_elements: largest atomic number.
        reference: ``"per_element"`` (least squares of total energies on element counts),
            ``"mean"`` (mean energy per atom for every element) or ``"none"``.
    """

    def __init__(
        self, num_elements: int = 118, reference: Literal["per_element", "mean", "none"] = "per_element"
    ):
        super().__init__()
        self.num_elements = num_elements
        self.reference = reference
        n = num_elements + 1
        self.register_buffer("energy_shift", torch.zeros(n))
        self.register_buffer("energy_scale", torch.ones(()))
        self.register_buffer("force_scale", torch.ones(()))
        self.register_buffer("known_elements", torch.zeros(n, dtype=torch.bool))

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has run (the model then knows its elements)."""
        return bool(self.known_elements.any())

    @torch.no_grad()
    def fit(self, records: Iterable[Mapping[str, Tensor]]) -> dict[str, float]:
        """Fit on training records (energies and/or forces).

        The force scale is the RMS force component; the energy scale is the force scale (as in
        nequip/MACE), or the RMS per-atom residual energy when there are no forces. A tiny ridge
        keeps the per-element fit well posed when elements always appear in the same ratio.
        """
        counts, energies, natoms, f_sq, f_n = [], [], [], 0.0, 0
        seen: set[int] = set()
        for r in records:
            z = r[K.ATOMIC_NUMBERS].cpu().numpy()
            seen.update(int(a) for a in np.unique(z))
            if K.ENERGY in r:
                counts.append(np.bincount(z, minlength=self.num_elements + 1))
                energies.append(float(r[K.ENERGY]))
                natoms.append(len(z))
            if K.FORCES in r:
                f = r[K.FORCES].double()
                f_sq += float((f**2).sum())
                f_n += f.numel()
        if not seen:
            raise ValueError("no training structures to fit the normalisation on")
        els = sorted(seen)
        self.known_elements.zero_()
        self.known_elements[els] = True
        shift = np.zeros(self.num_elements + 1)
        if energies and self.reference != "none":
            e = np.asarray(energies)
            if self.reference == "mean":
                shift[els] = float(np.sum(e) / np.sum(natoms))
            else:
                a = np.asarray(counts, dtype=np.float64)[:, els]
                ata = a.T @ a
                ata += 1e-8 * max(1.0, np.trace(ata) / len(els)) * np.eye(len(els))
                shift[els] = np.linalg.solve(ata, a.T @ e)
        self.energy_shift.copy_(torch.from_numpy(shift).to(self.energy_shift.dtype))
        f_rms = float(np.sqrt(f_sq / f_n)) if f_n else 0.0
        if f_rms > 0:
            e_scale = f_rms
        elif energies:
            resid = np.asarray(energies) - np.asarray(counts) @ shift
            e_scale = float(np.sqrt(np.mean((resid / np.asarray(natoms)) ** 2))) or 1.0
        else:
            e_scale = 1.0
        self.energy_scale.fill_(e_scale)
        self.force_scale.fill_(f_rms if f_rms > 0 else 1.0)
        return {"energy_scale": e_scale, "force_scale": float(self.force_scale), "n_elements": len(els)}

    def check_elements(self, z: Tensor) -> None:
        """Raise a clear ``ValueError`` for atomic numbers out of range or absent from the training set."""
        if z.numel() and (int(z.min()) < 1 or int(z.max()) > self.num_elements):
            raise ValueError(
                f"atomic numbers must lie in 1..{self.num_elements}, got {int(z.min())}..{int(z.max())}"
            )
        if not self.fitted:
            return
        bad = torch.unique(z[~self.known_elements[z]])
        if bad.numel():
            from ase.data import chemical_symbols

            names = ", ".join(chemical_symbols[int(b)] for b in bad)
            known = ", ".join(chemical_symbols[int(b)] for b in torch.nonzero(self.known_elements).flatten())
            raise ValueError(
                f"element(s) {names} were not in this model's training data (trained on: {known})"
            )

    def atom_energy(self, raw: Tensor, z: Tensor) -> Tensor:
        """(N,) raw network outputs → (N,) atom energies in eV."""
        return raw * self.energy_scale.to(raw.dtype) + self.energy_shift[z].to(raw.dtype)
