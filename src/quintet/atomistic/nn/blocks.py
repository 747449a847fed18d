"""Scalar–vector message passing blocks shared by LEIGNN, DeepRelax and DefiNet (spec §2.1).

Features: scalars ``x`` (N, H) and vectors ``v`` (N, 3, H). Every block returns *increments*
``(dx, dv)``; the model decides how to apply them (residual sums, scalings), so the same blocks
compose into the three published architectures. Vector features only ever get multiplied by
invariant scalars, added, or passed through bias-free linear maps over the channel axis, so the
blocks are rotation-equivariant by construction (checked in the tests).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from quintet.atomistic.nn.scatter import scatter_mean, scatter_sum

__all__ = [
    "AtomEmbedding",
    "GatedUpdate",
    "GlobalScalar",
    "GlobalVector",
    "PaiNNMessage",
    "PaiNNUpdate",
    "ScalarReadout",
    "ScaledSiLU",
    "VectorActivation",
    "VectorReadout",
    "mlp",
]


class ScaledSiLU(nn.Module):
    """SiLU(x) / 0.6 (keeps activations near unit variance)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.nn.functional.silu(x) * (1.0 / 0.6)


def mlp(n_in: int, n_hidden: int, n_out: int, bias_out: bool = True) -> nn.Sequential:
    """Two-layer perceptron Linear → ScaledSiLU → Linear."""
    return nn.Sequential(nn.Linear(n_in, n_hidden), ScaledSiLU(), nn.Linear(n_hidden, n_out, bias=bias_out))


def _xavier(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class AtomEmbedding(nn.Module):
    """Element embedding indexed by the atomic number, initialised U(−√3, √3).

    Args:
        hidden: feature width H.
        num_elements: largest atomic number supported (118).
    """

    def __init__(self, hidden: int, num_elements: int = 118) -> None:
        super().__init__()
        self.num_elements = num_elements
        self.embedding = nn.Embedding(num_elements + 1, hidden)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.embedding.weight, -math.sqrt(3), math.sqrt(3))

    def forward(self, z: Tensor) -> Tensor:
        """(N,) atomic numbers → (N, H)."""
        if z.numel() and (int(z.min()) < 1 or int(z.max()) > self.num_elements):
            raise ValueError(f"atomic numbers must lie in 1..{self.num_elements}, got {z.min()}..{z.max()}")
        return self.embedding(z)


class PaiNNMessage(nn.Module):
    """PaiNN message: filter = φ(x_j) ⊙ W·e_ij (⊙ optional gate), split into three chunks (a, b, c).

    Δv_i = Σ_j (a ⊙ v_j + b ⊙ û_ij) / √H and Δx_i = Σ_j c, with the filter scaled by 1/√3.

    Args:
        hidden: feature width H.
        edge_dim: width of the edge features ``edge_attr`` (e.g. the number of radial functions).
    """

    def __init__(self, hidden: int, edge_dim: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.phi = mlp(hidden, hidden, 3 * hidden)
        self.edge_proj = nn.Linear(edge_dim, 3 * hidden)
        self.inv_sqrt_3 = 1 / math.sqrt(3.0)
        self.inv_sqrt_h = 1 / math.sqrt(hidden)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _xavier(self)

    def forward(
        self,
        x: Tensor,
        v: Tensor | None,
        edge_index: Tensor,
        edge_attr: Tensor,
        unit: Tensor,
        edge_gate: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Aggregate messages onto the centres ``edge_index[0]``.

        Args:
            x: (N, H) scalars; v: (N, 3, H) vectors, or ``None`` when they are all zero (first layer).
            edge_index: (2, E) rows (i centre, j neighbour).
            edge_attr: (E, edge_dim) invariant edge features.
            unit: (E, 3) unit vectors along r_ij.
            edge_gate: optional (E, 3H) invariant multiplicative filter (DefiNet's defect gating).

        Returns:
            (dx (N, H), dv (N, 3, H)).
        """
        i, j = edge_index[0], edge_index[1]
        h = self.hidden
        # the constant scalings are applied per atom (N rows) rather than per edge (E rows)
        node = self.phi(x) * self._scale.to(x.dtype)
        filt = node[j] * self.edge_proj(edge_attr)
        if edge_gate is not None:
            filt = filt * edge_gate
        a, b, c = torch.split(filt, h, dim=-1)
        dv_e = b.unsqueeze(1) * unit.unsqueeze(-1)
        if v is not None:
            dv_e = torch.addcmul(dv_e, a.unsqueeze(1), v[j])
        n = x.shape[0]
        return scatter_sum(c, i, n), scatter_sum(dv_e, i, n)

    @property
    def _scale(self) -> Tensor:
        h = self.hidden
        s = torch.full((3 * h,), self.inv_sqrt_3)
        s[: 2 * h] *= self.inv_sqrt_h
        return s


class _UpdateBase(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.vec_proj = nn.Linear(hidden, 2 * hidden, bias=False)
        self.xvec_proj = mlp(2 * hidden, hidden, 3 * hidden)
        self.inv_sqrt_2 = 1 / math.sqrt(2.0)
        self.inv_sqrt_h = 1 / math.sqrt(hidden)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _xavier(self)

    def _mix(self, x: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        u_vec, v_vec = torch.split(self.vec_proj(v), self.hidden, dim=-1)
        v_norm = torch.sqrt(v_vec.pow(2).sum(dim=1) + 1e-8)
        s1, s2, s3 = torch.split(self.xvec_proj(torch.cat([x, v_norm], dim=-1)), self.hidden, dim=-1)
        return u_vec, v_vec, s1, s2, s3


class PaiNNUpdate(_UpdateBase):
    """PaiNN update: Δx = (s1 + s2 ⊙ ⟨U, V⟩ / √H) / √2, Δv = s3 ⊙ U (used by DeepRelax, vanilla)."""

    def forward(self, x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """(x, v) → (dx, dv)."""
        u_vec, v_vec, s1, s2, s3 = self._mix(x, v)
        inner = (u_vec * v_vec).sum(dim=1) * self.inv_sqrt_h
        dx = (s1 + s2 * inner) * self.inv_sqrt_2
        dv = s3.unsqueeze(1) * u_vec
        return dx, dv


class GatedUpdate(_UpdateBase):
    """Gated "NMU" update of LEIGNN/DefiNet: Δx = s2 / √2 + x ⊙ tanh(s3), Δv = s1 ⊙ U (no inner product)."""

    def forward(self, x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """(x, v) → (dx, dv)."""
        u_vec, _v_vec, s1, s2, s3 = self._mix(x, v)
        dx = s2 * self.inv_sqrt_2 + x * torch.tanh(s3)
        dv = s1.unsqueeze(1) * u_vec
        return dx, dv


class GlobalScalar(nn.Module):
    """Scalar virtual node per structure exchanging with every atom (LEIGNN, DefiNet).

    ``to_atoms``: x ← x + MLP([x, g_graph]); ``from_atoms``: g ← g + MLP([mean_atoms(x), g]).
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.init_embedding = nn.Parameter(torch.empty(hidden))
        self.atom_mlp = mlp(2 * hidden, hidden, hidden)
        self.graph_mlp = mlp(2 * hidden, hidden, hidden)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.init_embedding, -math.sqrt(3), math.sqrt(3))
        _xavier(self.atom_mlp)
        _xavier(self.graph_mlp)

    def init(self, num_graphs: int) -> Tensor:
        """Initial virtual-node state (B, H)."""
        return self.init_embedding.unsqueeze(0).expand(num_graphs, -1)

    def to_atoms(self, x: Tensor, g: Tensor, batch: Tensor) -> Tensor:
        """Updated atom scalars (N, H)."""
        return x + self.atom_mlp(torch.cat([x, g[batch]], dim=-1))

    def from_atoms(self, x: Tensor, g: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        """Updated virtual node (B, H)."""
        return g + self.graph_mlp(torch.cat([scatter_mean(x, batch, num_graphs), g], dim=-1))


class GlobalVector(nn.Module):
    """Vector virtual node per structure (B, 3, H), initialised at zero; bias-free maps keep it equivariant.

    ``to_atoms``: v ← v + W(v + G_graph); ``from_atoms``: G ← G + W'(mean_atoms(v) + G).
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.atom_lin = nn.Linear(hidden, hidden, bias=False)
        self.graph_lin = nn.Linear(hidden, hidden, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _xavier(self)

    def init(self, num_graphs: int, like: Tensor) -> Tensor:
        """Zero state (B, 3, H) with the dtype/device of ``like``."""
        return like.new_zeros((num_graphs, 3, self.hidden))

    def to_atoms(self, v: Tensor, g: Tensor, batch: Tensor) -> Tensor:
        """Updated atom vectors (N, 3, H)."""
        return v + self.atom_lin(v + g[batch])

    def from_atoms(self, v: Tensor, g: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        """Updated virtual node (B, 3, H)."""
        return g + self.graph_lin(scatter_mean(v, batch, num_graphs) + g)


class VectorActivation(nn.Module):
    """Equivariant nonlinearity on vectors (DefiNet; VN-ReLU-like).

    A learned direction g = W_g v (one per atom) and features l = W_l v; channels whose ⟨l, g⟩ ≥ 0
    keep l, the others become (l + g) / 2.
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.dir_lin = nn.Linear(hidden, 1, bias=False)
        self.feat_lin = nn.Linear(hidden, hidden, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _xavier(self)

    def forward(self, v: Tensor) -> Tensor:
        """(N, 3, H) → (N, 3, H)."""
        g = self.dir_lin(v)  # (N, 3, 1)
        lv = self.feat_lin(v)
        keep = (lv * g).sum(dim=1, keepdim=True) >= 0
        return torch.where(keep, lv, 0.5 * (lv + g))


class ScalarReadout(nn.Module):
    """Atom-wise MLP H → H/2 → ``out`` on scalar features.

    ``zero_init`` starts the last layer at zero, so an energy head initially predicts exactly the
    fitted reference energies instead of a random offset of tens of eV.
    """

    def __init__(self, hidden: int, out: int = 1, zero_init: bool = False) -> None:
        super().__init__()
        self.net = mlp(hidden, max(hidden // 2, 1), out)
        self.zero_init = zero_init
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _xavier(self)
        if self.zero_init:
            nn.init.zeros_(self.net[-1].weight)

    def forward(self, x: Tensor) -> Tensor:
        """(N, H) → (N, out)."""
        return self.net(x)


class VectorReadout(nn.Module):
    """Bias-free linear map of vector features to ``out`` vectors per atom: (N, 3, H) → (N, 3, out)."""

    def __init__(self, hidden: int, out: int = 1) -> None:
        super().__init__()
        self.lin = nn.Linear(hidden, out, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _xavier(self)

    def forward(self, v: Tensor) -> Tensor:
        return self.lin(v)
