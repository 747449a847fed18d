"""The one round loop, behind a transport: in-process, Flower simulation and Flower deployments share it.

* Server: :func:`run_rounds` sends one message per node (that node's personalised parameters), validates
  every reply (:func:`validate_reply`), lets the method's strategy aggregate the valid ones and keeps the
  per-round metrics. A bad reply (an error, wrong keys/shapes/dtypes, non-finite values, metrics out of
  range, a changed example count, a partition claimed by another node) is logged and skipped; the round
  goes on with the others. After the last round one more message tells every client which round was best,
  and each client saves its own personalised model of that round (``models/client_<id>.pt``): the
  parameters that never leave a client (FED-PUB/FedAux masks) never pass through the server.
* Client: :func:`handle_message` runs :func:`~quintet.fedaux.algorithms.client_round` on the node's own
  data, keeps its local state (model, Adam moments, the best round's model) in a per-node store and
  replies with the shared parameters and scalar metrics only.
* Transports: :class:`InProcessTransport` (here), ``_GridTransport`` over Flower's ``Grid``
  (:mod:`quintet.fedaux.flower`), and the tests' fake grid.

Client identity is the engine's node id. The partition a node serves is taken from its first valid reply
and then bound to that node id: a later reply that claims another partition, or another node that claims
a bound partition while its owner is still connected, is rejected.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from quintet.fedaux.algorithms import (
    AlgoConfig,
    client_round,
    expected_upload,
    initial_state,
    server_aggregate,
)
from quintet.fedaux.data import ClientData
from quintet.fedaux.privacy import gaussian_epsilon
from quintet.io import atomic_torch_save

__all__ = [
    "BEST_STATE_KEY",
    "LOCAL_STATE_KEY",
    "METRIC_KEYS",
    "MODELS_DIR",
    "ClientContext",
    "InProcessTransport",
    "LoopSpec",
    "Reply",
    "SimResult",
    "Transport",
    "handle_message",
    "json_safe",
    "run_rounds",
    "save_client_model",
    "summarise_rounds",
    "validate_reply",
]

log = logging.getLogger("quintet.fedaux.loop")

#: keys of the ``metrics`` record a client sends with its training reply (scalars only)
METRIC_KEYS = ("partition-id", "num-examples", "train_loss", "val_acc", "test_acc")
#: node-store keys: the client's model + Adam moments, and its model at the best round so far
LOCAL_STATE_KEY = "fedaux-local-state"
BEST_STATE_KEY = "fedaux-best-state"
#: folder (inside ``out``) of the per-client personalised models
MODELS_DIR = "models"
_ROUND_KEY = "meta/round"


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (and numpy scalar/array) made JSON-valid: NaN/inf → ``None``."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# ----------------------------------------------------------------------------------------------- results


@dataclass
class SimResult:
    """Per-round metrics and the protocol's headline number.

    Attributes:
        val_acc / test_acc: (T, K) per-round per-client accuracies (after local training; NaN where a
            client did not reply or its reply was rejected).
        train_loss: (T, K).
        best_round: 1-based round with the highest mean validation accuracy.
        test_at_best_val: mean client test accuracy at ``best_round`` (the reported metric, %).
        final_test: mean client test accuracy at the last round (%).
        seconds: wall time.
        weights: the last mixing matrix (if any).
        mix_max: (T,) largest entry of each round's mixing matrix (NaN for methods without one); 1/K
            everywhere means the server's weights are uniform.
        best_states: ``{client_id: state_dict}`` of every client's model at ``best_round`` (in-process runs
            only: under Flower the models stay on their clients, which save them).
        rejected: replies rejected over the run.
        models_saved: clients that saved their personalised model at the end.
        dp_epsilon: with ``algo.dp_clip > 0``, each client's ε at ``algo.dp_delta`` over the run
            (:func:`~quintet.fedaux.privacy.gaussian_epsilon`; ``inf`` when no noise is added).
    """

    val_acc: np.ndarray
    test_acc: np.ndarray
    train_loss: np.ndarray
    best_round: int
    test_at_best_val: float
    final_test: float
    seconds: float
    weights: np.ndarray | None = None
    mix_max: np.ndarray | None = None
    best_states: dict[int, dict[str, torch.Tensor]] | None = None
    rejected: int = 0
    models_saved: int = 0
    dp_epsilon: float | None = None

    def summary(self) -> dict[str, Any]:
        """The headline numbers as a JSON-valid dict (non-finite values become ``None``)."""
        mix_any = self.mix_max is not None and np.isfinite(self.mix_max).any()
        row = self.val_acc[self.best_round - 1]
        return json_safe(
            {
                "best_round": self.best_round,
                "test_at_best_val": self.test_at_best_val,
                "val_at_best": float(np.nanmean(row) * 100) if np.isfinite(row).any() else None,
                "final_test": self.final_test,
                "rounds": int(self.val_acc.shape[0]),
                "clients": int(self.val_acc.shape[1]),
                "seconds": self.seconds,
                "mix_weight_max": float(self.weights.max()) if self.weights is not None else None,
                "mix_weight_min": float(self.weights.min()) if self.weights is not None else None,
                "mix_weight_max_any_round": float(np.nanmax(self.mix_max)) if mix_any else None,
                "rejected_replies": self.rejected,
                "models_saved": self.models_saved,
                "dp_epsilon": self.dp_epsilon,
            }
        )


def summarise_rounds(val_acc: np.ndarray, test_acc: np.ndarray) -> tuple[int, float, float]:
    """(best round 1-based, mean test % at the best mean-val round, final mean test %).

    Ties in validation accuracy go to the earliest round.
    """
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a round nobody answered has no mean: NaN
        mv = np.nanmean(val_acc, axis=1)
        mt = np.nanmean(test_acc, axis=1)
    best = int(np.nanargmax(mv))
    return best + 1, float(mt[best] * 100), float(mt[-1] * 100)


# ----------------------------------------------------------------------------------------------- transport


@dataclass
class Reply:
    """One node's answer: ``content`` (``{"arrays": {...}, "metrics": {...}}``) or an ``error`` string."""

    node_id: int
    content: dict[str, dict[str, Any]] | None
    error: str | None = None


class Transport(Protocol):
    """What the round loop needs from an engine: the connected nodes, and one exchange of messages.

    ``payloads`` maps node id → ``{"arrays": {name: tensor}, "config": {...}}``; the config of the closing
    message holds ``"final": True``.
    """

    def node_ids(self) -> list[int]: ...

    def exchange(self, payloads: Mapping[int, dict[str, Any]], timeout: float) -> list[Reply]: ...


def _metric_faults(metrics: Mapping[str, Any]) -> str | None:
    """Why the scalar metrics of a reply are unusable, or ``None``."""
    for k in METRIC_KEYS:
        v = metrics[k]
        if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
            return f"metric {k} is not a number ({type(v).__name__})"
        if not math.isfinite(float(v)):
            return f"metric {k} is not finite"
    n = metrics["num-examples"]
    if float(n) != int(n) or int(n) < 1:
        return f"num-examples {n!r} is not a positive integer"
    for k in ("val_acc", "test_acc"):
        if not 0.0 <= float(metrics[k]) <= 1.0:
            return f"{k} {metrics[k]!r} is outside [0, 1]"
    if float(metrics["train_loss"]) < 0:
        return f"train_loss {metrics['train_loss']!r} is negative"
    return None


def _as_float_tensor(name: str, value: Any) -> torch.Tensor:
    """A floating tensor from an array-like, or ``ValueError`` (strings, objects, integers are refused)."""
    if isinstance(value, torch.Tensor):
        t = value
    else:
        arr = np.asarray(value)
        if arr.dtype.kind != "f":
            raise ValueError(f"{name} has dtype {arr.dtype}, expected a float array")
        t = torch.from_numpy(arr.copy())
    if not t.is_floating_point():
        raise ValueError(f"{name} has dtype {t.dtype}, expected a float tensor")
    return t


def validate_reply(
    content: Mapping[str, Mapping[str, Any]] | None, expected: Mapping[str, tuple[int, ...]], num_clients: int
) -> tuple[int, dict[str, torch.Tensor], dict[str, float]]:
    """Check a training reply; return (claimed partition, upload, metrics) or raise ``ValueError``.

    Checked: both records present, every metric a finite number, accuracies in [0, 1], a non-negative
    loss, a positive integer example count, the partition id in range, exactly the expected parameter
    keys, each a float array of the expected shape with finite values.
    """
    if content is None:
        raise ValueError("empty reply")
    arrays, metrics = content.get("arrays"), content.get("metrics")
    if arrays is None or metrics is None:
        raise ValueError(f"reply lacks 'arrays' or 'metrics' (has {sorted(content)})")
    missing = [k for k in METRIC_KEYS if k not in metrics]
    if missing:
        raise ValueError(f"metrics lack {missing}")
    fault = _metric_faults(metrics)
    if fault:
        raise ValueError(fault)
    pid = metrics["partition-id"]
    if float(pid) != int(pid) or not 0 <= int(pid) < num_clients:
        raise ValueError(f"partition-id {pid!r} is not in [0, {num_clients})")
    keys = set(arrays)
    if keys != set(expected):
        extra, lack = sorted(keys - set(expected)), sorted(set(expected) - keys)
        raise ValueError(f"wrong parameter keys (unexpected {extra[:3]}, missing {lack[:3]})")
    upload = {}
    for k, shape in expected.items():
        t = _as_float_tensor(k, arrays[k])
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"{k} has shape {tuple(t.shape)}, expected {tuple(shape)}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{k} has non-finite values")
        upload[k] = t.float()
    return int(pid), upload, {k: float(metrics[k]) for k in METRIC_KEYS}


# ----------------------------------------------------------------------------------------------- client


@dataclass
class ClientContext:
    """What one client holds: the method, its own subgraph, the class count and where it saves its model."""

    algo: AlgoConfig
    data: ClientData
    num_classes: int
    model_dir: Path | None = None


def save_client_model(path: Path, state: Mapping[str, torch.Tensor], client: ClientContext, rnd: int) -> Path:
    """Write a client's personalised model (plain tensors and numbers, ``weights_only``-loadable)."""
    blob = {
        "state_dict": dict(state),
        "client_id": int(client.data.client_id),
        "round": int(rnd),
        "in_dim": int(client.data.x.shape[1]),
        "num_classes": int(client.num_classes),
        "algo": asdict(client.algo),
    }
    atomic_torch_save(path, blob)
    return path


def _promote(store: dict[str, dict[str, torch.Tensor]], best_round: int) -> None:
    """Keep the last round's model as the best one if the server says that round was the best."""
    local = store.get(LOCAL_STATE_KEY)
    if local and best_round > 0 and _ROUND_KEY in local and int(local[_ROUND_KEY]) == best_round:
        store[BEST_STATE_KEY] = {k: v for k, v in local.items() if k.startswith("model/") or k == _ROUND_KEY}


def _finish(store: dict[str, dict[str, torch.Tensor]], client: ClientContext) -> dict[str, dict[str, Any]]:
    """Save the client's model of the server's best round; a client that missed that round (it joined
    late, or its reply then was lost) saves its last round's model instead."""
    best, local = store.get(BEST_STATE_KEY), store.get(LOCAL_STATE_KEY)
    if best is None and local and _ROUND_KEY in local:
        best = {k: v for k, v in local.items() if k.startswith("model/") or k == _ROUND_KEY}
    kept = int(best[_ROUND_KEY]) if best else 0
    saved = 0
    if best and client.model_dir is not None:
        state = {k[len("model/") :]: v for k, v in best.items() if k.startswith("model/")}
        save_client_model(Path(client.model_dir) / f"client_{client.data.client_id}.pt", state, client, kept)
        saved = 1
    return {"metrics": {"partition-id": int(client.data.client_id), "best-round": kept, "saved": saved}}


def handle_message(
    content: Mapping[str, Any], store: dict[str, dict[str, torch.Tensor]], client: ClientContext
) -> dict[str, dict[str, Any]]:
    """Client side of one message, free of engine types.

    Args:
        content: ``{"arrays": {name: tensor}, "config": {"round", "seed", "best-round"[, "final"]}}``.
        store: the node's persistent store (``context.state`` under Flower); updated in place.
        client: the node's data and method.

    Returns:
        ``{"arrays": upload, "metrics": scalars}`` (training) or ``{"metrics": {"partition-id",
        "best-round", "saved"}}`` (the closing message: the round of the model kept, and whether it was
        written); never features, labels, embeddings or gradients.
    """
    conf = content["config"]
    _promote(store, int(conf.get("best-round", 0)))
    if conf.get("final"):
        return _finish(store, client)
    rnd = int(conf["round"])
    received = {k: _as_float_tensor(k, v) for k, v in content["arrays"].items()}
    res = client_round(
        client.algo, client.data, client.num_classes, received, store.get(LOCAL_STATE_KEY) or None, rnd,
        int(conf["seed"]),
    )  # fmt: skip
    res.local_state[_ROUND_KEY] = torch.tensor(rnd)
    store[LOCAL_STATE_KEY] = res.local_state
    metrics = {
        "partition-id": int(client.data.client_id),
        "num-examples": int(res.metrics["num_train"]),
        "train_loss": res.metrics["train_loss"],
        "val_acc": res.metrics["val_acc"],
        "test_acc": res.metrics["test_acc"],
    }
    return {"arrays": res.upload, "metrics": metrics}


class InProcessTransport:
    """Every client in this process, node id = client id; client errors propagate (they are bugs here).

    ``on_round(rnd, local_states)``, if given, sees every client's local state (``model/...`` and
    ``opt/...`` tensors) after each round's local training; it must not modify them.
    """

    def __init__(
        self,
        clients: Sequence[ClientContext],
        on_round: Callable[[int, dict[int, dict[str, torch.Tensor]]], None] | None = None,
    ) -> None:
        self.clients = {c.data.client_id: c for c in clients}
        self.stores: dict[int, dict[str, dict[str, torch.Tensor]]] = {cid: {} for cid in self.clients}
        self.on_round = on_round

    def node_ids(self) -> list[int]:
        return sorted(self.clients)

    def exchange(self, payloads: Mapping[int, dict[str, Any]], timeout: float) -> list[Reply]:
        out = [Reply(n, handle_message(p, self.stores[n], self.clients[n])) for n, p in payloads.items()]
        conf = next(iter(payloads.values()))["config"] if payloads else {"final": True}
        if self.on_round is not None and not conf.get("final"):
            self.on_round(int(conf["round"]), {cid: self.local_state(cid) for cid in self.clients})
        return out

    def local_state(self, cid: int) -> dict[str, torch.Tensor]:
        st = self.stores[cid].get(LOCAL_STATE_KEY) or {}
        return {k: v for k, v in st.items() if k != _ROUND_KEY}

    def best_states(self) -> dict[int, dict[str, torch.Tensor]]:
        """``{client_id: state_dict}`` at the best round (after the closing message)."""
        out = {}
        for cid, store in self.stores.items():
            best = store.get(BEST_STATE_KEY)
            if best:
                out[cid] = {k[len("model/") :]: v for k, v in best.items() if k.startswith("model/")}
        return out


# ----------------------------------------------------------------------------------------------- server


@dataclass
class LoopSpec:
    """One run of the round loop.

    Attributes:
        algo: the method.
        num_clients: K (partition ids are 0..K-1).
        num_features / num_classes: model dimensions of the server's θ⁽⁰⁾.
        rounds / seed: as :class:`~quintet.fedaux.simulate.RunConfig`.
        round_timeout_s: replies later than this are dropped by the transport.
        progress / desc: progress bar.
    """

    algo: AlgoConfig
    num_clients: int
    num_features: int
    num_classes: int
    rounds: int
    seed: int = 0
    round_timeout_s: float = 300.0
    progress: bool = False
    desc: str = ""


@dataclass
class _Book:
    """The server's memory across rounds."""

    val: np.ndarray
    test: np.ndarray
    loss: np.ndarray
    mix_max: np.ndarray
    node_pid: dict[int, int] = field(default_factory=dict)
    examples: dict[int, int] = field(default_factory=dict)
    downloads: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    weights: np.ndarray | None = None
    rejected: int = 0
    best_round: int = 0
    best_val: float = -math.inf
    best_nodes: set[int] = field(default_factory=set)


class _Server:
    def __init__(self, spec: LoopSpec, transport: Transport) -> None:
        self.spec, self.transport = spec, transport
        self.init = initial_state(spec.algo, spec.num_features, spec.num_classes, spec.seed)
        self.expected = expected_upload(spec.algo, self.init)
        t, k = spec.rounds, spec.num_clients
        self.book = _Book(*(np.full((t, k), np.nan) for _ in range(3)), mix_max=np.full(t, np.nan))

    def payloads(self, rnd: int, final: bool = False) -> dict[int, dict[str, Any]]:
        b, out = self.book, {}
        for nid in self.transport.node_ids():
            pid = b.node_pid.get(nid)
            conf = {
                "round": rnd,
                "seed": self.spec.seed,
                "best-round": b.best_round if nid in b.best_nodes else 0,
            }
            if final:
                out[nid] = {"arrays": {}, "config": {**conf, "final": True}}
            else:
                arrays = self.init if pid is None or pid not in b.examples else b.downloads.get(pid, {})
                out[nid] = {"arrays": arrays, "config": conf}
        return out

    def _bind(self, nid: int, pid: int, examples: float) -> None:
        """Node id ↔ partition binding and the example count, or ``ValueError``."""
        b = self.book
        if nid in b.node_pid and b.node_pid[nid] != pid:
            raise ValueError(f"node {nid} serves partition {b.node_pid[nid]} but its reply claims {pid}")
        owner = next((n for n, p in b.node_pid.items() if p == pid and n != nid), None)
        if owner is not None and owner in self.transport.node_ids():
            raise ValueError(f"partition {pid} belongs to node {owner}, still connected")
        if pid in b.examples and b.examples[pid] != int(examples):
            raise ValueError(f"num-examples changed from {b.examples[pid]} to {int(examples)}")
        if owner is not None:
            del b.node_pid[owner]  # the owner left: a restarted node takes its partition over
        b.node_pid[nid] = pid
        b.examples[pid] = int(examples)

    def collect(self, rnd: int, replies: list[Reply]) -> tuple[dict[int, dict[str, torch.Tensor]], set[int]]:
        """Valid uploads by partition, and the nodes that sent them; bad replies are logged and counted."""
        b, uploads, nodes = self.book, {}, set()
        for reply in replies:
            try:
                if reply.error is not None:
                    raise ValueError(f"the node replied with an error: {reply.error}")
                pid, upload, metrics = validate_reply(reply.content, self.expected, self.spec.num_clients)
                if pid in uploads:
                    raise ValueError(f"partition {pid} already replied this round")
                self._bind(reply.node_id, pid, metrics["num-examples"])
            except ValueError as exc:
                b.rejected += 1
                log.warning("round %d: rejected the reply of node %d: %s", rnd, reply.node_id, exc)
                continue
            uploads[pid] = upload
            nodes.add(reply.node_id)
            b.val[rnd - 1, pid], b.test[rnd - 1, pid] = metrics["val_acc"], metrics["test_acc"]
            b.loss[rnd - 1, pid] = metrics["train_loss"]
        return uploads, nodes

    def aggregate(self, rnd: int, uploads: dict[int, dict[str, torch.Tensor]], nodes: set[int]) -> None:
        b = self.book
        row = b.val[rnd - 1]
        if np.isfinite(row).any() and float(np.nanmean(row)) > b.best_val:  # ties keep the earliest round
            b.best_val, b.best_round, b.best_nodes = float(np.nanmean(row)), rnd, nodes
        if not uploads:
            log.warning("round %d: no valid reply; models unchanged", rnd)
        new, diag = server_aggregate(self.spec.algo, uploads, {p: float(b.examples[p]) for p in uploads})
        b.downloads = {pid: new.get(pid, {}) for pid in uploads}
        if "weights" in diag:
            b.weights = diag["weights"].numpy()
            b.mix_max[rnd - 1] = float(b.weights.max())

    def finish(self) -> int:
        """The closing message: every client saves its best-round model; returns how many did."""
        saved = 0
        for reply in self.transport.exchange(
            self.payloads(self.spec.rounds + 1, final=True), self.spec.round_timeout_s
        ):
            metrics = (reply.content or {}).get("metrics") or {}
            try:
                kept, wrote = int(metrics.get("best-round", 0)), int(metrics.get("saved", 0))
            except (TypeError, ValueError):
                kept, wrote = 0, 0
            if reply.error is not None or kept < 1:
                log.warning("node %d kept no best-round model (%s)", reply.node_id, reply.error or "none")
            saved += int(wrote == 1 and kept >= 1)
        return saved


def run_rounds(spec: LoopSpec, transport: Transport) -> SimResult:
    """Run ``spec.rounds`` rounds over ``transport``, then the closing message; return the metrics.

    Raises:
        RuntimeError: no valid reply in any round.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    server = _Server(spec, transport)
    b = server.book
    bar = tqdm(
        range(1, spec.rounds + 1), desc=spec.desc or spec.algo.name, disable=not spec.progress, leave=False
    )
    for rnd in bar:
        uploads, nodes = server.collect(rnd, transport.exchange(server.payloads(rnd), spec.round_timeout_s))
        server.aggregate(rnd, uploads, nodes)
        mv, mt = (
            float(np.nanmean(a[rnd - 1])) if np.isfinite(a[rnd - 1]).any() else math.nan
            for a in (b.val, b.test)
        )
        bar.set_postfix(val=f"{mv * 100:.1f}", test=f"{mt * 100:.1f}")
        log.info("round %d: %d valid replies, mean val %.4f, mean test %.4f", rnd, len(uploads), mv, mt)
    if np.isnan(b.val).all():
        raise RuntimeError("no valid client reply in any round (see the warnings above)")
    saved = server.finish()
    best, at_best, final = summarise_rounds(b.val, b.test)
    a = spec.algo
    eps = gaussian_epsilon(a.dp_noise, spec.rounds, a.dp_delta) if a.dp_clip > 0 else None
    return SimResult(
        b.val, b.test, b.loss, best, at_best, final, time.perf_counter() - t0, b.weights, b.mix_max,
        rejected=b.rejected, models_saved=saved, dp_epsilon=eps,
    )  # fmt: skip
