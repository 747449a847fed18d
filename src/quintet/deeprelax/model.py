"""The DeepRelax network: shared PaiNN backbone on two edge sets, distance heads with a Laplace scale,
and a residual cell head.

Given an unrelaxed structure the model predicts, for every edge, a Laplace distribution
``(mu, b)`` of (i) the *displace* distance ``|r^rel_i - r^unrel_j|`` on intra-cell edges and
(ii) the relaxed distance ``|r^rel_j + S @ cell^rel - r^rel_i|`` on all edges, plus (iii) the relaxed
cell. :func:`quintet.deeprelax.solve.solve_positions` turns the distances into coordinates.

Differences from the published model (all configurable): distances are predicted as corrections to
the distances of a first guess made by the network (``residual_base``, ``residual_distances``), the
cell offset encoding cannot collide (:func:`~quintet.deeprelax.maths.offset_encoding`), the default
cell head is rotation-equivariant (``cell_head="equivariant"``: ``cell' = (I + E) cell`` with ``E`` a
function of invariants only), and cell vectors along non-periodic directions are never changed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from quintet.atomistic import keys as K
from quintet.atomistic.neighbors import edge_vectors
from quintet.atomistic.nn import AtomEmbedding, RadialBasis, ScaledSiLU, VectorReadout, mlp
from quintet.atomistic.nn.backbone import ScalarVectorBackbone
from quintet.atomistic.nn.scatter import scatter_mean, scatter_sum
from quintet.deeprelax.graph import DISPLACE, build_edges
from quintet.deeprelax.maths import OFFSET_FREQUENCIES, offset_encoding

__all__ = ["DeepRelax", "ModelConfig", "ensure_graph"]

# output keys of DeepRelax.forward
MU_DISPLACE = "mu_displace"  # (E_d,) predicted displace distances, Å
LOG_B_DISPLACE = "log_b_displace"  # (E_d,) log Laplace scale
MU_RELAXED = "mu_relaxed"  # (E,) predicted relaxed distances of every edge, Å
LOG_B_RELAXED = "log_b_relaxed"  # (E,)
PRED_CELL = "pred_cell"  # (B, 3, 3) predicted relaxed cell
INIT_POS = "init_pos"  # (N, 3) the network's first guess of the relaxed positions (start of the solve)
LOG_B_CELL = "log_b_cell"  # (B,) log Laplace scale of the predicted cell entries (cell_uncertainty)


@dataclass
class ModelConfig:
    """Architecture of :class:`DeepRelax` (the published sizes are hidden 512, 4 layers, 128 RBF).

    Attributes:
        hidden: feature width H.
        num_layers: message-passing layers.
        num_rbf: Gaussian radial functions.
        cutoff: radius of the inter-cell image edges, Å.
        rbf_cutoff: range the Gaussians (and their envelope) span, Å (30 in the paper).
        max_neighbors: nearest image edges kept per atom (before dropping same-cell pairs).
        max_displace: nearest same-cell atoms per atom (displace edges).
        cell_head: ``"equivariant"`` (``cell' = (I + E) cell``, E from invariants) or ``"published"``
            (raw cell entries through an MLP; not rotation-equivariant).
        residual_distances: predict distances as a correction to a base distance (see
            ``residual_base``); False predicts them directly, as the paper does.
        relax_cell: predict a cell change at all (False keeps the input cell, e.g. for fixed-cell data).
        residual_base: what the distance heads correct. ``"displaced"``: the distances of a first guess
            made by the network itself, p = u F + δ (the unrelaxed positions u carried along by the
            predicted cell deformation F in fractional coordinates, plus an equivariant per-atom
            displacement δ read out of the vector features); the solve also starts from p.
            ``"unrelaxed"``: the unrelaxed distances (and the solve starts from u).
        cell_uncertainty: also predict a Laplace scale b_cell (Å) of the predicted cell entries, one per
            structure, from the pooled atom features (not in the paper, whose cell head has no uncertainty).
            It is trained on detached features and a detached cell, so it leaves the rest of the model and its
            training as they were; it adds the cell's share to each atom's uncertainty (see
            :func:`~quintet.deeprelax.inference.relax_ensemble`). Model files from before it load without it.
        detach_base_cell: with ``residual_base="displaced"``, build the distance heads' base distances
            on the predicted cell *detached*, so that the distance NLLs (whose gradients scale with
            1/b, ~100x the cell's L1) do not train the cell head through the base; the cell head then
            learns from the cell L1 and the first-guess position loss only. Training-only: the forward
            values are the same either way. On the EMT alloys it cut the test cell error from 0.0233
            to 0.0165 Å and the coordinate error from 0.287x to 0.249x the dummy (docs/deeprelax.md);
            False is the behaviour of model files trained before it.
        message_scale: factor on the backbone's aggregated messages
            (:class:`~quintet.atomistic.nn.ScalarVectorBackbone`); 1 is the plain sum of PaiNN.
        canonical_cell: train, score and predict every 3D cell in its Niggli basis
            (:func:`quintet.deeprelax.data.canonical_record`), so the setting a user writes does not change the
            prediction; False is the behaviour of model files trained before it (they saw cells as written).
    """

    hidden: int = 128
    num_layers: int = 3
    num_rbf: int = 64
    cutoff: float = 6.0
    rbf_cutoff: float = 30.0
    max_neighbors: int = 30
    max_displace: int = 20
    cell_head: Literal["equivariant", "published"] = "equivariant"
    residual_distances: bool = True
    relax_cell: bool = True
    residual_base: Literal["displaced", "unrelaxed"] = "displaced"
    cell_uncertainty: bool = True
    detach_base_cell: bool = True
    message_scale: float = 1.0
    canonical_cell: bool = True

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.num_layers < 1 or self.num_rbf < 1:
            raise ValueError("hidden, num_layers and num_rbf must be >= 1")
        if self.cutoff <= 0 or self.rbf_cutoff <= 0:
            raise ValueError("cutoff and rbf_cutoff must be positive")
        if self.max_displace < 1 or self.max_neighbors < 1:
            raise ValueError("max_displace and max_neighbors must be >= 1")


def ensure_graph(batch: dict[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """Add the DeepRelax edges to a collated batch when it carries none (per structure, numpy)."""
    if K.EDGE_INDEX in batch and DISPLACE in batch:
        return batch
    import numpy as np

    pos = batch[K.POSITIONS].detach().cpu().numpy()
    cells = batch[K.CELL].detach().cpu().numpy().reshape(-1, 3, 3)
    pbcs = batch[K.PBC].detach().cpu().numpy().astype(bool).reshape(-1, 3)
    counts = batch[K.NUM_ATOMS].detach().cpu().numpy().reshape(-1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    eis, shs, ms = [], [], []
    for g, (s0, n) in enumerate(zip(starts, counts, strict=True)):
        ei, sh, m = build_edges(
            pos[s0 : s0 + n], cells[g], pbcs[g], cfg.cutoff, cfg.max_neighbors, cfg.max_displace
        )
        eis.append(ei + s0)
        shs.append(sh)
        ms.append(m)
    dev, dt = batch[K.POSITIONS].device, batch[K.POSITIONS].dtype
    out = dict(batch)
    out[K.EDGE_INDEX] = torch.from_numpy(np.concatenate(eis, axis=1)).to(dev)
    out[K.EDGE_SHIFT] = torch.from_numpy(np.concatenate(shs)).to(device=dev, dtype=dt)
    out[DISPLACE] = torch.from_numpy(np.concatenate(ms)).to(dev)
    return out


def safe_box(cell: Tensor) -> Tensor:
    """(B, 3, 3) cells with zero rows (vacuum directions of slabs, molecules) replaced by unit normals.

    The result is invertible whenever the non-zero rows are independent, so fractional coordinates and
    cell deformations are defined for 2D cells stored with a zero third vector.
    """
    eye = torch.eye(3, dtype=cell.dtype, device=cell.device).expand_as(cell)
    zero = torch.linalg.vector_norm(cell, dim=-1, keepdim=True) < 1e-6  # (B, 3, 1)
    normals = torch.stack(
        [torch.linalg.cross(cell[:, (k + 1) % 3], cell[:, (k + 2) % 3], dim=-1) for k in range(3)], dim=1
    )
    nn_ = torch.linalg.vector_norm(normals, dim=-1, keepdim=True)
    normals = torch.where(nn_ > 1e-9, normals / nn_.clamp_min(1e-9), eye)
    box = torch.where(zero, normals, cell)
    still = torch.linalg.det(box).abs() < 1e-9
    return torch.where(still.view(-1, 1, 1), eye, box)


def first_guess(pos: Tensor, cell: Tensor, pred_cell: Tensor, delta: Tensor, batch: Tensor) -> Tensor:
    """p = u F + δ with F = box(cell)^-1 box(pred_cell): fractional coordinates carried into the new cell.

    This is how ASE's cell filters (and so the oracles that made the labels) move atoms with the cell:
    about the origin. The displace distances |p_i - u_j| therefore follow a translation t of the input
    as the labels do (the relaxed structure moves by t F, not t); relaxed distances stay invariant.
    """
    f = torch.linalg.solve(safe_box(cell), safe_box(pred_cell))  # u F maps the old cell onto the new one
    return torch.einsum("nk,nkl->nl", pos, f[batch]) + delta


class _DistanceHead(nn.Module):
    """Edge head: MLP([h_i, h_j, MLP(edge features)]) -> (mu, log b)."""

    def __init__(self, hidden: int, edge_dim: int, residual: bool) -> None:
        super().__init__()
        self.branch = nn.Sequential(nn.Linear(hidden, hidden), ScaledSiLU())
        self.edge = mlp(edge_dim, hidden, hidden)
        self.out = mlp(3 * hidden, hidden, 2)
        self.residual = residual
        # start at "no change, b = e^-2 ≈ 0.14 Å": the unrelaxed distance is already a good guess
        nn.init.zeros_(self.out[-1].weight)
        nn.init.constant_(self.out[-1].bias, 0.0)
        with torch.no_grad():
            self.out[-1].bias[1] = -2.0

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, d0: Tensor) -> tuple[Tensor, Tensor]:
        h = self.branch(x)
        i, j = edge_index[0], edge_index[1]
        o = self.out(torch.cat([h[i], h[j], self.edge(edge_attr)], dim=-1))
        delta, log_b = o[:, 0], o[:, 1]
        mu = torch.relu(d0 + delta) if self.residual else torch.relu(delta)
        return mu, log_b


class _EquivariantCellHead(nn.Module):
    """cell' = (I + E) cell with E (3x3) an MLP of invariants (mean atom features, lengths, angles)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(nn.Linear(hidden, hidden), ScaledSiLU())
        self.geom = mlp(7, hidden, hidden)
        self.out = mlp(2 * hidden, hidden, 9)
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: Tensor, batch: Tensor, num_graphs: int, cell: Tensor, num_atoms: Tensor) -> Tensor:
        pooled = scatter_mean(self.branch(x), batch, num_graphs)
        lengths = torch.linalg.vector_norm(cell, dim=-1).clamp_min(1e-3)  # (B, 3)
        unit = cell / lengths.unsqueeze(-1)
        cosines = torch.stack(
            [
                (unit[:, 1] * unit[:, 2]).sum(-1),
                (unit[:, 0] * unit[:, 2]).sum(-1),
                (unit[:, 0] * unit[:, 1]).sum(-1),
            ],
            dim=-1,
        )
        vol = torch.linalg.det(cell).abs().clamp_min(1e-3)
        geom = torch.cat(
            [torch.log(lengths), cosines, torch.log(vol / num_atoms.to(cell.dtype)).unsqueeze(-1)], dim=-1
        )
        e = self.out(torch.cat([pooled, self.geom(geom)], dim=-1)).reshape(-1, 3, 3)
        return e


class _PublishedCellHead(nn.Module):
    """cell' = cell + MLP([sum_atoms h, MLP(vec(cell))]) — the published, non-equivariant head."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(nn.Linear(hidden, hidden), ScaledSiLU())
        self.cell_mlp = mlp(9, hidden, hidden)
        self.out = mlp(2 * hidden, hidden, 9)
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: Tensor, batch: Tensor, num_graphs: int, cell: Tensor, num_atoms: Tensor) -> Tensor:
        pooled = scatter_sum(self.branch(x), batch, num_graphs)
        return self.out(torch.cat([pooled, self.cell_mlp(cell.reshape(-1, 9))], dim=-1)).reshape(-1, 3, 3)


class DeepRelax(nn.Module):
    """DeepRelax on the shared scalar-vector backbone (see the module docstring).

    Args:
        cfg: :class:`ModelConfig`.
    """

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or ModelConfig()
        c = self.cfg
        self.embedding = AtomEmbedding(c.hidden)
        self.radial = RadialBasis(c.num_rbf, cutoff=c.rbf_cutoff, rbf_cutoff=c.rbf_cutoff)
        self.edge_dim = c.num_rbf + 6 * len(OFFSET_FREQUENCIES) + 1
        self.backbone = ScalarVectorBackbone(
            c.hidden, c.num_layers, self.edge_dim, update="painn", global_node=False, message_scale=c.message_scale
        )
        self.displace_head = _DistanceHead(c.hidden, self.edge_dim, c.residual_distances)
        self.relaxed_head = _DistanceHead(c.hidden, self.edge_dim, c.residual_distances)
        self.displacement = VectorReadout(c.hidden)
        nn.init.zeros_(self.displacement.lin.weight)
        self.cell_head: nn.Module = (
            _EquivariantCellHead(c.hidden) if c.cell_head == "equivariant" else _PublishedCellHead(c.hidden)
        )
        self.cell_scale: nn.Module | None = None
        if c.relax_cell and c.cell_uncertainty:  # built last: the other modules' initial weights are unchanged
            self.cell_scale = mlp(c.hidden, c.hidden, 1)
            nn.init.zeros_(self.cell_scale[-1].weight)
            nn.init.constant_(self.cell_scale[-1].bias, -3.0)  # b_cell = e^-3 ≈ 0.05 Å to start

    def config_dict(self) -> dict[str, Any]:
        """The architecture as a plain dict (stored in checkpoints)."""
        return asdict(self.cfg)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Predict distance distributions and the relaxed cell of a collated batch of unrelaxed structures.

        The batch needs ``POSITIONS``, ``ATOMIC_NUMBERS``, ``CELL``, ``PBC``, ``BATCH``, ``NUM_ATOMS``;
        the edges (``EDGE_INDEX``, ``EDGE_SHIFT``, :data:`~quintet.deeprelax.graph.DISPLACE`) are built
        when absent. Returns a dict with ``mu_displace``/``log_b_displace`` (displace edges, in edge
        order), ``mu_relaxed``/``log_b_relaxed`` (every edge), ``pred_cell`` (B, 3, 3), ``log_b_cell`` (B,;
        with ``cell_uncertainty``), and the edges used.
        """
        batch = ensure_graph(batch, self.cfg)
        pos, z, cell = batch[K.POSITIONS], batch[K.ATOMIC_NUMBERS], batch[K.CELL].reshape(-1, 3, 3)
        bidx, ei, shift, disp = batch[K.BATCH], batch[K.EDGE_INDEX], batch[K.EDGE_SHIFT], batch[DISPLACE]
        num_graphs = cell.shape[0]
        vec, d = edge_vectors(pos, cell, ei, shift, bidx)
        unit = vec / d.clamp_min(1e-9).unsqueeze(-1)
        edge_attr = torch.cat(
            [self.radial(d), offset_encoding(shift).to(pos.dtype), disp.to(pos.dtype).unsqueeze(-1)], dim=-1
        )
        x = self.embedding(z).to(pos.dtype)
        v = x.new_zeros((x.shape[0], 3, x.shape[1]))
        x, v = self.backbone(x, v, ei, edge_attr, unit, bidx, num_graphs)
        pbc = batch[K.PBC].reshape(-1, 3)
        if self.cfg.relax_cell:
            e = self.cell_head(x, bidx, num_graphs, cell, batch[K.NUM_ATOMS])
            per = pbc.to(pos.dtype)
            e = e * per.unsqueeze(-1) * per.unsqueeze(-2)  # never move non-periodic cell vectors
            pred_cell = cell + (e @ cell if self.cfg.cell_head == "equivariant" else e)
        else:
            pred_cell = cell
        if self.cfg.residual_base == "displaced":
            delta = self.displacement(v).squeeze(-1)
            init = first_guess(pos, cell, pred_cell, delta, bidx)
            base_cell, base = pred_cell, init
            if self.cfg.detach_base_cell and pred_cell.requires_grad:
                base_cell = pred_cell.detach()
                base = first_guess(pos, cell, base_cell, delta, bidx)
            de = ei[:, disp]
            d0_disp = torch.linalg.vector_norm(base[de[0]] - pos[de[1]], dim=-1)  # displace edges have S = 0
            _, d0_rel = edge_vectors(base, base_cell, ei, shift, bidx)
        else:
            init, d0_disp, d0_rel = pos, d[disp], d
        mu_d, lb_d = self.displace_head(x, ei[:, disp], edge_attr[disp], d0_disp)
        mu_r, lb_r = self.relaxed_head(x, ei, edge_attr, d0_rel)
        extra: dict[str, Tensor] = {}
        if self.cell_scale is not None:  # detached: the scale learns the cell's error, it does not shape x
            extra[LOG_B_CELL] = self.cell_scale(scatter_mean(x.detach(), bidx, num_graphs)).squeeze(-1)
        return {
            **extra,
            MU_DISPLACE: mu_d,
            LOG_B_DISPLACE: lb_d,
            MU_RELAXED: mu_r,
            LOG_B_RELAXED: lb_r,
            PRED_CELL: pred_cell,
            INIT_POS: init,
            K.EDGE_INDEX: ei,
            K.EDGE_SHIFT: shift,
            DISPLACE: disp,
        }
