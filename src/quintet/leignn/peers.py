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

__all__ = ["PeerConfig", "PeerPotential"]


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
