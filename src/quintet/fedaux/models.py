"""Models: (masked) GCN backbone, FedAux's auxiliary projection vector + kernel smoothing, classifier.

* :class:`MaskedLinear` / :class:`GCNLayer` — FED-PUB's MaskedGCN building blocks: a weight multiplied
  elementwise by a learnable mask initialised to ones (plain GCN when ``masked=False``).
* :func:`kernel_smooth` — FedAux Eq. 6, z_i = Σ_j κ(s_i,s_j) h_j / Σ_j κ(s_i,s_j), κ = exp(−(s_i−s_j)²/σ²),
  computed in row chunks with activation checkpointing so memory is O(chunk·N), not O(N²).
* :func:`hard_sort_conv` — the "FedAux_hard" ablation: sort nodes by score, Conv1D along the order, unsort.
* :class:`GCNNet` — backbone + linear head (Local/FedAvg/FedProx/FedPer/FED-PUB).
* :class:`FedAuxNet` — backbone + APV + kernel (or hard sort + Conv1D) + head on [h ‖ z].
"""

from __future__ import annotations

import itertools
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "APV_KEY",
    "FedAuxNet",
    "GCNLayer",
    "GCNNet",
    "MaskedLinear",
    "hard_sort_conv",
    "kernel_smooth",
    "projection_scores",
]

#: parameter name of the auxiliary projection vector inside :class:`FedAuxNet`
APV_KEY = "apv"

ScoreMode = Literal["paper", "cosine"]
ApvNorm = Literal["none", "unit"]
#: weight/bias initialisations of :class:`MaskedLinear`
HEAD_INITS: tuple[str, ...] = ("kaiming", "glorot", "fedpub")


class MaskedLinear(nn.Module):
    """y = x (W ⊙ M)ᵀ + b with a learnable mask M (ones at init); a plain linear map when ``masked=False``.

    ``init``: ``kaiming`` (torch's ``nn.Linear`` weight init, zero bias), ``glorot`` (Glorot weight, zero bias;
    the GCN layers) or ``fedpub`` (FED-PUB's masked classifier: Glorot weight and a bias drawn
    Glorot-uniform as a 1 × out matrix, i.e. U(±√(6/(1+out))), which the FED-PUB and FedAux code use).
    """

    def __init__(
        self, in_dim: int, out_dim: int, bias: bool = True, masked: bool = False, init: str = "kaiming"
    ) -> None:
        super().__init__()
        self.init = init
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim)) if bias else None
        self.mask = nn.Parameter(torch.ones(out_dim, in_dim)) if masked else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.init not in HEAD_INITS:
            raise ValueError(f"unknown init {self.init!r}; valid: {', '.join(HEAD_INITS)}")
        if self.init in ("glorot", "fedpub"):
            nn.init.xavier_uniform_(self.weight)
        else:
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            if self.init == "fedpub":
                bound = math.sqrt(6.0 / (1 + self.bias.numel()))  # Glorot-uniform of a (1, out) matrix
                nn.init.uniform_(self.bias, -bound, bound)
            else:
                nn.init.zeros_(self.bias)
        if self.mask is not None:
            nn.init.ones_(self.mask)

    def effective_weight(self) -> torch.Tensor:
        return self.weight * self.mask if self.mask is not None else self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.layout != torch.strided:  # sparse bag-of-words features
            y = torch.sparse.mm(x, self.effective_weight().t())
            return y + self.bias if self.bias is not None else y
        return F.linear(x, self.effective_weight(), self.bias)

    def __repr__(self) -> str:
        o, i = self.weight.shape
        return f"MaskedLinear({i}, {o}, masked={self.mask is not None})"


class GCNLayer(nn.Module):
    """GCN layer Â X W + b with Â = D^-1/2 (A+I) D^-1/2 given as a sparse tensor (optionally masked W)."""

    def __init__(self, in_dim: int, out_dim: int, masked: bool = False) -> None:
        super().__init__()
        self.lin = MaskedLinear(in_dim, out_dim, bias=False, masked=masked, init="glorot")
        self.bias = nn.Parameter(torch.zeros(out_dim))

    def reset_parameters(self) -> None:
        self.lin.reset_parameters()
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        return torch.sparse.mm(adj, self.lin(x)) + self.bias


class Backbone(nn.Module):
    """L-layer GCN: ReLU + dropout after every layer (the output h is the last layer's activation)."""

    def __init__(
        self, in_dim: int, hidden: int, num_layers: int = 2, masked: bool = False, dropout: float = 0.5
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        dims = [in_dim] + [hidden] * num_layers
        self.convs = nn.ModuleList(GCNLayer(a, b, masked) for a, b in itertools.pairwise(dims))
        self.dropout = dropout

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.dropout(F.relu(conv(x, adj)), self.dropout, self.training)
        return x

    def embed(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """Pre-activation output of the last layer (FED-PUB's functional-embedding read-out)."""
        for conv in self.convs[:-1]:
            x = F.dropout(F.relu(conv(x, adj)), self.dropout, self.training)
        return self.convs[-1](x, adj)


class GCNNet(nn.Module):
    """Backbone + linear classifier (``head``)."""

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        num_classes: int,
        num_layers: int = 2,
        masked: bool = False,
        dropout: float = 0.5,
        head_init: str = "kaiming",
    ) -> None:
        super().__init__()
        self.gnn = Backbone(in_dim, hidden, num_layers, masked, dropout)
        self.head = MaskedLinear(hidden, num_classes, masked=masked, init=head_init)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        return self.head(self.gnn(x, adj))


# ----------------------------------------------------------------------------------------------- FedAux maths


def projection_scores(h: torch.Tensor, a: torch.Tensor, mode: ScoreMode = "paper") -> torch.Tensor:
    """1-D coordinates of the nodes on the APV line.

    ``paper``: s_i = ⟨h_i / max_j ‖h_j‖, a⟩ (one scale per client). ``cosine``: s_i = cos(h_i, a)
    (the official code).
    """
    if mode == "paper":
        scale = h.norm(dim=1).max().clamp(min=1e-12)
        return (h / scale) @ a
    if mode == "cosine":
        return F.cosine_similarity(h, a.unsqueeze(0).expand_as(h), dim=1, eps=1e-8)
    raise ValueError(f"unknown score mode {mode!r}; valid: paper, cosine")


def _smooth_rows(s_rows: torch.Tensor, s: torch.Tensor, h: torch.Tensor, inv_sigma2: float) -> torch.Tensor:
    logits = -((s_rows[:, None] - s[None, :]) ** 2) * inv_sigma2
    # subtracting the row max (0 at j == i) changes nothing mathematically and keeps exp() finite
    w = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
    return (w @ h) / w.sum(dim=1, keepdim=True)


def kernel_smooth(
    h: torch.Tensor,
    s: torch.Tensor,
    sigma: float = 1.0,
    chunk_size: int = 2048,
    checkpoint_chunks: bool = True,
) -> torch.Tensor:
    """Gaussian-kernel smoothing in score space (FedAux Eq. 6), memory-bounded.

    Args:
        h: (N, d) node embeddings.
        s: (N,) scores.
        sigma: bandwidth σ (> 0).
        chunk_size: rows of the N×N kernel materialised at once.
        checkpoint_chunks: recompute each chunk in backward instead of storing it (keeps training memory
            O(chunk·N) as well).

    Returns:
        (N, d) smoothed embeddings z.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    inv = 1.0 / (sigma * sigma)
    n = h.shape[0]
    if n <= chunk_size:
        return _smooth_rows(s, s, h, inv)
    outs = []
    grad = torch.is_grad_enabled() and (h.requires_grad or s.requires_grad)
    for start in range(0, n, chunk_size):
        rows = s[start : start + chunk_size]
        if grad and checkpoint_chunks:
            outs.append(checkpoint(_smooth_rows, rows, s, h, inv, use_reentrant=False))
        else:
            outs.append(_smooth_rows(rows, s, h, inv))
    return torch.cat(outs)


def hard_sort_conv(h: torch.Tensor, s: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """FedAux_hard: order nodes by score, Conv1D (zero padding) along that order, return in node order.

    No gradient reaches the scores (argsort), which is why the paper replaced it by the kernel.
    """
    order = torch.argsort(s.detach(), stable=True)
    seq = h[order].t().unsqueeze(0)  # (1, d, N)
    out = conv(seq).squeeze(0).t()
    z = torch.empty_like(out)
    z[order] = out
    return z


class FedAuxNet(nn.Module):
    """FedAux client model: GCN → h; APV scores; z = kernel(h) (or hard sort + Conv1D); head([h ‖ z]).

    Args:
        in_dim, hidden, num_classes, num_layers, masked, dropout: backbone (hidden = d').
        kernel: ``gaussian`` (paper) or ``hard`` (sort + Conv1D ablation).
        score: ``paper`` or ``cosine`` (official code).
        sigma: kernel bandwidth.
        apv_init: ``gaussian`` (paper, N(0, I)) or ``uniform`` (official code, U[0,1)).
        conv_kernel: Conv1D width B of the hard ablation (the paper never states it; 3 is our choice).
        chunk_size: kernel row chunk (memory bound).
        apv_norm: ``none`` (a is a free vector) or ``unit`` (a is kept on the unit sphere: re-projected at
            init and, by :func:`~quintet.fedaux.algorithms.client_round`, whenever it is loaded and after
            every optimizer step — the "unit-norm re-normalisation" of the paper's Thm 3.1 / Lemma C.3).
        head_init: classifier initialisation (:class:`MaskedLinear` ``init``).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        num_classes: int,
        num_layers: int = 2,
        masked: bool = True,
        dropout: float = 0.5,
        kernel: Literal["gaussian", "hard"] = "gaussian",
        score: ScoreMode = "paper",
        sigma: float = 1.0,
        apv_init: Literal["gaussian", "uniform"] = "gaussian",
        conv_kernel: int = 3,
        chunk_size: int = 2048,
        apv_norm: ApvNorm = "none",
        head_init: str = "kaiming",
    ) -> None:
        super().__init__()
        if apv_norm not in ("none", "unit"):
            raise ValueError(f"unknown apv_norm {apv_norm!r}; valid: none, unit")
        self.apv_norm = apv_norm
        self.gnn = Backbone(in_dim, hidden, num_layers, masked, dropout)
        self.apv = nn.Parameter(torch.empty(hidden))
        self.head = MaskedLinear(2 * hidden, num_classes, masked=masked, init=head_init)
        self.kernel, self.score, self.sigma, self.chunk_size = kernel, score, sigma, chunk_size
        self.apv_init = apv_init
        self.conv = (
            nn.Conv1d(hidden, hidden, conv_kernel, padding=conv_kernel // 2) if kernel == "hard" else None
        )
        if kernel not in ("gaussian", "hard"):
            raise ValueError(f"unknown kernel {kernel!r}; valid: gaussian, hard")
        self.reset_apv()

    def reset_apv(self) -> None:
        if self.apv_init == "gaussian":
            nn.init.normal_(self.apv)
        elif self.apv_init == "uniform":
            nn.init.uniform_(self.apv)
        else:
            raise ValueError(f"unknown apv_init {self.apv_init!r}; valid: gaussian, uniform")
        self.project_apv()

    @torch.no_grad()
    def project_apv(self) -> None:
        """With ``apv_norm="unit"``: a ← a / ‖a‖ in place (a zero vector is left as it is); else nothing."""
        if self.apv_norm == "unit":
            norm = self.apv.norm()
            if float(norm) > 0:
                self.apv.div_(norm)

    def smooth(self, h: torch.Tensor) -> torch.Tensor:
        s = projection_scores(h, self.apv, self.score)
        if self.kernel == "hard":
            assert self.conv is not None
            return hard_sort_conv(h, s, self.conv)
        return kernel_smooth(h, s, self.sigma, self.chunk_size)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        h = self.gnn(x, adj)
        return self.head(torch.cat([h, self.smooth(h)], dim=1))
