"""The same algorithms as a Flower (1.42, Message API) ``ServerApp`` + ``ClientApp``.

* Server: :func:`run_server` drives the rounds over a :class:`Transport`. One message per node carries
  that node's personalised parameters; replies are validated (:func:`validate_reply`) and a bad reply
  (wrong keys or shapes, non-finite values, unknown partition, an error reply) is logged and skipped,
  the round going on with the rest. A node that disappears simply stops replying.
* Client: :func:`handle_train` loads the node's partition (``node_config["partition-id"]``), restores its
  local state from ``context.state``, runs :func:`~quintet.fedaux.algorithms.client_round`, saves the
  state back and replies with the shared parameters (+ APV) and scalar metrics only.
* ``server_app`` / ``client_app`` (module level) read their settings from ``run_config["config"]``, a
  YAML file of :class:`FlowerConfig`; :func:`flower_simulate` runs them on Flower's Ray simulation
  engine, :func:`write_flower_app` writes the app folder for a real deployment (see docs/fedaux.md).

Because each client's randomness is seeded by (seed, partition, round) and the server mixes uploads in
partition order, a Flower run reproduces the in-process run to float32 round-off.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from quintet.config import load_config, save_config
from quintet.fedaux.algorithms import (
    AlgoConfig,
    client_round,
    expected_upload,
    initial_state,
    server_aggregate,
)
from quintet.fedaux.data import ClientData
from quintet.fedaux.simulate import DataConfig, SimResult, load_data, summarise_rounds, write_outputs
from quintet.io import atomic_save_json, atomic_write_text, load_json

__all__ = [
    "FlowerConfig",
    "Reply",
    "Transport",
    "client_app",
    "flower_simulate",
    "handle_train",
    "run_server",
    "server_app",
    "validate_reply",
    "write_flower_app",
]

log = logging.getLogger("quintet.fedaux.flower")

#: keys of the ``metrics`` record a client sends (scalars only)
METRIC_KEYS = ("partition-id", "num-examples", "train_loss", "val_acc", "test_acc")
LOCAL_STATE_KEY = "fedaux-local-state"


@dataclass
class FlowerConfig:
    """A Flower run (simulation or deployment).

    Attributes:
        data / algo / rounds / seed / out: as :class:`~quintet.fedaux.simulate.RunConfig`.
        num_features / num_classes: model dimensions for the server's θ⁽⁰⁾ (0: read them from the data).
        min_nodes: nodes to wait for before round 1 (0: ``data.num_clients``).
        wait_s: how long to wait for them.
        round_timeout_s: replies later than this are dropped (a vanished node cannot stall a round).
        backend_cpus: CPUs per simulated client (Ray).
    """

    data: DataConfig = field(default_factory=DataConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    rounds: int = 100
    seed: int = 0
    out: Path = Path("runs/fedaux_flower")
    num_features: int = 0
    num_classes: int = 0
    min_nodes: int = 0
    wait_s: float = 120.0
    round_timeout_s: float = 300.0
    backend_cpus: float = 1.0


# ----------------------------------------------------------------------------------------------- transport


@dataclass
class Reply:
    """One node's answer: ``content`` (``{"arrays": {...}, "metrics": {...}}``) or an ``error`` string."""

    node_id: int
    content: dict[str, dict[str, Any]] | None
    error: str | None = None


class Transport(Protocol):
    """What the server loop needs from Flower's ``Grid`` (a fake one drives the tests without Ray)."""

    def node_ids(self) -> list[int]: ...

    def exchange(self, payloads: Mapping[int, dict[str, Any]], timeout: float) -> list[Reply]: ...


def validate_reply(
    content: Mapping[str, Mapping[str, Any]] | None, expected: Mapping[str, tuple[int, ...]], num_clients: int
) -> tuple[int, dict[str, torch.Tensor], dict[str, float]]:
    """Check a client reply; return (partition id, upload, metrics) or raise ``ValueError`` naming the fault."""
    if content is None:
        raise ValueError("empty reply")
    arrays, metrics = content.get("arrays"), content.get("metrics")
    if arrays is None or metrics is None:
        raise ValueError(f"reply lacks 'arrays' or 'metrics' (has {sorted(content)})")
    missing = [k for k in METRIC_KEYS if k not in metrics]
    if missing:
        raise ValueError(f"metrics lack {missing}")
    pid = metrics["partition-id"]
    if not isinstance(pid, int | np.integer) or not 0 <= int(pid) < num_clients:
        raise ValueError(f"partition-id {pid!r} is not in [0, {num_clients})")
    keys = set(arrays)
    if keys != set(expected):
        extra, lack = sorted(keys - set(expected)), sorted(set(expected) - keys)
        raise ValueError(f"wrong parameter keys (unexpected {extra[:3]}, missing {lack[:3]})")
    upload = {}
    for k, shape in expected.items():
        t = torch.as_tensor(np.asarray(arrays[k]))
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"{k} has shape {tuple(t.shape)}, expected {tuple(shape)}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{k} has non-finite values")
        upload[k] = t.float()
    out_metrics = {k: float(v) for k, v in metrics.items()}
    if not all(math.isfinite(v) for v in out_metrics.values()):
        raise ValueError("non-finite metric")
    return int(pid), upload, out_metrics


def run_server(cfg: FlowerConfig, transport: Transport, num_features: int, num_classes: int) -> SimResult:
    """The FedAux/baseline server loop over any transport; writes outputs to ``cfg.out``.

    Args:
        cfg: the run.
        transport: Flower's grid (or a fake).
        num_features / num_classes: model dimensions for θ⁽⁰⁾.
    """
    t0 = time.perf_counter()
    k = cfg.data.num_clients
    init = initial_state(cfg.algo, num_features, num_classes, cfg.seed)
    expected = expected_upload(cfg.algo, init)
    want = cfg.min_nodes or k
    deadline = time.monotonic() + cfg.wait_s
    while len(transport.node_ids()) < want and time.monotonic() < deadline:
        time.sleep(0.5)
    if not transport.node_ids():
        raise RuntimeError(f"no Flower node connected within {cfg.wait_s} s")
    val = np.full((cfg.rounds, k), np.nan)
    test = np.full((cfg.rounds, k), np.nan)
    loss = np.full((cfg.rounds, k), np.nan)
    node_pid: dict[int, int] = {}
    has_state: set[int] = set()
    downloads: dict[int, dict[str, torch.Tensor]] = {}
    rejected = 0
    weights = None
    for rnd in range(1, cfg.rounds + 1):
        payloads = {}
        for nid in transport.node_ids():
            pid = node_pid.get(nid)
            arrays = init if pid is None or pid not in has_state else downloads.get(pid, {})
            payloads[nid] = {"arrays": arrays, "config": {"round": rnd, "seed": cfg.seed}}
        uploads: dict[int, dict[str, torch.Tensor]] = {}
        sizes: dict[int, float] = {}
        for reply in transport.exchange(payloads, cfg.round_timeout_s):
            if reply.error is not None:
                rejected += 1
                log.warning("round %d: node %d replied with an error: %s", rnd, reply.node_id, reply.error)
                continue
            try:
                pid, upload, metrics = validate_reply(reply.content, expected, k)
                if pid in uploads:
                    raise ValueError(f"partition {pid} already replied this round")
            except ValueError as exc:
                rejected += 1
                log.warning("round %d: rejected reply of node %d: %s", rnd, reply.node_id, exc)
                continue
            node_pid[reply.node_id] = pid
            has_state.add(pid)
            uploads[pid], sizes[pid] = upload, metrics["num-examples"]
            val[rnd - 1, pid], test[rnd - 1, pid] = metrics["val_acc"], metrics["test_acc"]
            loss[rnd - 1, pid] = metrics["train_loss"]
        if not uploads:
            log.warning("round %d: no valid reply; models unchanged", rnd)
        new, diag = server_aggregate(cfg.algo, uploads, sizes)
        downloads = {pid: new.get(pid, {}) for pid in uploads}
        if "weights" in diag:
            weights = diag["weights"].numpy()
        log.info("round %d: %d valid replies, mean test %.4f", rnd, len(uploads), np.nanmean(test[rnd - 1]))
    if np.isnan(val).all():
        raise RuntimeError("no valid client reply in any round")
    best, at_best, final = summarise_rounds(val, test)
    res = SimResult(val, test, loss, best, at_best, final, time.perf_counter() - t0, weights)
    out = Path(cfg.out)
    write_outputs(res, out, f"{cfg.algo.name} (Flower)")
    atomic_save_json(
        out / "rounds.json",
        {
            "val_acc": val,
            "test_acc": test,
            "train_loss": loss,
            "rejected_replies": rejected,
            "seconds": res.seconds,
        },
    )
    return res


# ----------------------------------------------------------------------------------------------- client


_DATA_CACHE: dict[str, tuple[list[ClientData], dict[str, int]]] = {}


def _clients_for(cfg: FlowerConfig) -> tuple[list[ClientData], dict[str, int]]:
    key = repr(cfg.data)
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = load_data(cfg.data)
    return _DATA_CACHE[key]


def handle_train(
    content: Mapping[str, Any],
    node_config: Mapping[str, Any],
    state: dict[str, dict[str, torch.Tensor]],
    cfg: FlowerConfig,
) -> dict[str, dict[str, Any]]:
    """Client side of one round, free of Flower types (the ClientApp wraps it).

    Args:
        content: ``{"arrays": {name: tensor}, "config": {"round", "seed"}}`` from the server.
        node_config: must hold ``partition-id``.
        state: the node's persistent store (``context.state`` in Flower); updated in place.
        cfg: the run.

    Returns:
        ``{"arrays": upload, "metrics": scalars}`` — shared parameters (+ APV / functional embedding) and
        accuracies/counts; no features, labels, embeddings or gradients.
    """
    torch.set_num_threads(1)
    if "partition-id" not in node_config:
        raise ValueError("node_config lacks 'partition-id' (start the SuperNode with --node-config)")
    pid = int(node_config["partition-id"])
    clients, info = _clients_for(cfg)
    if not 0 <= pid < len(clients):
        raise ValueError(f"partition-id {pid} is not in [0, {len(clients)})")
    data = clients[pid]
    rnd = int(content["config"]["round"])
    received = {k: torch.as_tensor(np.asarray(v)) for k, v in content["arrays"].items()}
    local = state.get(LOCAL_STATE_KEY) or None
    res = client_round(
        cfg.algo, data, info["num_classes"], received, local, rnd, int(content["config"]["seed"])
    )
    state[LOCAL_STATE_KEY] = res.local_state
    metrics = {
        "partition-id": pid,
        "num-examples": int(res.metrics["num_train"]),
        "train_loss": res.metrics["train_loss"],
        "val_acc": res.metrics["val_acc"],
        "test_acc": res.metrics["test_acc"],
    }
    return {"arrays": res.upload, "metrics": metrics}


# ----------------------------------------------------------------------------------------------- Flower glue


def _config_from_context(run_config: Mapping[str, Any], fallback: FlowerConfig | None) -> FlowerConfig:
    path = run_config.get("config") if run_config else None
    if path:
        return load_config(FlowerConfig, str(path))
    if fallback is None:
        raise ValueError("run_config has no 'config' entry (path to a FlowerConfig YAML)")
    return fallback


class _GridTransport:
    """:class:`Transport` over a Flower ``Grid``: one ``Message`` per node."""

    def __init__(self, grid: Any) -> None:
        self.grid = grid

    def node_ids(self) -> list[int]:
        return sorted(int(n) for n in self.grid.get_node_ids())

    def exchange(self, payloads: Mapping[int, dict[str, Any]], timeout: float) -> list[Reply]:
        from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

        msgs = []
        for nid, p in payloads.items():
            content = RecordDict(
                {
                    "arrays": ArrayRecord(
                        torch_state_dict={k: v.detach().cpu() for k, v in p["arrays"].items()}
                    ),
                    "config": ConfigRecord(dict(p["config"])),
                }
            )
            msgs.append(Message(content, dst_node_id=nid, message_type=MessageType.TRAIN))
        out = []
        for msg in self.grid.send_and_receive(msgs, timeout=timeout):
            src = int(msg.metadata.src_node_id)
            if msg.has_error():
                out.append(Reply(src, None, f"{msg.error.code}: {msg.error.reason}"))
                continue
            c = msg.content
            try:
                arrays = c["arrays"].to_torch_state_dict() if "arrays" in c else None
                metrics = dict(c["metrics"]) if "metrics" in c else None
            except Exception as exc:  # a malformed record must not stop the round
                out.append(Reply(src, None, f"unreadable reply: {exc}"))
                continue
            content_d: dict[str, Any] = {}
            if arrays is not None:
                content_d["arrays"] = arrays
            if metrics is not None:
                content_d["metrics"] = metrics
            out.append(Reply(src, content_d))
        return out


def make_server_app(cfg: FlowerConfig | None = None) -> Any:
    """A ``ServerApp`` running :func:`run_server` (settings from ``run_config["config"]`` or ``cfg``)."""
    from flwr.serverapp import ServerApp

    app = ServerApp()

    @app.main()
    def _main(grid: Any, context: Any) -> None:
        conf = _config_from_context(context.run_config, cfg)
        nf, nc = conf.num_features, conf.num_classes
        if not (nf and nc):
            _, info = load_data(conf.data)
            nf, nc = info["num_features"], info["num_classes"]
        run_server(conf, _GridTransport(grid), nf, nc)

    return app


def make_client_app(cfg: FlowerConfig | None = None) -> Any:
    """A ``ClientApp`` whose ``train`` handler calls :func:`handle_train`; state lives in ``context.state``."""
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def _train(msg: Any, context: Any) -> Any:
        conf = _config_from_context(context.run_config, cfg)
        state: dict[str, dict[str, torch.Tensor]] = {}
        if LOCAL_STATE_KEY in context.state:
            state[LOCAL_STATE_KEY] = context.state[LOCAL_STATE_KEY].to_torch_state_dict()
        content = {
            "arrays": msg.content["arrays"].to_torch_state_dict(),
            "config": dict(msg.content["config"]),
        }
        out = handle_train(content, context.node_config, state, conf)
        context.state[LOCAL_STATE_KEY] = ArrayRecord(torch_state_dict=state[LOCAL_STATE_KEY])
        reply = RecordDict(
            {"arrays": ArrayRecord(torch_state_dict=out["arrays"]), "metrics": MetricRecord(out["metrics"])}
        )
        return Message(reply, reply_to=msg)

    return app


#: module-level apps for ``flwr run`` (deployment): they read ``run_config["config"]``
server_app = make_server_app()
client_app = make_client_app()


def flower_simulate(cfg: FlowerConfig) -> SimResult:
    """Run ``cfg`` on Flower's simulation engine (Ray), one SuperNode per client; return the result."""
    import os

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    from flwr.simulation import run_simulation

    clients, info = load_data(cfg.data)
    if cfg.data.num_clients != len(clients):
        raise ValueError(
            f"data.num_clients={cfg.data.num_clients} but the partition has {len(clients)} clients"
        )
    if not (cfg.num_features and cfg.num_classes):
        cfg.num_features, cfg.num_classes = info["num_features"], info["num_classes"]
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    run_simulation(
        server_app=make_server_app(cfg),
        client_app=make_client_app(cfg),
        num_supernodes=len(clients),
        backend_config={"client_resources": {"num_cpus": cfg.backend_cpus, "num_gpus": 0.0}},
    )
    return _read_result(out)


def _read_result(out: Path) -> SimResult:
    rounds = out / "rounds.json"
    if not rounds.is_file():
        raise RuntimeError(f"the Flower run wrote no results ({rounds} missing); see the Flower log")
    d = load_json(rounds)
    val, test, loss = (np.asarray(d[k], dtype=float) for k in ("val_acc", "test_acc", "train_loss"))
    best, at_best, final = summarise_rounds(val, test)
    return SimResult(val, test, loss, best, at_best, final, float(d["seconds"]))


def write_flower_app(app_dir: str | Path, cfg: FlowerConfig) -> Path:
    """Write a Flower app folder (``pyproject.toml`` + resolved ``fedaux.yaml``) for ``flwr run``.

    The components point at this installed package (``quintet.fedaux.flower:server_app`` / ``client_app``),
    so the SuperLink and SuperNodes need ``quintet[fl]`` installed and no runtime dependency installation.
    """
    app = Path(app_dir)
    app.mkdir(parents=True, exist_ok=True)
    if not (cfg.num_features and cfg.num_classes):
        _, info = load_data(cfg.data)
        cfg.num_features, cfg.num_classes = info["num_features"], info["num_classes"]
    cfg_path = save_config(cfg, app / "fedaux.yaml").resolve()
    atomic_write_text(
        app / "pyproject.toml",
        "\n".join(
            [
                "[build-system]",
                'requires = ["hatchling"]',
                'build-backend = "hatchling.build"',
                "",
                "[project]",
                'name = "quintet-fedaux-app"',
                'version = "0.1.0"',
                "dependencies = []",
                "",
                "[tool.hatch.build.targets.wheel]",
                'packages = ["."]',
                "",
                "[tool.flwr.app]",
                'publisher = "quintet"',
                "",
                "[tool.flwr.app.components]",
                'serverapp = "quintet.fedaux.flower:server_app"',
                'clientapp = "quintet.fedaux.flower:client_app"',
                "",
                "[tool.flwr.app.config]",
                f'config = "{cfg_path.as_posix()}"',
                "",
            ]
        ),
    )
    return app
