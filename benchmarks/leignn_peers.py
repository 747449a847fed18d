"""PyG's SchNet and ViSNet as quintet potentials, for side-by-side comparisons.

PyG 2.8 builds their graphs with ``radius_graph``, which needs ``pyg-lib`` (not installable here).
The wrappers give them quintet's vesin neighbour list instead — periodic images included — and
the same per-element energy reference and scales as LEIGNN (:class:`EnergyNormalisation`).
Forces are −∂E/∂r by autograd for both, as in their papers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from quintet.atomistic import keys as K
from quintet.atomistic.neighbors import batch_graph, edge_vectors
from quintet.atomistic.nn import EnergyNormalisation

__all__ = ["E3PeerConfig", "E3PeerPotential", "PeerConfig", "PeerPotential"]


@dataclass
class PeerConfig:
    """A peer model: ``kind`` and its size (defaults: each model's own PyG defaults, cutoff 5 Å)."""

    kind: Literal["schnet", "visnet"] = "schnet"
    hidden: int = 128
    num_layers: int = 6
    cutoff: float = 5.0
    max_neighbors: int | None = 32
    forces: Literal["conservative"] = "conservative"
    energy_reference: Literal["per_element", "mean", "none"] = "per_element"


class _PeriodicDistance(nn.Module):
    """Stands in for ViSNet's ``Distance``: returns the precomputed periodic graph (with self loops)."""

    def __init__(self) -> None:
        super().__init__()
        self.graph: tuple[Tensor, Tensor] | None = None

    def forward(self, pos: Tensor, batch: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        assert self.graph is not None
        edge_index, vec = self.graph  # PyG orientation (source j, target i); vec = r_j - r_i + S@cell
        n = pos.shape[0]
        loops = torch.arange(n, device=pos.device)
        edge_index = torch.cat([edge_index, torch.stack([loops, loops])], dim=1)
        vec = torch.cat([vec, vec.new_zeros((n, 3))], dim=0)
        weight = torch.linalg.vector_norm(vec, dim=-1)
        return edge_index, weight, vec.clone()  # ViSNet normalises edge_vec in place


class PeerPotential(nn.Module):
    """SchNet or ViSNet (PyG) with conservative forces and our normalisation and graphs."""

    def __init__(self, config: PeerConfig | None = None) -> None:
        super().__init__()
        cfg = config or PeerConfig()
        self.config = cfg
        self.normalisation = EnergyNormalisation(reference=cfg.energy_reference)
        self._graph: tuple[Tensor, Tensor] | None = None
        if cfg.kind == "schnet":
            from torch_geometric.nn.models import SchNet

            self.net = SchNet(
                hidden_channels=cfg.hidden,
                num_filters=cfg.hidden,
                num_interactions=cfg.num_layers,
                cutoff=cfg.cutoff,
                interaction_graph=self._schnet_graph,
            )
        elif cfg.kind == "visnet":
            from torch_geometric.nn.models import ViSNet

            self.net = ViSNet(
                hidden_channels=cfg.hidden, num_layers=cfg.num_layers, cutoff=cfg.cutoff, max_z=119
            )
            self.net.representation_model.distance = _PeriodicDistance()
        else:
            raise ValueError(f"unknown peer {cfg.kind!r}; choose schnet or visnet")

    def _schnet_graph(self, pos: Tensor, batch: Tensor) -> tuple[Tensor, Tensor]:
        assert self._graph is not None
        edge_index, vec = self._graph
        return edge_index, torch.linalg.vector_norm(vec, dim=-1)

    def fit_normalisation(self, records: Iterable[Mapping[str, Tensor]]) -> dict[str, float]:
        """Same fit as LEIGNN's (per-element reference, scales)."""
        return self.normalisation.fit(records)

    def check_elements(self, z: Tensor) -> None:
        self.normalisation.check_elements(z)

    def forward(self, batch: Mapping[str, Tensor], compute_stress: bool = False) -> dict[str, Any]:
        if compute_stress:
            raise ValueError("the peer wrappers do not compute stress")
        z = batch[K.ATOMIC_NUMBERS]
        if z.numel() == 0:
            raise ValueError("empty structure: no atoms")
        if not torch.compiler.is_compiling():  # CompiledModel checks before the compiled call
            self.check_elements(z)
        idx = batch[K.BATCH] if K.BATCH in batch else torch.zeros_like(z)
        cell = batch[K.CELL].reshape(-1, 3, 3)
        num_graphs = cell.shape[0]
        edge_index, shift = batch_graph(batch, self.config.cutoff, self.config.max_neighbors)
        with torch.enable_grad():
            pos = batch[K.POSITIONS].detach().requires_grad_(True)
            vec, _ = edge_vectors(pos, cell.to(pos.dtype), edge_index, shift.to(pos.dtype), idx)
            graph = (edge_index.flip(0), vec)
            if self.config.kind == "schnet":
                self._graph = graph
                raw = self.net(z, pos, idx).reshape(-1)
            else:
                self.net.representation_model.distance.graph = graph
                raw = self.net(z, pos, idx)[0].reshape(-1)
            self._graph = None
            counts = torch.zeros(num_graphs, dtype=pos.dtype, device=pos.device).index_add(
                0, idx, self.normalisation.energy_shift[z].to(pos.dtype)
            )
            energy = raw * self.normalisation.energy_scale.to(pos.dtype) + counts
            (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=self.training)
        out = {K.ENERGY: energy, K.FORCES: -grad}
        if not self.training:
            out = {k: v.detach() for k, v in out.items()}
        return out


# ------------------------------------------------------------------------------------------------
# MACE and NequIP (optional, benchmark only): their own model code, quintet's graph and normalisation
# ------------------------------------------------------------------------------------------------


@dataclass
class E3PeerConfig:
    """MACE or NequIP, built from scratch in its small configuration.

    MACE "small" (as MACE-MP-0 small): hidden irreps ``128x0e``, 2 interactions, max_ell 3,
    correlation 3, 8 Bessels, radial MLP [64, 64, 64]. NequIP "S" preset (nequip 0.19): 2 layers,
    l_max 1, features [128, 64], no parity. ``elements``: atomic numbers the model types cover;
    ``avg_num_neighbors``: the training data's mean neighbour count (both normalise messages by it).
    """

    kind: Literal["mace", "nequip"] = "mace"
    elements: tuple[int, ...] = (1, 6, 8)
    cutoff: float = 5.0
    max_neighbors: int | None = 32
    avg_num_neighbors: float = 16.0
    forces: Literal["conservative"] = "conservative"
    energy_reference: Literal["per_element", "mean", "none"] = "per_element"


def _build_mace(cfg: E3PeerConfig) -> nn.Module:
    import numpy as np
    from e3nn import o3
    from mace import modules

    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    return modules.ScaleShiftMACE(
        r_max=cfg.cutoff, num_bessel=8, num_polynomial_cutoff=5, max_ell=3,
        interaction_cls=block, interaction_cls_first=block, num_interactions=2,
        num_elements=len(cfg.elements), hidden_irreps=o3.Irreps("128x0e"), MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.zeros(len(cfg.elements)), avg_num_neighbors=cfg.avg_num_neighbors,
        atomic_numbers=list(cfg.elements), correlation=3, gate=torch.nn.functional.silu,
        radial_MLP=[64, 64, 64], atomic_inter_scale=1.0, atomic_inter_shift=0.0,
    )  # fmt: skip


def _build_nequip(cfg: E3PeerConfig) -> nn.Module:
    from ase.data import chemical_symbols
    from nequip.model.nequip_models import PresetNequIPGNNModel
    from nequip.utils.global_state import set_global_state

    default = torch.get_default_dtype()
    set_global_state()  # nequip sets the process-wide default dtype to float64 here: restored below
    torch.set_default_dtype(default)
    names = [chemical_symbols[z] for z in cfg.elements]
    return PresetNequIPGNNModel(
        preset="S", seed=0, model_dtype="float32", type_names=names, r_max=cfg.cutoff,
        avg_num_neighbors=cfg.avg_num_neighbors, per_type_energy_scales=1.0,
        per_type_energy_shifts=dict.fromkeys(names, 0.0),
    )  # fmt: skip


class E3PeerPotential(nn.Module):
    """MACE or NequIP as a quintet potential: ``model(batch, compute_stress)`` → energy, forces[, stress].

    The network's own energy (its reference shifts at zero, scale 1) is multiplied by the same fitted
    energy scale as LEIGNN's and added to the same per-element reference; forces and stress come from
    the network's own autograd, times that scale.
    """

    def __init__(self, config: E3PeerConfig | None = None) -> None:
        super().__init__()
        cfg = config or E3PeerConfig()
        self.config = cfg
        self.normalisation = EnergyNormalisation(reference=cfg.energy_reference)
        self.net = _build_mace(cfg) if cfg.kind == "mace" else _build_nequip(cfg)
        type_of = torch.full((119,), -1, dtype=torch.long)
        type_of[list(cfg.elements)] = torch.arange(len(cfg.elements))
        self.register_buffer("type_of", type_of, persistent=False)

    def fit_normalisation(self, records: Iterable[Mapping[str, Tensor]]) -> dict[str, float]:
        return self.normalisation.fit(records)

    def check_elements(self, z: Tensor) -> None:
        self.normalisation.check_elements(z)

    def _inputs(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        z = batch[K.ATOMIC_NUMBERS]
        pos = batch[K.POSITIONS]
        idx = batch[K.BATCH] if K.BATCH in batch else torch.zeros_like(z)
        cell = batch[K.CELL].reshape(-1, 3, 3).to(pos.dtype)
        n_atoms = batch[K.NUM_ATOMS] if K.NUM_ATOMS in batch else torch.tensor([len(z)], device=z.device)
        edge_index, shift = batch_graph(batch, self.config.cutoff, self.config.max_neighbors)
        shift = shift.to(pos.dtype)
        types = self.type_of[z]
        if self.config.kind == "nequip":
            return {"pos": pos, "atom_types": types, "edge_index": edge_index, "edge_cell_shift": shift,
                    "cell": cell, "batch": idx, "num_atoms": n_atoms, "pbc": batch[K.PBC].reshape(-1, 3)}  # fmt: skip
        ptr = torch.cat([n_atoms.new_zeros(1), torch.cumsum(n_atoms, 0)])
        cart = torch.einsum("ek,ekl->el", shift, cell[idx[edge_index[0]]])
        return {"positions": pos, "node_attrs": torch.nn.functional.one_hot(types, len(self.config.elements)).to(pos.dtype),
                "edge_index": edge_index, "shifts": cart, "unit_shifts": shift, "cell": cell.reshape(-1, 3),
                "batch": idx, "ptr": ptr, "head": torch.zeros_like(n_atoms), "pbc": batch[K.PBC].reshape(-1, 3)}  # fmt: skip

    def forward(self, batch: Mapping[str, Tensor], compute_stress: bool = False) -> dict[str, Any]:
        z = batch[K.ATOMIC_NUMBERS]
        if z.numel() == 0:
            raise ValueError("empty structure: no atoms")
        if not torch.compiler.is_compiling():  # CompiledModel checks before the compiled call
            self.check_elements(z)
        data = self._inputs(batch)
        dtype = batch[K.POSITIONS].dtype
        with torch.enable_grad():
            if self.config.kind == "mace":
                raw = self.net(data, training=self.training, compute_force=True, compute_stress=compute_stress)
                e_raw, f_raw, s_raw = raw["energy"], raw["forces"], raw.get("stress")
            else:
                raw = self.net(data)
                e_raw, f_raw, s_raw = raw["total_energy"].reshape(-1), raw["forces"], raw.get("stress")
        scale = self.normalisation.energy_scale.to(dtype)
        idx = data["batch"]
        shifts = torch.zeros(e_raw.shape[0], dtype=dtype, device=z.device).index_add(
            0, idx, self.normalisation.energy_shift[z].to(dtype)
        )
        out = {K.ENERGY: e_raw.to(dtype) * scale + shifts, K.FORCES: f_raw.to(dtype) * scale}
        if compute_stress and s_raw is not None:
            out[K.STRESS] = s_raw.to(dtype).reshape(-1, 3, 3) * scale
        if not self.training:
            out = {k: v.detach() for k, v in out.items()}
        return out
