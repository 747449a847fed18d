"""One small strategy object per federated method (Flower's own pattern): what a method changes.

A strategy answers five questions and nothing else; the round loop (:mod:`quintet.fedaux.loop`) and the
client update (:func:`quintet.fedaux.algorithms.client_round`) are the same for every method:

* :meth:`Strategy.build_model` — the network (plain GCN, MaskedGCN, FedAux's network);
* :meth:`Strategy.local_keys` — parameters that never leave the client;
* :meth:`Strategy.regulariser` — a term added to the client's loss (FedProx, FED-PUB);
* :meth:`Strategy.extra_upload` / :meth:`Strategy.expected_upload` — what a reply must hold;
* :meth:`Strategy.aggregate` — the server step: uploads of the clients that replied → one download each.

The maths of the server step lives in :mod:`quintet.fedaux.aggregation` (pure functions).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from quintet.fedaux.aggregation import (
    cosine_similarity_matrix,
    personalised_mix,
    similarity_weights,
    size_weights,
    weighted_average,
)
from quintet.fedaux.data import gcn_norm_adjacency
from quintet.fedaux.models import APV_KEY, FedAuxNet, GCNNet

if TYPE_CHECKING:
    from quintet.fedaux.algorithms import AlgoConfig

__all__ = ["FE_KEY", "STRATEGIES", "Strategy", "strategy_for"]

#: upload key of FED-PUB's functional embedding
FE_KEY = "functional_embedding"

Uploads = Mapping[int, Mapping[str, torch.Tensor]]
Aggregated = tuple[dict[int, dict[str, torch.Tensor]], dict[str, torch.Tensor]]


class Strategy:
    """FedAvg-style defaults: a plain GCN, everything shared, a train-size weighted average."""

    name: ClassVar[str] = "fedavg"

    def __init__(self, cfg: AlgoConfig) -> None:
        self.cfg = cfg

    def build_model(self, in_dim: int, num_classes: int) -> nn.Module:
        c = self.cfg
        return GCNNet(in_dim, c.hidden, num_classes, c.num_layers, masked=False, dropout=c.dropout)

    def local_keys(self, names: list[str]) -> set[str]:
        """Parameter names that never leave the client."""
        return set()

    def shared_keys(self, names: list[str]) -> list[str]:
        """Parameter names that are uploaded and mixed (sorted)."""
        loc = self.local_keys(names)
        return sorted(n for n in names if n not in loc)

    def regulariser(self, model: nn.Module, anchor: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Added to the cross-entropy; ``anchor`` holds the parameters received this round."""
        return torch.zeros(())

    def extra_upload(self, model: nn.Module, in_dim: int) -> dict[str, torch.Tensor]:
        """Tensors uploaded besides the shared parameters (computed without gradients)."""
        return {}

    def expected_upload(self, init: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
        """Keys and shapes a valid upload must have (used to reject malformed replies)."""
        return {k: tuple(init[k].shape) for k in self.shared_keys(list(init))}

    def aggregate(self, uploads: Uploads, sizes: Mapping[int, float]) -> Aggregated:
        """``({client_id: download}, {"weights": (K, K) mixing matrix, "clients": ids})``."""
        ids = sorted(uploads)
        if not ids:
            return {}, {}
        w = size_weights([sizes[c] for c in ids])
        avg = weighted_average([dict(uploads[c]) for c in ids], w)
        return {c: avg for c in ids}, {"weights": w.repeat(len(ids), 1), "clients": torch.tensor(ids)}


class FedAvg(Strategy):
    """McMahan et al.: the train-size weighted average of all parameters."""

    name = "fedavg"


class Local(Strategy):
    """No federation: every parameter stays on its client, the server sends nothing."""

    name = "local"

    def local_keys(self, names: list[str]) -> set[str]:
        return set(names)

    def aggregate(self, uploads: Uploads, sizes: Mapping[int, float]) -> Aggregated:
        return {}, {}


class FedProx(Strategy):
    """FedAvg plus μ/2‖θ − θ_received‖² on the client."""

    name = "fedprox"

    def regulariser(self, model: nn.Module, anchor: Mapping[str, torch.Tensor]) -> torch.Tensor:
        reg = torch.zeros(())
        params = dict(model.named_parameters())
        for k, a in anchor.items():
            reg = reg + 0.5 * self.cfg.mu * (params[k] - a).pow(2).sum()
        return reg


class FedPer(Strategy):
    """FedAvg of the GNN layers; the classifier head stays on the client."""

    name = "fedper"

    def local_keys(self, names: list[str]) -> set[str]:
        return {n for n in names if n.startswith("head.")}


_PROXY_CACHE: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}


def _proxy_graph(seed: int, in_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """FED-PUB's proxy input: 5 blocks of 100 nodes, p_in=0.1, p_out=0, N(0,1) features (seeded)."""
    key = (seed, in_dim)
    if key not in _PROXY_CACHE:
        import networkx as nx

        g = nx.random_partition_graph([100] * 5, 0.1, 0.0, seed=seed)
        ei = torch.tensor(list(g.edges()), dtype=torch.long).t()
        ei = torch.cat([ei, ei.flip(0)], 1)
        x = torch.randn(500, in_dim, generator=torch.Generator().manual_seed(seed))
        _PROXY_CACHE[key] = (x, gcn_norm_adjacency(ei, 500))
    return _PROXY_CACHE[key]


def _mask_keys(names: list[str]) -> set[str]:
    return {n for n in names if n.endswith(".mask")}


class FedPub(Strategy):
    """FED-PUB: MaskedGCN with personal masks; softmax(α·cos) of functional embeddings on a proxy graph."""

    name = "fedpub"

    def build_model(self, in_dim: int, num_classes: int) -> nn.Module:
        c = self.cfg
        return GCNNet(
            in_dim, c.hidden, num_classes, c.num_layers, masked=True, dropout=c.dropout, head_init=c.head_init
        )

    def local_keys(self, names: list[str]) -> set[str]:
        return _mask_keys(names)

    def regulariser(self, model: nn.Module, anchor: Mapping[str, torch.Tensor]) -> torch.Tensor:
        c, reg = self.cfg, torch.zeros(())
        for k, p in model.named_parameters():
            if k.endswith(".mask") and c.fedpub_l1 > 0:
                reg = reg + c.fedpub_l1 * p.abs().sum()
            elif (
                c.fedpub_prox > 0 and anchor and k in anchor and (k.endswith(".weight") or k.endswith("bias"))
            ):
                reg = reg + c.fedpub_prox * (p - anchor[k]).norm(2)
        return reg

    def extra_upload(self, model: nn.Module, in_dim: int) -> dict[str, torch.Tensor]:
        px, padj = _proxy_graph(self.cfg.proxy_seed, in_dim)
        assert isinstance(model, GCNNet)
        return {FE_KEY: model.gnn.embed(px, padj).mean(0)}

    def expected_upload(self, init: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
        return {**super().expected_upload(init), FE_KEY: (self.cfg.hidden,)}

    def aggregate(self, uploads: Uploads, sizes: Mapping[int, float]) -> Aggregated:
        return _similarity_mix(uploads, FE_KEY, self.cfg.fedpub_alpha, drop=FE_KEY)


class FedAux(Strategy):
    """FedAux: MaskedGCN + APV + kernel smoothing; softmax(α·cos(APV)) mix of θ and the APV."""

    name = "fedaux"

    def build_model(self, in_dim: int, num_classes: int) -> nn.Module:
        c = self.cfg
        official = c.variant == "official"
        return FedAuxNet(
            in_dim,
            c.hidden,
            num_classes,
            c.num_layers,
            masked=True,
            dropout=c.dropout,
            kernel=c.kernel,
            score="cosine" if official else "paper",
            sigma=c.sigma,
            apv_init="uniform" if official else "gaussian",
            conv_kernel=c.conv_kernel,
            chunk_size=c.chunk_size,
            apv_norm=c.apv_norm,
            head_init=c.head_init,
        )

    def local_keys(self, names: list[str]) -> set[str]:
        return _mask_keys(names) if self.cfg.local_masks else set()

    def aggregate(self, uploads: Uploads, sizes: Mapping[int, float]) -> Aggregated:
        return _similarity_mix(uploads, APV_KEY, self.cfg.alpha)


def _similarity_mix(uploads: Uploads, key: str, alpha: float, drop: str | None = None) -> Aggregated:
    """Personalised mix of the uploads by softmax(α·cos) of their ``key`` vectors (``drop`` is not mixed)."""
    ids = sorted(uploads)
    if not ids:
        return {}, {}
    params = [{k: v for k, v in uploads[c].items() if k != drop} for c in ids]
    vec = torch.stack([uploads[c][key] for c in ids])
    w = similarity_weights(cosine_similarity_matrix(vec), alpha)
    mixed = personalised_mix(params, w)
    return dict(zip(ids, mixed, strict=True)), {"weights": w, "clients": torch.tensor(ids)}


#: method name → strategy class
STRATEGIES: dict[str, type[Strategy]] = {s.name: s for s in (Local, FedAvg, FedProx, FedPer, FedPub, FedAux)}


def strategy_for(cfg: AlgoConfig) -> Strategy:
    """The strategy object of ``cfg.name``."""
    try:
        return STRATEGIES[cfg.name](cfg)
    except KeyError:
        raise ValueError(f"unknown method {cfg.name!r}; valid: {', '.join(STRATEGIES)}") from None
