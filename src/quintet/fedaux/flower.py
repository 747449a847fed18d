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

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from quintet.config import load_config, save_config
from quintet.fedaux.algorithms import AlgoConfig
from quintet.fedaux.data import ClientData
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
    "client_app",
    "client_context",
    "flower_simulate",
    "handle_train",
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


def client_context(node_config: Mapping[str, Any], cfg: FlowerConfig) -> ClientContext:
    """The node's own data and method, from its ``node_config`` (``partition-id``) and the run config."""
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

    def _handle(msg: Any, context: Any) -> Any:
        conf = _config_from_context(context.run_config, cfg)
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
