"""The two DefiNet-specific layers: defect-aware edge gating and the in-layer coordinate update.

Everything else in DefiNet (radial basis, PaiNN message, gated update, virtual node, vector
activation) comes from :mod:`quintet.atomistic.nn`.
"""

from __future__ import annotations

from torch import Tensor, nn

from quintet.atomistic.nn import ScaledSiLU, scatter_sum

__all__ = ["CoordinateUpdate", "DefectEdgeGate", "safe_unit"]


class DefectEdgeGate(nn.Module):
    """Per-edge filter from the defect labels of both ends: ``P·e_def,i + P·e_def,j``.

    The sum is symmetric in (i, j), so defect–defect, defect–pristine and pristine–pristine pairs
    (and substitution vs vacancy) each get their own filter, while an edge and its reverse share one.

    Args:
        label_dim: width of the label embedding ``e_def``.
        out: width of the gate (``3H`` for the message filter, ``H`` for the coordinate update).
    """

    def __init__(self, label_dim: int, out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(label_dim, out)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, label_emb: Tensor, edge_index: Tensor) -> Tensor:
        """(N, label_dim) label embeddings, (2, E) edges → (E, out) gates."""
        p = self.proj(label_emb)
        return p[edge_index[0]] + p[edge_index[1]]


class CoordinateUpdate(nn.Module):
    """Position increment of one DefiNet layer: ``½ [Vec2Disp(v) + RVP2Disp(x, edges)]``.

    - Vec2Disp: a bias-free linear map of the vector features, (N, 3, H) → (N, 3).
    - RVP2Disp (EGNN-like): ``Σ_j MLP(ψ(x_j) ⊙ W·rbf_ij ⊙ gate_ij) · u_ji`` where ``u_ji`` is the
      unit vector from the neighbour j towards the centre i and ``gate_ij`` the defect gate.

    Both output layers start at zero, so an untrained model returns its input positions (the
    "dummy" prediction) and training only learns the displacement.

    Args:
        hidden: feature width H.
        edge_dim: width of the radial features.
        label_dim: width of the label embedding.
    """

    def __init__(self, hidden: int, edge_dim: int, label_dim: int) -> None:
        super().__init__()
        self.vec2disp = nn.Linear(hidden, 1, bias=False)
        self.psi = nn.Linear(hidden, hidden)
        self.edge_proj = nn.Linear(edge_dim, hidden)
        self.gate = DefectEdgeGate(label_dim, hidden)
        self.edge_mlp = nn.Sequential(nn.Linear(hidden, hidden), ScaledSiLU(), nn.Linear(hidden, 1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in (self.psi, self.edge_proj, self.edge_mlp[0]):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        self.gate.reset_parameters()
        nn.init.zeros_(self.vec2disp.weight)
        nn.init.zeros_(self.edge_mlp[2].weight)
        nn.init.zeros_(self.edge_mlp[2].bias)

    def forward(
        self, x: Tensor, v: Tensor, label_emb: Tensor, edge_index: Tensor, edge_attr: Tensor, unit: Tensor
    ) -> Tensor:
        """Displacement (N, 3), Å.

        Args:
            x: (N, H) scalars; v: (N, 3, H) vectors.
            label_emb: (N, label_dim) defect-label embeddings.
            edge_index: (2, E) rows (i centre, j neighbour).
            edge_attr: (E, edge_dim) radial features.
            unit: (E, 3) unit vectors along r_ij (from i towards j).
        """
        i, j = edge_index[0], edge_index[1]
        m = self.psi(x)[j] * self.edge_proj(edge_attr) * self.gate(label_emb, edge_index)
        w = self.edge_mlp(m)  # (E, 1), invariant
        rvp = scatter_sum(-w * unit, i, x.shape[0])  # along u_ji = -u_ij
        vec = self.vec2disp(v).squeeze(-1)
        return 0.5 * (vec + rvp)


def safe_unit(vec: Tensor, length: Tensor, eps: float = 1e-9) -> Tensor:
    """Unit vectors ``vec / length`` that stay finite for (degenerate) zero-length edges."""
    return vec / length.clamp_min(eps).unsqueeze(-1)
