"""FedAux and the baselines as (client update, server aggregate) pairs over plain tensors.

Every method runs through the same two functions, so the in-process simulation and the Flower apps
execute identical code:

* :func:`client_round` — load the received parameters into the client's model (its local-only parameters
  and Adam state come from its own ``local_state``), train ``local_epochs`` full-batch epochs, evaluate
  on the client's val/test nodes, return the upload (shared parameters only), the new local state and
  scalar metrics. Randomness (dropout, init) is seeded from (run seed, client id, round), so results do
  not depend on the order or the process in which clients run.
* :func:`server_aggregate` — turn the uploads of the clients that replied into one download per client.

Methods (``AlgoConfig.name``):

=========  =========================  ==============================  ===========================================
method     backbone                   kept local                      server
=========  =========================  ==============================  ===========================================
local      GCN                        everything                      nothing
fedavg     GCN                        nothing                         train-size weighted average
fedprox    GCN (+ μ/2‖θ−θ_g‖²)        nothing                         train-size weighted average
fedper     GCN                        classifier head                 weighted average of the GNN layers
fedpub     MaskedGCN (+L1, +prox)     masks                           softmax(α·cos(functional embeddings)) mix
fedaux     MaskedGCN + APV + kernel   masks (``local_masks=True``)    softmax(α·cos(APVs)) mix of θ and a
=========  =========================  ==============================  ===========================================
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from quintet.fedaux.data import ClientData
from quintet.fedaux.models import APV_KEY, FedAuxNet
from quintet.fedaux.privacy import clip_and_noise
from quintet.fedaux.strategies import FE_KEY, STRATEGIES, strategy_for

__all__ = [
    "FE_KEY",
    "METHODS",
    "AlgoConfig",
    "ClientResult",
    "build_model",
    "client_round",
    "derive_seed",
    "initial_state",
    "local_keys",
    "server_aggregate",
    "shared_keys",
]

Method = Literal["local", "fedavg", "fedprox", "fedper", "fedpub", "fedaux"]
METHODS: tuple[str, ...] = tuple(STRATEGIES)


@dataclass
class AlgoConfig:
    """Hyperparameters of one federated method (defaults: the paper's, spec §1.4 / §4.6).

    Attributes:
        name: local | fedavg | fedprox | fedper | fedpub | fedaux.
        hidden: GNN width d' (FedAux sweeps 64/128/256; FED-PUB uses 128).
        num_layers: GCN layers (2).
        dropout: 0.5.
        lr / weight_decay: Adam (0.01 / 1e-6, the logged official Cora-10 run).
        local_epochs: Q (1 for Cora/CiteSeer).
        variant: fedaux ``paper`` (score ⟨h/max‖h‖, a⟩, Gaussian APV init) or ``official``
            (cosine score, U[0,1) APV init), see docs/fedaux.md; masks follow ``local_masks``.
        kernel: fedaux ``gaussian`` (paper) or ``hard`` (sort + Conv1D ablation, width ``conv_kernel``).
        sigma: kernel bandwidth σ (1).
        alpha: FedAux similarity temperature α (10).
        apv_norm: FedAux APV ``unit`` (default: re-projected onto the unit sphere at init, after loading
            the server's mix and after every local step; the paper's Thm 3.1 / App. C.1 assumption) or
            ``none`` (a free vector, the first implementation). The default was chosen on mean validation
            accuracy over the 6 benchmark cells (docs/fedaux.md).
        chunk_size: kernel rows computed at once (memory bound O(chunk·N)).
        mu: FedProx proximal coefficient.
        fedpub_alpha: FED-PUB norm_scale (3 for disjoint partitions).
        fedpub_l1: L1 coefficient on the masks. FED-PUB states 1e-3 (summed over entries); with Adam that
            drives every mask to 0 within ~100 steps (measured Cora-10: 68.5% vs 83.3%), so the default is 0.
            FED-PUB's own code adds it (and the proximal term) from detached ``state_dict()`` tensors, so
            it never trains with them either (docs/fedaux.md).
        fedpub_prox: FED-PUB coefficient of ‖θ − θ_received‖₂ (1e-3).
        proxy_seed: seed of FED-PUB's proxy graph (5 × 100-node random partition graph, N(0,1) features).
        head_init: classifier initialisation of the masked models (fedpub, fedaux): ``fedpub`` (default; the
            FED-PUB and FedAux code's masked classifier: Glorot weight, bias drawn Glorot-uniform as a
            1 × C matrix) or ``kaiming`` (torch's nn.Linear weight, zero bias; the first implementation).
            The plain-GCN baselines always use ``kaiming`` (the official GCN's classifier is nn.Linear).
            Chosen on mean validation accuracy over the 6 benchmark cells for both methods (docs/fedaux.md).
        dp_clip / dp_noise / dp_delta: client-level differential privacy of the uploads
            (:mod:`quintet.fedaux.privacy`): each round's update of every uploaded tensor is clipped to L2
            norm ``dp_clip`` (0: off) and N(0, (dp_noise·dp_clip)²) noise is added; the run reports ε at
            ``dp_delta``.
    """

    name: Method = "fedaux"
    hidden: int = 128
    num_layers: int = 2
    dropout: float = 0.5
    lr: float = 0.01
    weight_decay: float = 1e-6
    local_epochs: int = 1
    variant: Literal["paper", "official"] = "paper"
    local_masks: bool = True
    kernel: Literal["gaussian", "hard"] = "gaussian"
    sigma: float = 1.0
    alpha: float = 10.0
    apv_norm: Literal["none", "unit"] = "unit"
    conv_kernel: int = 3
    chunk_size: int = 2048
    mu: float = 0.01
    fedpub_alpha: float = 3.0
    fedpub_l1: float = 0.0
    fedpub_prox: float = 1e-3
    proxy_seed: int = 1234
    head_init: Literal["kaiming", "fedpub"] = "fedpub"
    dp_clip: float = 0.0
    dp_noise: float = 0.0
    dp_delta: float = 1e-5

    def __post_init__(self) -> None:
        if self.name not in METHODS:
            raise ValueError(f"unknown method {self.name!r}; valid: {', '.join(METHODS)}")
        if self.hidden < 1 or self.local_epochs < 1 or self.num_layers < 1:
            raise ValueError("hidden, num_layers and local_epochs must be >= 1")
        if self.sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")
        if self.apv_norm not in ("none", "unit"):
            raise ValueError(f"unknown apv_norm {self.apv_norm!r}; valid: none, unit")
        if self.head_init not in ("kaiming", "fedpub"):
            raise ValueError(f"unknown head_init {self.head_init!r}; valid: kaiming, fedpub")
        if self.dp_clip < 0 or self.dp_noise < 0 or not 0 < self.dp_delta < 1:
            raise ValueError("dp_clip and dp_noise must be >= 0 and dp_delta in (0, 1)")
        if self.dp_clip > 0 and self.name in ("local", "fedpub"):
            raise ValueError(
                f"dp_clip is not available for {self.name}: local uploads nothing, and FED-PUB's functional "
                "embedding is computed from the un-noised model; use fedavg, fedprox, fedper or fedaux"
            )


@dataclass
class ClientResult:
    """What one client round produces.

    Attributes:
        upload: tensors sent to the server (shared parameters; APV for FedAux; functional embedding for
            FED-PUB).
        local_state: tensors the client keeps (full model + Adam moments).
        metrics: scalars (train_loss, val_acc, test_acc, num_train, num_val, num_test).
    """

    upload: dict[str, torch.Tensor]
    local_state: dict[str, torch.Tensor]
    metrics: dict[str, float]


def derive_seed(seed: int, client_id: int, rnd: int) -> int:
    """A deterministic per-(run, client, round) seed."""
    return (seed * 1_000_003 + client_id * 10_007 + rnd * 101) % (2**31 - 1)


def build_model(cfg: AlgoConfig, in_dim: int, num_classes: int) -> nn.Module:
    """The network of ``cfg.name`` (plain GCN for local/fedavg/fedprox/fedper, masked for fedpub/fedaux)."""
    return strategy_for(cfg).build_model(in_dim, num_classes)


def local_keys(cfg: AlgoConfig, names: list[str]) -> set[str]:
    """Parameter names that never leave the client."""
    return strategy_for(cfg).local_keys(names)


def shared_keys(cfg: AlgoConfig, names: list[str]) -> list[str]:
    """Parameter names that are uploaded and mixed (sorted)."""
    return strategy_for(cfg).shared_keys(names)


def initial_state(cfg: AlgoConfig, in_dim: int, num_classes: int, seed: int) -> dict[str, torch.Tensor]:
    """The server's round-0 model θ⁽⁰⁾ (and a⁽⁰⁾ ~ N(0, I) for FedAux), seeded."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(cfg, in_dim, num_classes)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------------------------- client side


def _flatten_optimizer(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for idx, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            out[f"opt/{idx}/{k}"] = torch.as_tensor(v).detach()  # the optimizer is discarded: no copy
    return out


def _restore_optimizer(opt: torch.optim.Optimizer, flat: Mapping[str, torch.Tensor]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in flat.items():
        if key.startswith("opt/"):
            _, idx, name = key.split("/", 2)
            state.setdefault(int(idx), {})[name] = v  # load_state_dict copies
    if state:
        sd = opt.state_dict()
        sd["state"] = state
        opt.load_state_dict(sd)


_MODEL_CACHE: dict[tuple[str, int, int], nn.Module] = {}


def _cached_model(cfg: AlgoConfig, in_dim: int, num_classes: int) -> nn.Module:
    """One reusable model per (config, dims) and process; every parameter is overwritten before use."""
    key = (repr(cfg), in_dim, num_classes)
    model = _MODEL_CACHE.get(key)
    if model is None:
        if len(_MODEL_CACHE) >= 8:
            _MODEL_CACHE.clear()
        with torch.random.fork_rng():
            model = build_model(cfg, in_dim, num_classes)
        _MODEL_CACHE[key] = model
    return model


def _accuracy(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> float:
    if not bool(mask.any()):
        return float("nan")
    return float((logits[mask].argmax(1) == y[mask]).float().mean())


def _evaluate(model: nn.Module, data: ClientData, adj: torch.Tensor) -> dict[str, float]:
    logits = model(data.features(), adj)
    return {
        "train_acc": _accuracy(logits, data.y, data.train_mask),
        "val_acc": _accuracy(logits, data.y, data.val_mask),
        "test_acc": _accuracy(logits, data.y, data.test_mask),
        "num_train": float(data.train_mask.sum()),
        "num_val": float(data.val_mask.sum()),
        "num_test": float(data.test_mask.sum()),
    }


def _merged_state(
    template: Mapping[str, torch.Tensor],
    received: Mapping[str, torch.Tensor],
    local_state: Mapping[str, torch.Tensor] | None,
    client_id: int,
    rnd: int,
) -> dict[str, torch.Tensor]:
    """The client's own parameters (``local_state``) overwritten by what the server sent, checked."""
    state: dict[str, torch.Tensor] = {}
    if local_state is not None:
        state = {k[len("model/") :]: v for k, v in local_state.items() if k.startswith("model/")}
        unknown = set(state) - set(template)
        if unknown:
            raise ValueError(f"client {client_id}: local state has unknown keys {sorted(unknown)[:3]}")
    for k, v in received.items():
        if k not in template:
            raise ValueError(f"client {client_id}: received unknown parameter {k!r}")
        if tuple(v.shape) != tuple(template[k].shape):
            raise ValueError(
                f"client {client_id}: {k} has shape {tuple(v.shape)}, model has {tuple(template[k].shape)}"
            )
        state[k] = v.to(template[k].dtype)
    missing = set(template) - set(state)
    if missing:
        raise ValueError(
            f"client {client_id}: round {rnd} lacks parameters {sorted(missing)[:3]} "
            "(no local state and no full model received)"
        )
    return state


def _train_epochs(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    data: ClientData,
    adj: torch.Tensor,
    epochs: int,
    regulariser: Callable[[], torch.Tensor],
    project: Callable[[], None],
) -> float:
    """Full-batch cross-entropy on the training nodes (+ the strategy's term); the last epoch's loss."""
    model.train()
    loss_val = float("nan")
    for _ in range(epochs):
        opt.zero_grad(set_to_none=True)
        logits = model(data.features(), adj)
        loss = F.cross_entropy(logits[data.train_mask], data.y[data.train_mask])
        total = loss + regulariser()
        total.backward()
        opt.step()
        project()
        loss_val = float(loss.detach())
    return loss_val


def client_round(
    cfg: AlgoConfig,
    data: ClientData,
    num_classes: int,
    received: Mapping[str, torch.Tensor],
    local_state: Mapping[str, torch.Tensor] | None,
    rnd: int,
    seed: int,
) -> ClientResult:
    """One round on one client: load, train ``cfg.local_epochs`` epochs, evaluate, package the upload.

    Args:
        cfg: the method.
        data: this client's subgraph.
        num_classes: C of the global task.
        received: parameters from the server (the full θ⁽⁰⁾ in round 1; shared keys afterwards; may be
            empty for ``local`` or for a client the server has nothing new for).
        local_state: what :attr:`ClientResult.local_state` returned last round (``None`` in round 1).
        rnd: round number (1-based), used for seeding.
        seed: run seed.
    """
    strategy = strategy_for(cfg)
    model = _cached_model(cfg, data.x.shape[1], num_classes)
    names = [n for n, _ in model.named_parameters()]
    for p in model.parameters():
        p.grad = None
    model.load_state_dict(_merged_state(model.state_dict(), received, local_state, data.client_id, rnd))
    project = model.project_apv if isinstance(model, FedAuxNet) else (lambda: None)
    project()  # the server's mix of unit APVs is shorter than 1: back onto the sphere
    start = {k: v.detach().clone() for k, v in model.state_dict().items()} if cfg.dp_clip > 0 else {}
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    if local_state is not None:
        _restore_optimizer(opt, local_state)
    anchor = {k: v.detach().clone() for k, v in received.items() if k in set(names) and k != APV_KEY}
    torch.manual_seed(derive_seed(seed, data.client_id, rnd))

    adj = data.gcn_adjacency()
    loss_val = _train_epochs(
        model, opt, data, adj, cfg.local_epochs, lambda: strategy.regulariser(model, anchor), project
    )
    model.eval()
    with torch.no_grad():
        metrics = {"train_loss": loss_val, **_evaluate(model, data, adj)}
        full = {k: v.detach().clone() for k, v in model.state_dict().items()}
        upload = {k: full[k] for k in strategy.shared_keys(names)}
        upload.update(strategy.extra_upload(model, data.x.shape[1]))
        if cfg.dp_clip > 0:
            gen = torch.Generator().manual_seed(derive_seed(seed, data.client_id, rnd) + 1)
            upload, metrics["update_norm"] = clip_and_noise(start, upload, cfg.dp_clip, cfg.dp_noise, gen)
    if not all(math.isfinite(float(v.sum())) for v in upload.values()):
        metrics["non_finite_upload"] = 1.0
    new_local = {f"model/{k}": v for k, v in full.items()}
    new_local.update(_flatten_optimizer(opt))
    return ClientResult(upload=upload, local_state=new_local, metrics=metrics)


# ----------------------------------------------------------------------------------------------- server side


def expected_upload(cfg: AlgoConfig, init: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """Keys and shapes a valid upload must have (used to reject malformed replies)."""
    return strategy_for(cfg).expected_upload(init)


def server_aggregate(
    cfg: AlgoConfig, uploads: Mapping[int, Mapping[str, torch.Tensor]], sizes: Mapping[int, float]
) -> tuple[dict[int, dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """Downloads for the clients that replied, plus diagnostics (``{"weights": (K, K), "clients": ids}``).

    Args:
        cfg: the method (its :class:`~quintet.fedaux.strategies.Strategy` does the work).
        uploads: ``{client_id: upload}`` of the valid replies of this round.
        sizes: ``{client_id: number of training nodes}``.
    """
    return strategy_for(cfg).aggregate(uploads, sizes)
