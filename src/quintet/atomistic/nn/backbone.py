"""A stack of scalar–vector layers assembled from the shared blocks.

``ScalarVectorBackbone`` covers LEIGNN (gated update + global virtual node), its "vanilla" and
"vanilla+NMU" ablations and DeepRelax (PaiNN update). Each layer is::

    [global node → atoms]   x ← x + MLP([x, g]);   v ← v + W(v + G)
    message                 x ← (x + Δx) / √2;     v ← v + Δv
    update                  x ← x + Δx;            v ← v + Δv
    [atoms → global node]   g ← g + MLP([⟨x⟩, g]); G ← G + W'(⟨v⟩ + G)
"""

from __future__ import annotations

import math
from typing import Literal

from torch import Tensor, nn

from quintet.atomistic.nn.blocks import GatedUpdate, GlobalScalar, GlobalVector, PaiNNMessage, PaiNNUpdate

__all__ = ["ScalarVectorBackbone"]


class ScalarVectorBackbone(nn.Module):
    """``num_layers`` × (optional global exchange, message, update).

    Args:
        hidden: feature width H.
        num_layers: number of interaction layers.
        edge_dim: width of the invariant edge features fed to the messages.
        update: ``"painn"`` (with the ⟨U, V⟩ term) or ``"gated"`` (LEIGNN's NMU).
        global_node: add the scalar + vector virtual node per structure.
        message_scale: constant factor on every aggregated message (Δx, Δv of the message step), e.g.
            1/√(neighbours per atom) so that sums over many edges do not grow the features layer by
            layer (PaiNN's update is quadratic in v). 1 (the default) is the plain sum.
    """

    def __init__(
        self,
        hidden: int,
        num_layers: int,
        edge_dim: int,
        update: Literal["painn", "gated"] = "gated",
        global_node: bool = True,
        message_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if update not in ("painn", "gated"):
            raise ValueError(f"update must be 'painn' or 'gated', got {update!r}")
        if not message_scale > 0:
            raise ValueError(f"message_scale must be positive, got {message_scale}")
        self.message_scale = float(message_scale)
        self.hidden = hidden
        self.num_layers = num_layers
        self.global_node = global_node
        self.messages = nn.ModuleList(PaiNNMessage(hidden, edge_dim) for _ in range(num_layers))
        upd = PaiNNUpdate if update == "painn" else GatedUpdate
        self.updates = nn.ModuleList(upd(hidden) for _ in range(num_layers))
        if global_node:
            self.global_scalars = nn.ModuleList(GlobalScalar(hidden) for _ in range(num_layers))
            self.global_vectors = nn.ModuleList(GlobalVector(hidden) for _ in range(num_layers))
        self.inv_sqrt_2 = 1 / math.sqrt(2.0)

    def forward(
        self,
        x: Tensor,
        v: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor,
        unit: Tensor,
        batch: Tensor,
        num_graphs: int,
    ) -> tuple[Tensor, Tensor]:
        """Run all layers.

        Args:
            x: (N, H) initial scalars (the atom embedding); v: (N, 3, H) initial vectors (zeros).
            edge_index: (2, E) rows (i, j); edge_attr: (E, edge_dim); unit: (E, 3) unit r_ij.
            batch: (N,) structure index; num_graphs: number of structures B.

        Returns:
            Final (x, v).
        """
        if self.global_node:
            g = self.global_scalars[0].init(num_graphs)
            gv = self.global_vectors[0].init(num_graphs, x)
        v_zero = not bool(v.any())  # the usual start: skip gathering and mixing an all-zero v
        for k in range(self.num_layers):
            if self.global_node:
                x = self.global_scalars[k].to_atoms(x, g, batch)
                if not (k == 0 and v_zero):  # with v = 0 and G = 0 the exchange leaves v at zero
                    v = self.global_vectors[k].to_atoms(v, gv, batch)
            dx, dv = self.messages[k](x, None if (k == 0 and v_zero) else v, edge_index, edge_attr, unit)
            if self.message_scale != 1.0:
                dx, dv = dx * self.message_scale, dv * self.message_scale
            x = (x + dx) * self.inv_sqrt_2
            v = v + dv
            dx, dv = self.updates[k](x, v)
            x = x + dx
            v = v + dv
            if self.global_node:
                g = self.global_scalars[k].from_atoms(x, g, batch, num_graphs)
                gv = self.global_vectors[k].from_atoms(v, gv, batch, num_graphs)
        return x, v
