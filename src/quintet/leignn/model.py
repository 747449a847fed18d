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

import torch
from torch import Tensor, nn

from quintet.atomistic import keys as K
from quintet.atomistic.neighbors import batch_graph, edge_vectors
from quintet.atomistic.nn import (
    AtomEmbedding,
    EnergyNormalisation,
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
        self.energy_head = ScalarReadout(cfg.hidden, 1, zero_init=True)
        self.force_head = VectorReadout(cfg.hidden, 1) if cfg.forces == "direct" else None
        self.normalisation = EnergyNormalisation(cfg.num_elements, cfg.energy_reference)

    # ------------------------------------------------------------------ normalisation
    def fit_normalisation(self, records: Iterable[Mapping[str, Tensor]]) -> dict[str, float]:
        """Fit the energy reference, energy scale and force scale on training records
        (see :class:`~quintet.atomistic.nn.EnergyNormalisation`); also records the trained elements."""
        return self.normalisation.fit(records)

    def check_elements(self, z: Tensor) -> None:
        """Raise a clear error if ``z`` holds elements absent from the training set."""
        self.normalisation.check_elements(z)

    # ------------------------------------------------------------------ forward
    def forward(self, batch: Mapping[str, Tensor], compute_stress: bool = False) -> dict[str, Tensor]:
        """Energy, forces (and stress) of every structure in ``batch``."""
        cfg = self.config
        z = batch[K.ATOMIC_NUMBERS]
        if z.numel() == 0:
            raise ValueError("empty structure: no atoms")
        if not torch.compiler.is_compiling():  # CompiledModel checks before the compiled call
            self.check_elements(z)
        pos = batch[K.POSITIONS]
        cell = batch[K.CELL].reshape(-1, 3, 3).to(pos.dtype)
        idx = batch[K.BATCH] if K.BATCH in batch else torch.zeros_like(z)
        num_graphs = cell.shape[0]
        edge_index, shift = batch_graph(batch, cfg.cutoff, cfg.max_neighbors)
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
                out[K.FORCES] = self.force_head(v).squeeze(-1) * self.normalisation.force_scale
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
        atom_energy = self.normalisation.atom_energy(self.energy_head(x).squeeze(-1), z)
        return scatter_sum(atom_energy, idx, num_graphs), atom_energy, v
