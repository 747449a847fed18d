"""DefiNet: one-shot relaxed positions of point-defect supercells (materials spec §2.4).

The network is composed from the shared backbone (:mod:`quintet.atomistic.nn`) plus the two
DefiNet layers of :mod:`quintet.definet.layers`:

1. ``x₀ = Linear([E_Z(Z), E_def(label)])``, ``v₀ = 0``, one scalar and one vector virtual node.
2. Each layer: virtual node → atoms; defect-gated PaiNN message followed by a vector activation;
   gated ("NMU") update followed by a vector activation; positions moved by the coordinate update;
   atoms → virtual node. Distances and directions are recomputed from the *current* positions at
   the start of every layer; the graph topology and the cell stay those of the input.
3. Output: the positions after the last layer (and after every layer, for deep supervision).

The model is rotation-, translation- and permutation-equivariant: rotating or translating the
input rotates or translates the predicted positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from quintet.atomistic import keys as K
from quintet.atomistic.neighbors import batch_graph, edge_vectors
from quintet.atomistic.nn import (
    AtomEmbedding,
    GatedUpdate,
    GlobalScalar,
    GlobalVector,
    PaiNNMessage,
    RadialBasis,
    VectorActivation,
)
from quintet.definet.layers import CoordinateUpdate, DefectEdgeGate, safe_unit

__all__ = ["PRED_POSITIONS", "DefiNet", "DefiNetConfig"]

#: predicted relaxed positions, (N, 3), Å
PRED_POSITIONS = K.register_key("definet_pred_pos", "node")


@dataclass
class DefiNetConfig:
    """Architecture of DefiNet (the paper's values in brackets).

    Attributes:
        hidden: feature width H [512].
        num_layers: message-passing layers [4].
        num_rbf: Gaussian radial functions [128].
        cutoff: graph cutoff and envelope radius, Å [6].
        rbf_cutoff: range the Gaussians are spread over, Å; ``None`` = ``cutoff`` [30].
        max_neighbors: nearest neighbours kept per atom, ``None`` = all within the cutoff [50].
        num_elements: largest atomic number [118].
        use_global: scalar and vector virtual node per structure [True].
        vector_activation: vector activation after message and update [True].
        defect_gate: defect-label gating of messages and coordinate updates [True].
    """

    hidden: int = 64
    num_layers: int = 3
    num_rbf: int = 32
    cutoff: float = 6.0
    rbf_cutoff: float | None = None
    max_neighbors: int | None = 50
    num_elements: int = 118
    use_global: bool = True
    vector_activation: bool = True
    defect_gate: bool = True

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.num_layers < 1 or self.num_rbf < 1:
            raise ValueError("hidden, num_layers and num_rbf must be positive")
        if self.cutoff <= 0:
            raise ValueError(f"cutoff must be positive, got {self.cutoff}")


class _Layer(nn.Module):
    def __init__(self, cfg: DefiNetConfig) -> None:
        super().__init__()
        h = cfg.hidden
        self.message = PaiNNMessage(h, cfg.num_rbf)
        self.update = GatedUpdate(h)
        self.msg_gate = DefectEdgeGate(h, 3 * h) if cfg.defect_gate else None
        self.msg_act = VectorActivation(h) if cfg.vector_activation else None
        self.upd_act = VectorActivation(h) if cfg.vector_activation else None
        self.coord = CoordinateUpdate(h, cfg.num_rbf, h)
        self.global_scalar = GlobalScalar(h) if cfg.use_global else None
        self.global_vector = GlobalVector(h) if cfg.use_global else None


class DefiNet(nn.Module):
    """Defect-aware equivariant network that moves atoms to their relaxed positions.

    Args:
        cfg: architecture (see :class:`DefiNetConfig`).

    Inputs (a collated batch, see :mod:`quintet.atomistic.batch`): ``POSITIONS``,
    ``ATOMIC_NUMBERS``, ``DEFECT``, ``CELL``, ``PBC``, ``BATCH``, ``NUM_ATOMS`` and optionally
    ``EDGE_INDEX``/``EDGE_SHIFT`` (built here from the input positions when absent).
    """

    def __init__(self, cfg: DefiNetConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or DefiNetConfig()
        h = cfg.hidden
        self.atom_embedding = AtomEmbedding(h, cfg.num_elements)
        self.label_embedding = nn.Embedding(3, h)
        self.embed_mix = nn.Linear(2 * h, h)
        self.radial = RadialBasis(cfg.num_rbf, cfg.cutoff, cfg.rbf_cutoff)
        self.layers = nn.ModuleList(_Layer(cfg) for _ in range(cfg.num_layers))
        self.inv_sqrt_2 = 1 / math.sqrt(2.0)
        nn.init.uniform_(self.label_embedding.weight, -math.sqrt(3), math.sqrt(3))
        nn.init.xavier_uniform_(self.embed_mix.weight)
        nn.init.zeros_(self.embed_mix.bias)

    def graph(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The edges of the batch: taken from it, or built on the input positions."""
        return batch_graph(batch, self.cfg.cutoff, self.cfg.max_neighbors)

    def forward(self, batch: dict[str, Tensor], return_layers: bool = False) -> dict[str, Tensor]:
        """Predict relaxed positions.

        Args:
            batch: collated records (see the class docstring).
            return_layers: also return ``"layer_positions"`` (L, N, 3), the positions after each layer.

        Returns:
            ``{PRED_POSITIONS: (N, 3)}`` (plus ``"layer_positions"`` when asked).
        """
        pos = batch[K.POSITIONS]
        z = batch[K.ATOMIC_NUMBERS].long()
        n = pos.shape[0]
        defect = batch.get(K.DEFECT)
        if defect is None:
            defect = torch.zeros(n, dtype=torch.long, device=pos.device)
        defect = defect.long()
        if defect.numel() and (int(defect.min()) < 0 or int(defect.max()) > 2):
            raise ValueError("defect labels must be 0 (pristine), 1 (substitution) or 2 (vacancy)")
        node_batch = batch.get(K.BATCH)
        if node_batch is None:
            node_batch = torch.zeros(n, dtype=torch.long, device=pos.device)
        cell = batch[K.CELL].to(pos.dtype)
        if cell.dim() == 2:
            cell = cell.unsqueeze(0)
        num_graphs = cell.shape[0]
        edge_index, edge_shift = self.graph(batch)

        e_def = self.label_embedding(defect)
        x = self.embed_mix(torch.cat([self.atom_embedding(z), e_def], dim=-1))
        v = x.new_zeros((n, 3, self.cfg.hidden))
        g_s = g_v = None
        if self.cfg.use_global:
            g_s = self.layers[0].global_scalar.init(num_graphs)
            g_v = self.layers[0].global_vector.init(num_graphs, x)
        layer_pos = []
        last = len(self.layers) - 1
        for k, layer in enumerate(self.layers):
            vec, length = edge_vectors(pos, cell, edge_index, edge_shift, node_batch)
            unit = safe_unit(vec, length)
            rbf = self.radial(length)
            if layer.global_scalar is not None:
                x = layer.global_scalar.to_atoms(x, g_s, node_batch)
                v = layer.global_vector.to_atoms(v, g_v, node_batch)
            gate = layer.msg_gate(e_def, edge_index) if layer.msg_gate is not None else None
            dx, dv = layer.message(x, v, edge_index, rbf, unit, gate)
            if layer.msg_act is not None:
                dv = layer.msg_act(dv)
            x = (x + dx) * self.inv_sqrt_2
            v = v + dv
            dx, dv = layer.update(x, v)
            if layer.upd_act is not None:
                dv = layer.upd_act(dv)
            x = (x + dx) * self.inv_sqrt_2
            v = v + dv
            label_emb = e_def if self.cfg.defect_gate else torch.zeros_like(e_def)
            pos = pos + layer.coord(x, v, label_emb, edge_index, rbf, unit)
            if layer.global_scalar is not None and k < last:  # the last update would feed nothing
                g_s = layer.global_scalar.from_atoms(x, g_s, node_batch, num_graphs)
                g_v = layer.global_vector.from_atoms(v, g_v, node_batch, num_graphs)
            layer_pos.append(pos)
        out = {PRED_POSITIONS: pos}
        if return_layers:
            out["layer_positions"] = torch.stack(layer_pos)
        return out

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
