"""Flower (1.42, Message API) engines for the one round loop (:mod:`quintet.fedaux.loop`).

* Server: :func:`run_server` waits for the nodes and runs :func:`~quintet.fedaux.loop.run_rounds` over
  ``_GridTransport`` (one ``Message`` per node; the closing message is an ``evaluate`` message).
* Client: :func:`handle_train` finds the node's data (:func:`client_context`: its shard from
  ``node_config["data-path"]``, or in simulation its ``partition-id``), restores its store from
  ``context.state`` and runs :func:`~quintet.fedaux.loop.handle_message`.
* ``server_app`` / ``client_app`` (module level) read a :class:`FlowerConfig` from Flower's run config
  (:func:`config_from_run_config`; the keys :func:`write_flower_app` writes, overridable with
  ``flwr run --run-config``); :func:`flower_simulate` runs them on Flower's Ray simulation engine.

Because each client's randomness is seeded by (seed, partition, round) and the server mixes uploads in
partition order, a Flower run reproduces the in-process run bit for bit.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from quintet.config import config_to_dict, save_config
from quintet.fedaux.algorithms import AlgoConfig
from quintet.fedaux.data import ClientData, load_shard
from quintet.fedaux.loop import (
    BEST_STATE_KEY,
    LOCAL_STATE_KEY,
    METRIC_KEYS,
    MODELS_DIR,
    ClientContext,
    LoopSpec,
    Reply,
    SimResult,
    Transport,
    handle_message,
    json_safe,
    run_rounds,
    summarise_rounds,
    validate_reply,
)
from quintet.fedaux.simulate import DataConfig, clear_client_models, load_data, write_outputs
from quintet.io import atomic_save_json, atomic_write_text, load_json

__all__ = [
    "METRIC_KEYS",
    "FlowerConfig",
    "Reply",
    "Transport",
    "app_config",
    "client_app",
    "client_context",
    "config_from_run_config",
    "flower_simulate",
    "handle_train",
    "read_result",
    "run_server",
    "server_app",
    "validate_reply",
    "write_flower_app",
]

#: node-store entries kept in Flower's ``context.state`` between rounds
_STORE_KEYS = (LOCAL_STATE_KEY, BEST_STATE_KEY)


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
        progress: show a progress bar on the server.
        node_local: every SuperNode reads only its own shard, ``node_config["data-path"]`` (written by
            ``quintet fedaux partition``), and saves its model under ``node_config["out-dir"]`` (default
            ``out``); no process but the partitioner sees the whole graph. Set in apps written by
            ``flower-app``/``deploy-local``; the simulation engine uses ``partition-id`` instead.
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
    progress: bool = True
    node_local: bool = False


# ----------------------------------------------------------------------------------------------- server


def run_server(cfg: FlowerConfig, transport: Transport, num_features: int, num_classes: int) -> SimResult:
    """The round loop (:func:`~quintet.fedaux.loop.run_rounds`) over any transport; outputs to ``cfg.out``.

    Args:
        cfg: the run.
        transport: Flower's grid (or a fake).
        num_features / num_classes: model dimensions for θ⁽⁰⁾.
    """
    want = cfg.min_nodes or cfg.data.num_clients
    deadline = time.monotonic() + cfg.wait_s
    while len(transport.node_ids()) < want and time.monotonic() < deadline:
        time.sleep(0.5)
    if not transport.node_ids():
        raise RuntimeError(f"no Flower node connected within {cfg.wait_s} s (wait_s)")
    out = Path(cfg.out)
    clear_client_models(out)
    spec = LoopSpec(
        cfg.algo, cfg.data.num_clients, num_features, num_classes, cfg.rounds, cfg.seed, cfg.round_timeout_s,
        progress=cfg.progress, desc=f"{cfg.algo.name} (Flower)",
    )  # fmt: skip
    res = run_rounds(spec, transport)
    write_outputs(res, out, f"{cfg.algo.name} (Flower)")
    rounds = {"val_acc": res.val_acc, "test_acc": res.test_acc, "train_loss": res.train_loss}
    atomic_save_json(
        out / "rounds.json",
        json_safe({**rounds, "rejected_replies": res.rejected, "models_saved": res.models_saved, "seconds": res.seconds}),
    )
    return res


# ----------------------------------------------------------------------------------------------- client


_DATA_CACHE: dict[str, tuple[list[ClientData], dict[str, int]]] = {}


def _clients_for(cfg: FlowerConfig) -> tuple[list[ClientData], dict[str, int]]:
    key = repr(cfg.data)
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = load_data(cfg.data)
    return _DATA_CACHE[key]


_SHARD_CACHE: dict[str, tuple[ClientData, dict[str, int]]] = {}


def _shard_context(node_config: Mapping[str, Any], cfg: FlowerConfig) -> ClientContext:
    path = str(node_config["data-path"])
    if path not in _SHARD_CACHE:
        _SHARD_CACHE[path] = load_shard(path)
    data, meta = _SHARD_CACHE[path]
    for key in ("num_features", "num_classes"):
        want = getattr(cfg, key)
        if want and meta[key] != want:
            raise ValueError(f"{path}: shard has {key}={meta[key]} but the run has {want}; use this partition's app")
    out = Path(str(node_config.get("out-dir") or cfg.out))
    return ClientContext(cfg.algo, data, meta["num_classes"], out / MODELS_DIR)


def client_context(node_config: Mapping[str, Any], cfg: FlowerConfig) -> ClientContext:
    """The node's own data and method: its shard (``data-path``) or, in simulation, its ``partition-id``."""
    if "data-path" in node_config:
        return _shard_context(node_config, cfg)
    if cfg.node_local:
        raise ValueError(
            "node_config lacks data-path: start the SuperNode with "
            '--node-config "data-path=/path/to/client_<i>.pt" (shards from `quintet fedaux partition`)'
        )
    if "partition-id" not in node_config:
        raise ValueError("node_config lacks 'partition-id' (start the SuperNode with --node-config)")
    pid = int(node_config["partition-id"])
    clients, info = _clients_for(cfg)
    if not 0 <= pid < len(clients):
        raise ValueError(f"partition-id {pid} is not in [0, {len(clients)})")
    return ClientContext(cfg.algo, clients[pid], info["num_classes"], Path(cfg.out) / MODELS_DIR)


def handle_train(
    content: Mapping[str, Any],
    node_config: Mapping[str, Any],
    state: dict[str, dict[str, torch.Tensor]],
    cfg: FlowerConfig,
) -> dict[str, dict[str, Any]]:
    """Client side of one message, free of Flower types (the ClientApp wraps it).

    Args:
        content: ``{"arrays": {name: tensor}, "config": {"round", "seed", "best-round"[, "final"]}}``.
        node_config: the SuperNode's config (``partition-id``).
        state: the node's persistent store (``context.state`` in Flower); updated in place.
        cfg: the run.

    Returns:
        :func:`~quintet.fedaux.loop.handle_message`'s reply: shared parameters (+ APV / functional
        embedding) and scalar metrics; no features, labels, embeddings or gradients.
    """
    torch.set_num_threads(1)
    return handle_message(content, state, client_context(node_config, cfg))


# ----------------------------------------------------------------------------------------------- Flower glue


def config_from_run_config(run_config: Mapping[str, Any], fallback: FlowerConfig | None = None) -> FlowerConfig:
    """A :class:`FlowerConfig` from Flower's flat run config (``algo.name``, ``rounds``, ... as written by
    :func:`write_flower_app`, overridable with ``flwr run --run-config``); ``fallback`` if it is empty."""
    from quintet.config import ConfigError, from_dict

    if not run_config:
        if fallback is None:
            raise ValueError("the run config is empty: run an app written by `quintet fedaux flower-app`")
        return fallback
    nested: dict[str, Any] = {}
    for key, value in run_config.items():
        node = nested
        *parents, leaf = str(key).replace("-", "_").split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    try:
        return from_dict(FlowerConfig, nested)
    except ConfigError as exc:
        raise ValueError(f"Flower run config: {exc}") from exc


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
            kind = MessageType.EVALUATE if p["config"].get("final") else MessageType.TRAIN
            msgs.append(Message(content, dst_node_id=nid, message_type=kind))
        out = []
        for msg in self.grid.send_and_receive(msgs, timeout=timeout):
            src = int(msg.metadata.src_node_id)
            if msg.has_error():
                out.append(Reply(src, None, f"{msg.error.code}: {msg.error.reason}"))
                continue
            try:
                out.append(Reply(src, _read_records(msg.content)))
            except Exception as exc:  # a malformed record must not stop the round
                out.append(Reply(src, None, f"unreadable reply: {exc}"))
        return out


def _read_records(c: Any) -> dict[str, Any]:
    """``{"arrays": numpy arrays, "metrics": scalars}`` of a reply (dtypes kept: validation checks them)."""
    content: dict[str, Any] = {}
    if "arrays" in c:
        content["arrays"] = dict(zip(c["arrays"].keys(), c["arrays"].to_numpy_ndarrays(), strict=True))
    if "metrics" in c:
        content["metrics"] = dict(c["metrics"])
    return content


def make_server_app(cfg: FlowerConfig | None = None) -> Any:
    """A ``ServerApp`` running :func:`run_server` (settings from the run config, or ``cfg`` if it is empty)."""
    from flwr.serverapp import ServerApp

    app = ServerApp()

    @app.main()
    def _main(grid: Any, context: Any) -> None:
        conf = config_from_run_config(context.run_config, cfg)
        nf, nc = conf.num_features, conf.num_classes
        if not (nf and nc) and conf.node_local:
            raise ValueError("run config lacks num_features/num_classes: write the app with `quintet fedaux flower-app`")
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

    def _handle(msg: Any, context: Any) -> Any:
        conf = config_from_run_config(context.run_config, cfg)
        store = {k: context.state[k].to_torch_state_dict() for k in _STORE_KEYS if k in context.state}
        content = {"arrays": msg.content["arrays"].to_torch_state_dict(), "config": dict(msg.content["config"])}
        out = handle_train(content, context.node_config, store, conf)
        for k in _STORE_KEYS:
            if k in store:
                context.state[k] = ArrayRecord(torch_state_dict=store[k])
        reply = {"metrics": MetricRecord(out["metrics"])}
        if "arrays" in out:
            reply["arrays"] = ArrayRecord(torch_state_dict=out["arrays"])
        return Message(RecordDict(reply), reply_to=msg)

    app.train()(_handle)
    app.evaluate()(_handle)  # the closing message: save the best round's model
    return app


#: module-level apps for ``flwr run`` (deployment): they read the run config (:func:`config_from_run_config`)
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
    return read_result(out)


def read_result(out: Path) -> SimResult:
    rounds = out / "rounds.json"
    if not rounds.is_file():
        raise RuntimeError(f"the Flower run wrote no results ({rounds} missing); see the Flower log")
    d = load_json(rounds)
    val, test, loss = (np.asarray(d[k], dtype=float) for k in ("val_acc", "test_acc", "train_loss"))
    best, at_best, final = summarise_rounds(val, test)
    res = SimResult(val, test, loss, best, at_best, final, float(d["seconds"]))
    res.rejected, res.models_saved = int(d.get("rejected_replies", 0)), int(d.get("models_saved", 0))
    return res


#: keys never written into an app: machine-local paths, and the whole graph's location
_NOT_IN_APP = ("data.root", "data.cache_dir", "data.dataset")


def _toml_value(v: Any) -> str:
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return json.dumps(str(v))  # a TOML basic string


def app_config(cfg: FlowerConfig) -> dict[str, Any]:
    """The flat run config of a node-local app: every key of ``cfg`` but machine paths; ``out`` relative."""
    flat = {k: v for k, v in _flatten(config_to_dict(cfg)) if k not in _NOT_IN_APP and v is not None}
    if Path(str(flat["out"])).is_absolute():
        flat["out"] = str(FlowerConfig().out)  # set it per run: flwr run APP --run-config "out='/abs/dir'"
    flat["node_local"] = True
    return flat


def _flatten(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        out += _flatten(v, f"{prefix}{k}.") if isinstance(v, Mapping) else [(prefix + k, v)]
    return out


def write_flower_app(app_dir: str | Path, cfg: FlowerConfig) -> Path:
    """Write a copyable Flower app folder (``pyproject.toml`` only, no absolute paths) for ``flwr run``.

    Its ``[tool.flwr.app.config]`` holds every hyperparameter of ``cfg`` (``algo.name``, ``rounds``,
    ``algo.alpha``, ...), each overridable with ``flwr run APP --run-config "rounds=50 algo.name='fedavg'"``;
    ``num_features``/``num_classes`` (and ``data.num_clients``) come from the data (a shard folder, say) when
    ``cfg`` leaves them 0. The components point at
    the installed package (``quintet.fedaux.flower:server_app`` / ``client_app``), so every host needs
    ``quintet[fl]`` and no runtime dependency installation; each SuperNode gets its shard through
    ``--node-config "data-path=..."``.
    """
    app = Path(app_dir)
    app.mkdir(parents=True, exist_ok=True)
    if not (cfg.num_features and cfg.num_classes):  # e.g. data.dataset=<shard folder>: dims and K from it
        clients, info = load_data(cfg.data)
        cfg.num_features, cfg.num_classes = info["num_features"], info["num_classes"]
        cfg.data.num_clients = len(clients)
    lines = [
        "[build-system]", 'requires = ["hatchling"]', 'build-backend = "hatchling.build"', "",
        "[project]", 'name = "quintet-fedaux-app"', 'version = "0.1.0"', "dependencies = []", "",
        "[tool.hatch.build.targets.wheel]", 'packages = ["."]', "",
        "[tool.flwr.app]", 'publisher = "quintet"', "",
        "[tool.flwr.app.components]", 'serverapp = "quintet.fedaux.flower:server_app"',
        'clientapp = "quintet.fedaux.flower:client_app"', "",
        "[tool.flwr.app.config]",
    ]  # fmt: skip
    lines += [f"{k} = {_toml_value(v)}" for k, v in app_config(cfg).items()]
    atomic_write_text(app / "pyproject.toml", "\n".join([*lines, ""]))
    return app
