"""The LEIGNN model (materials spec §2.2) and its ablations as configurations of one class.

- ``variant="leignn"``: gated ("NMU") update + global scalar/vector virtual node (the paper).
- ``variant="vanilla"``: PaiNN update, no global node.  ``variant="vanilla_nmu"``: NMU, no global node.

Forces are either ``"direct"`` (a bias-free linear map of the vector features, as published; not
conservative) or ``"conservative"`` (F = −∂E/∂r by autograd, our option; needed for energy-
conserving MD). In conservative mode the stress of periodic cells is the derivative of the energy
with respect to a homogeneous strain, σ = (1/V) ∂E/∂ε (ASE sign convention).

The energy is Σ_atoms (scale · MLP(x_i) + shift[Z_i]); the per-element shifts, the scale and the
force scale are fitted on the training set (:meth:`LEIGNN.fit_normalisation`) and live in the
model's buffers, hence in every checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from quintet.atomistic import keys as K
from quintet.atomistic.neighbors import batch_neighbor_list, edge_vectors
from quintet.atomistic.nn import (
    AtomEmbedding,
    RadialBasis,
    ScalarReadout,
    ScalarVectorBackbone,
    VectorReadout,
)
from quintet.atomistic.nn.scatter import scatter_sum

__all__ = ["LEIGNN", "LEIGNNModelConfig"]

Variant = Literal["leignn", "vanilla", "vanilla_nmu"]


@dataclass
class LEIGNNModelConfig:
    """Architecture of an LEIGNN model.

    The paper uses hidden 512, 4 layers, 128 RBFs (≈19 M parameters); the defaults here are a
    CPU-friendly size. ``cutoff`` in Å; ``max_neighbors`` keeps the nearest per atom (paper: 20 for
    molecules / OC20, 50 for periodic liquids and solids; ``None`` keeps all within the cutoff).
    ``energy_reference``: ``"per_element"`` (least-squares reference energy per element),
    ``"mean"`` (mean energy per atom) or ``"none"``.
    """

    hidden: int = 128
    num_layers: int = 4
    num_rbf: int = 64
    cutoff: float = 5.0
    max_neighbors: int | None = None
    variant: Variant = "leignn"
    forces: Literal["direct", "conservative"] = "direct"
    energy_reference: Literal["per_element", "mean", "none"] = "per_element"
    num_elements: int = 118

    def __post_init__(self) -> None:
        if self.hidden < 2 or self.num_layers < 1 or self.num_rbf < 1:
            raise ValueError("hidden >= 2, num_layers >= 1 and num_rbf >= 1 are required")
        if self.cutoff <= 0:
            raise ValueError(f"cutoff must be positive, got {self.cutoff}")


class LEIGNN(nn.Module):
    """Lightweight equivariant interatomic potential.

    Call it on a collated batch (see :mod:`quintet.atomistic.batch`); if the batch has no
    ``EDGE_INDEX`` the neighbour list is built on the fly with the model's cutoff.

    Returns a dict with ``ENERGY`` (B,) eV, ``ATOM_ENERGY`` (N,), ``FORCES`` (N, 3) eV/Å and, when
    asked for in conservative mode, ``STRESS`` (B, 3, 3) eV/Å³.
    """

    def __init__(self, config: LEIGNNModelConfig | None = None) -> None:
        super().__init__()
        cfg = config or LEIGNNModelConfig()
        self.config = cfg
        self.embedding = AtomEmbedding(cfg.hidden, cfg.num_elements)
        self.radial = RadialBasis(cfg.num_rbf, cfg.cutoff)
        self.backbone = ScalarVectorBackbone(
            cfg.hidden,
            cfg.num_layers,
            cfg.num_rbf,
            update="painn" if cfg.variant == "vanilla" else "gated",
            global_node=cfg.variant == "leignn",
        )
        self.energy_head = ScalarReadout(cfg.hidden, 1)
        self.force_head = VectorReadout(cfg.hidden, 1) if cfg.forces == "direct" else None
        n = cfg.num_elements + 1
        self.register_buffer("energy_shift", torch.zeros(n))
        self.register_buffer("energy_scale", torch.ones(()))
        self.register_buffer("force_scale", torch.ones(()))
        self.register_buffer("known_elements", torch.zeros(n, dtype=torch.bool))

    # ------------------------------------------------------------------ normalisation
    @torch.no_grad()
    def fit_normalisation(self, records: Iterable[Mapping[str, Tensor]]) -> dict[str, float]:
        """Fit the energy reference, energy scale and force scale on training records.

        Per-element references come from a least-squares fit of total energies on element counts
        (a tiny ridge keeps it well posed when elements always appear together); the force scale is
        the RMS force component; the energy scale is the force scale (as in nequip/MACE), or the
        RMS of the per-atom residual energy when no forces are present. Also records which elements
        the model was trained on, so unseen elements are rejected before any computation.
        """
        counts, energies, natoms, f_sq, f_n = [], [], [], 0.0, 0
        seen: set[int] = set()
        for r in records:
            z = r[K.ATOMIC_NUMBERS].numpy()
            seen.update(int(a) for a in np.unique(z))
            if K.ENERGY in r:
                counts.append(np.bincount(z, minlength=self.config.num_elements + 1))
                energies.append(float(r[K.ENERGY]))
                natoms.append(len(z))
            if K.FORCES in r:
                f = r[K.FORCES].double()
                f_sq += float((f**2).sum())
                f_n += f.numel()
        if not seen:
            raise ValueError("no training structures to fit the normalisation on")
        self.known_elements.zero_()
        self.known_elements[sorted(seen)] = True
        shift = np.zeros(self.config.num_elements + 1)
        if energies and self.config.energy_reference != "none":
            e = np.asarray(energies)
            if self.config.energy_reference == "mean":
                shift[sorted(seen)] = float(np.sum(e) / np.sum(natoms))
            else:
                a = np.asarray(counts, dtype=np.float64)[:, sorted(seen)]
                ata = a.T @ a + 1e-8 * np.eye(a.shape[1]) * max(1.0, np.trace(a.T @ a) / a.shape[1])
                shift[sorted(seen)] = np.linalg.solve(ata, a.T @ e)
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
        return {"energy_scale": e_scale, "force_scale": float(self.force_scale), "n_elements": len(seen)}

    def check_elements(self, z: Tensor) -> None:
        """Raise a clear error if ``z`` holds elements absent from the training set."""
        if not bool(self.known_elements.any()):
            return  # untrained / normalisation not fitted: accept everything
        if z.numel() and (int(z.min()) < 1 or int(z.max()) > self.config.num_elements):
            raise ValueError(f"atomic numbers must lie in 1..{self.config.num_elements}")
        bad = torch.unique(z[~self.known_elements[z]])
        if bad.numel():
            from ase.data import chemical_symbols

            names = ", ".join(chemical_symbols[int(b)] for b in bad)
            known = ", ".join(chemical_symbols[int(b)] for b in torch.nonzero(self.known_elements).flatten())
            raise ValueError(
                f"element(s) {names} were not in this model's training data (trained on: {known})"
            )

    # ------------------------------------------------------------------ forward
    def forward(self, batch: Mapping[str, Tensor], compute_stress: bool = False) -> dict[str, Tensor]:
        """Energy, forces (and stress) of every structure in ``batch``."""
        cfg = self.config
        z = batch[K.ATOMIC_NUMBERS]
        if z.numel() == 0:
            raise ValueError("empty structure: no atoms")
        self.check_elements(z)
        pos = batch[K.POSITIONS]
        cell = batch[K.CELL].reshape(-1, 3, 3).to(pos.dtype)
        idx = batch[K.BATCH] if K.BATCH in batch else torch.zeros_like(z)
        num_graphs = cell.shape[0]
        if K.EDGE_INDEX in batch:
            edge_index, shift = batch[K.EDGE_INDEX], batch[K.EDGE_SHIFT]
        else:
            nb = dict(batch)
            nb.setdefault(K.NUM_ATOMS, torch.tensor([z.shape[0]]))
            edge_index, shift = batch_neighbor_list(nb, cfg.cutoff, cfg.max_neighbors)
        conservative = cfg.forces == "conservative"
        if compute_stress and not conservative:
            raise ValueError("stress needs forces='conservative'")
        strain = None
        with torch.enable_grad():
            leaf = pos
            if conservative:
                leaf = pos.detach().requires_grad_(True)
                pos = leaf
                if compute_stress:
                    strain = torch.zeros(
                        num_graphs, 3, 3, dtype=pos.dtype, device=pos.device, requires_grad=True
                    )
                    sym = 0.5 * (strain + strain.transpose(1, 2))
                    pos = pos + torch.einsum("ni,nij->nj", pos, sym[idx])
                    cell = cell + torch.bmm(cell, sym)
            energy, atom_energy, v = self._energy(z, pos, cell, idx, num_graphs, edge_index, shift)
            out = {K.ENERGY: energy, K.ATOM_ENERGY: atom_energy}
            if conservative:
                wrt = [leaf] if strain is None else [leaf, strain]
                grads = torch.autograd.grad(energy.sum(), wrt, create_graph=self.training)
                out[K.FORCES] = -grads[0]
                if strain is not None:
                    vol = torch.abs(torch.linalg.det(batch[K.CELL].reshape(-1, 3, 3).to(pos.dtype)))
                    out[K.STRESS] = grads[1] / vol.view(-1, 1, 1)
            else:
                assert self.force_head is not None
                out[K.FORCES] = self.force_head(v).squeeze(-1) * self.force_scale
        if not self.training and conservative:
            out = {k: t.detach() for k, t in out.items()}
        return out

    def _energy(
        self,
        z: Tensor,
        pos: Tensor,
        cell: Tensor,
        idx: Tensor,
        num_graphs: int,
        edge_index: Tensor,
        shift: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        vec, d = edge_vectors(pos, cell, edge_index, shift.to(pos.dtype), idx)
        unit = vec / d.clamp(min=1e-9).unsqueeze(-1)
        rbf = self.radial(d)
        x = self.embedding(z).to(pos.dtype)
        v = x.new_zeros((x.shape[0], 3, x.shape[1]))
        x, v = self.backbone(x, v, edge_index, rbf, unit, idx, num_graphs)
        atom_energy = self.energy_head(x).squeeze(-1) * self.energy_scale + self.energy_shift[z].to(x.dtype)
        return scatter_sum(atom_energy, idx, num_graphs), atom_energy, v
