"""Flower adapter: message contents, reply validation, robustness, equality with the in-process run.

The server loop and client handler are exercised through a fake transport (no Ray); one test runs
Flower's real simulation engine and is marked ``integration`` so it never runs in parallel workers.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from quintet.fedaux.algorithms import AlgoConfig, expected_upload, initial_state
from quintet.fedaux.flower import (
    LOCAL_STATE_KEY,
    METRIC_KEYS,
    FlowerConfig,
    Reply,
    handle_train,
    run_server,
    validate_reply,
)
from quintet.fedaux.simulate import DataConfig, load_data, simulate


def _cfg(tmp_path: Path, rounds: int = 3, name: str = "fedaux", apv_norm: str | None = None) -> FlowerConfig:
    extra = {} if apv_norm is None else {"apv_norm": apv_norm}
    return FlowerConfig(
        data=DataConfig(dataset="synthetic", num_clients=4, cache_dir=""),
        algo=AlgoConfig(name=name, hidden=16, **extra),  # type: ignore[arg-type]
        rounds=rounds,
        out=tmp_path / "flower",
        wait_s=1.0,
    )


class FakeGrid:
    """Nodes 101.. hold partitions 0..; ``faults`` maps (round, node) to a way of misbehaving."""

    def __init__(self, cfg: FlowerConfig, faults: Mapping[tuple[int, int], str] | None = None) -> None:
        self.cfg = cfg
        self.nodes = {101 + i: {"partition-id": i} for i in range(cfg.data.num_clients)}
        self.state: dict[int, dict[str, Any]] = {n: {} for n in self.nodes}
        self.faults = dict(faults or {})
        self.sent: list[dict[int, dict[str, Any]]] = []
        self.gone: set[int] = set()

    def node_ids(self) -> list[int]:
        return [n for n in self.nodes if n not in self.gone]

    def exchange(self, payloads: Mapping[int, dict[str, Any]], timeout: float) -> list[Reply]:
        self.sent.append(dict(payloads))
        rnd = next(iter(payloads.values()))["config"]["round"]
        replies = []
        for nid, p in reversed(list(payloads.items())):  # reply order must not matter
            fault = self.faults.get((rnd, nid))
            if fault == "vanish":
                self.gone.add(nid)
                continue
            if fault == "error":
                replies.append(Reply(nid, None, "ClientAppException: boom"))
                continue
            out = handle_train(p, self.nodes[nid], self.state[nid], self.cfg)
            if fault == "nan":
                k = next(iter(out["arrays"]))
                out["arrays"][k] = out["arrays"][k] * float("nan")
            elif fault == "extra_key":
                out["arrays"]["x_features"] = torch.zeros(3)
            elif fault == "bad_shape":
                k = next(iter(out["arrays"]))
                out["arrays"][k] = out["arrays"][k].flatten()[:1]
            elif fault == "bad_pid":
                out["metrics"]["partition-id"] = 99
            replies.append(Reply(nid, out))
        return replies


def test_client_reply_holds_only_parameters_apv_and_scalar_metrics(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    clients, info = load_data(cfg.data)
    init = initial_state(cfg.algo, info["num_features"], info["num_classes"], 0)
    state: dict[str, Any] = {}
    out = handle_train({"arrays": init, "config": {"round": 1, "seed": 0}}, {"partition-id": 2}, state, cfg)
    assert set(out) == {"arrays", "metrics"}
    expected = expected_upload(cfg.algo, init)
    assert set(out["arrays"]) == set(expected) and "apv" in out["arrays"]
    assert not any(k.endswith(".mask") for k in out["arrays"])  # personal masks stay home
    n = clients[2].num_nodes
    assert all(n not in tuple(v.shape) for v in out["arrays"].values())  # no per-node tensors leave
    assert set(out["metrics"]) == set(METRIC_KEYS)
    assert all(isinstance(v, int | float) for v in out["metrics"].values())
    assert out["metrics"]["partition-id"] == 2 and out["metrics"]["num-examples"] == int(
        clients[2].train_mask.sum()
    )
    assert LOCAL_STATE_KEY in state and any(k.startswith("opt/") for k in state[LOCAL_STATE_KEY])
    with pytest.raises(ValueError, match="partition-id"):
        handle_train({"arrays": init, "config": {"round": 1, "seed": 0}}, {}, {}, cfg)


def test_validate_reply_rejects_malformed_uploads() -> None:
    expected = {"w": (2, 2), "apv": (2,)}
    good = {"arrays": {"w": torch.ones(2, 2), "apv": torch.ones(2)}, "metrics": dict.fromkeys(METRIC_KEYS, 1)}
    pid, upload, metrics = validate_reply(good, expected, 4)
    assert pid == 1 and set(upload) == {"w", "apv"} and metrics["val_acc"] == 1.0
    cases = {
        "wrong parameter keys": {**good, "arrays": {"w": torch.ones(2, 2)}},
        "shape": {**good, "arrays": {"w": torch.ones(4), "apv": torch.ones(2)}},
        "non-finite": {**good, "arrays": {"w": torch.full((2, 2), float("inf")), "apv": torch.ones(2)}},
        "partition-id": {**good, "metrics": {**good["metrics"], "partition-id": 4}},
        "metrics lack": {**good, "metrics": {"partition-id": 0}},
        "lacks 'arrays'": {"metrics": good["metrics"]},
    }
    for msg, reply in cases.items():
        with pytest.raises(ValueError, match=msg):
            validate_reply(reply, expected, 4)


@pytest.mark.parametrize("apv_norm", ["none", "unit"])
def test_server_loop_reproduces_the_in_process_run_exactly(tmp_path: Path, apv_norm: str) -> None:
    cfg = _cfg(tmp_path, apv_norm=apv_norm)
    clients, info = load_data(cfg.data)
    grid = FakeGrid(cfg)
    res = run_server(cfg, grid, info["num_features"], info["num_classes"])
    ref = simulate(cfg.algo, clients, info["num_classes"], cfg.rounds, cfg.seed, progress=False)
    assert np.array_equal(res.test_acc, ref.test_acc) and np.array_equal(res.val_acc, ref.val_acc)
    # one message per node, each with its own personalised parameters from round 2 on
    r2 = grid.sent[1]
    assert len(r2) == 4 and len({id(p["arrays"]) for p in r2.values()}) == 4
    assert not torch.equal(r2[101]["arrays"]["apv"], r2[103]["arrays"]["apv"])
    assert (cfg.out / "metrics.csv").is_file() and (cfg.out / "rounds.json").is_file()


def test_bad_replies_are_rejected_and_a_vanished_client_does_not_stop_the_server(
    tmp_path: Path, caplog
) -> None:
    cfg = _cfg(tmp_path, rounds=4)
    _, info = load_data(cfg.data)
    faults = {
        (1, 102): "nan",
        (2, 102): "extra_key",
        (2, 103): "bad_shape",
        (3, 101): "bad_pid",
        (3, 103): "error",
        (2, 104): "vanish",
    }
    grid = FakeGrid(cfg, faults)
    with caplog.at_level("WARNING", logger="quintet.fedaux.loop"):
        res = run_server(cfg, grid, info["num_features"], info["num_classes"])
    assert "non-finite" in caplog.text and "wrong parameter keys" in caplog.text and "shape" in caplog.text
    assert "partition-id" in caplog.text and "boom" in caplog.text
    # rejected or missing replies leave NaN holes; everything else was recorded
    assert np.isnan(res.test_acc[0, 1]) and np.isnan(res.test_acc[1, 1]) and np.isnan(res.test_acc[1, 2])
    assert np.isnan(res.test_acc[1:, 3]).all() and np.isfinite(res.test_acc[3, :3]).all()
    assert np.isfinite(res.test_at_best_val)


@pytest.mark.integration
def test_flower_simulation_engine_matches_in_process(tmp_path: Path) -> None:
    """Flower's Ray engine, 4 SuperNodes, 2 rounds: identical accuracies to the in-process loop."""
    pytest.importorskip("ray")
    from quintet.fedaux.flower import flower_simulate

    cfg = _cfg(tmp_path, rounds=2)
    cfg.wait_s = 120.0
    cfg.round_timeout_s = 400.0  # Ray starts its actors slowly on a loaded machine: a late round-1 reply is a hole
    res = flower_simulate(cfg)
    clients, info = load_data(cfg.data)
    ref = simulate(cfg.algo, clients, info["num_classes"], 2, 0, progress=False)
    assert np.array_equal(res.test_acc, ref.test_acc)
    assert sorted(p.name for p in (cfg.out / "models").glob("client_*.pt")) == [
        f"client_{i}.pt" for i in range(4)
    ]


@pytest.mark.integration
def test_loopback_deployment_superlink_supernodes_flwr_run(tmp_path: Path) -> None:
    """flower-superlink + 4 flower-supernode + flwr run on 127.0.0.1, each node holding only its shard: the
    whole graph's location is made unreadable after partitioning, so no process but the partitioner saw it."""
    pytest.importorskip("ray")
    from quintet.fedaux.deploy import run_loopback_deployment, write_partition

    cfg = _cfg(tmp_path, rounds=2)
    cfg.wait_s = 120.0
    write_partition(cfg, tmp_path / "shards")
    clients, info = load_data(cfg.data)
    ref = simulate(cfg.algo, clients, info["num_classes"], 2, 0, progress=False)
    cfg.data.dataset = str(tmp_path / "deleted_graph.npz")
    res = run_loopback_deployment(cfg, tmp_path / "deploy", timeout_s=500, shards=tmp_path / "shards")
    assert np.array_equal(res.test_acc, ref.test_acc)  # bit-equal
    app = (tmp_path / "deploy" / "app" / "pyproject.toml").read_text()
    assert str(tmp_path) not in app and 'algo.name = "fedaux"' in app and "node_local = true" in app
    models = sorted(p.name for p in (cfg.out / "models").glob("client_*.pt"))
    assert models == [f"client_{i}.pt" for i in range(4)] and res.models_saved == 4


@pytest.mark.integration
def test_loopback_deployment_survives_a_supernode_killed_mid_run(tmp_path: Path) -> None:
    """Real processes: SuperNode 3 is killed (SIGKILL, by its PID) once it has received its round-2 message;
    the server finishes the run with the other three, records client 3's missing rounds as holes, and the
    three survivors save their personalised models."""
    import os
    import signal
    import subprocess
    import threading
    import time

    pytest.importorskip("ray")
    from quintet.fedaux.deploy import run_loopback_deployment, write_partition

    cfg = _cfg(tmp_path, rounds=3)
    cfg.wait_s, cfg.round_timeout_s = 120.0, 90.0  # a ClientApp process starts slowly on a loaded machine
    write_partition(cfg, tmp_path / "shards")
    work = tmp_path / "deploy"
    result: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: result.setdefault("res", run_loopback_deployment(cfg, work, 500, tmp_path / "shards"))
    )
    thread.start()
    log, killed, deadline = work / "supernode3.log", None, time.monotonic() + 300
    while killed is None and time.monotonic() < deadline and thread.is_alive():
        if log.is_file() and log.read_text(errors="ignore").count("Received successfully") >= 2:
            pids = subprocess.run(
                ["pgrep", "-f", str(tmp_path / "shards" / "client_3.pt")], capture_output=True, text=True
            )
            for pid in map(int, pids.stdout.split()):
                os.kill(pid, signal.SIGKILL)  # the SuperNode this test's deployment started
                killed = pid
        time.sleep(0.2)
    thread.join(timeout=600)
    res = result["res"]
    assert killed is not None
    assert np.isfinite(res.test_acc[:, :3]).all() and np.isnan(res.test_acc[-1, 3])
    models = sorted(p.name for p in (cfg.out / "models").glob("client_*.pt"))
    assert models == ["client_0.pt", "client_1.pt", "client_2.pt"] and res.models_saved == 3


#: a ClientApp module that misbehaves in round 2 as its node config says (``fault="nan"|"bad_shape"|"extra_key"``)
FAULT_CLIENT = '''"""quintet's ClientApp, corrupting its round-2 reply as the node config's ``fault`` says."""
import torch

import quintet.fedaux.flower as F

_train = F.handle_train


def _faulty(content, node_config, state, cfg):
    out = _train(content, node_config, state, cfg)
    fault = node_config.get("fault")
    if fault and content["config"].get("round") == 2 and "arrays" in out:
        k = next(iter(out["arrays"]))
        if fault == "nan":
            out["arrays"][k] = out["arrays"][k] * float("nan")
        elif fault == "bad_shape":
            out["arrays"][k] = out["arrays"][k].flatten()[:1].clone()
        elif fault == "extra_key":
            out["arrays"]["x_features"] = torch.zeros(3)
    return out


F.handle_train = _faulty
client_app = F.make_client_app()
'''


@pytest.mark.integration
def test_loopback_deployment_rejects_bad_replies_of_real_nodes_and_goes_on(tmp_path: Path) -> None:
    """Real processes: SuperNodes 1, 2 and 3 send a NaN upload, a wrong shape and an extra key in round 2.
    Each reply is rejected and logged, the round aggregates the others, the three are served again in
    round 3, and all four save their personalised models."""
    pytest.importorskip("ray")
    from quintet.fedaux.deploy import run_loopback_deployment, write_partition
    from quintet.fedaux.flower import write_flower_app

    cfg = _cfg(tmp_path, rounds=3)
    cfg.wait_s, cfg.round_timeout_s = 120.0, 90.0
    write_partition(cfg, tmp_path / "shards")
    app = write_flower_app(tmp_path / "app", cfg)
    (app / "fault_client.py").write_text(FAULT_CLIENT)
    toml = app / "pyproject.toml"
    toml.write_text(toml.read_text().replace('"quintet.fedaux.flower:client_app"', '"fault_client:client_app"'))
    faults = {1: 'fault="nan"', 2: 'fault="bad_shape"', 3: 'fault="extra_key"'}
    res = run_loopback_deployment(cfg, tmp_path / "deploy", 500, tmp_path / "shards", app=app, node_config=faults)
    assert res.rejected == 3
    assert np.isnan(res.test_acc[1, 1:]).all() and np.isfinite(res.test_acc[1, 0])  # round 2: only node 0
    assert np.isfinite(res.test_acc[[0, 2]]).all()  # rounds 1 and 3: everyone
    log = (tmp_path / "deploy" / "flwr_run.log").read_text(errors="ignore")
    assert "non-finite" in log and "shape" in log and "wrong parameter keys" in log
    assert res.models_saved == 4


@pytest.mark.integration
def test_loopback_deployment_serves_a_supernode_that_joins_late(tmp_path: Path) -> None:
    """Real processes: the server starts with 3 SuperNodes; the 4th is started once the others have their
    round-1 message, is served from a later round on (its earlier rounds are holes) and saves its model."""
    import os
    import subprocess
    import sys
    import threading
    import time

    pytest.importorskip("ray")
    from quintet.fedaux.deploy import run_loopback_deployment, supernode_cmd, write_partition

    cfg = _cfg(tmp_path, rounds=4)
    cfg.wait_s, cfg.round_timeout_s, cfg.min_nodes = 120.0, 90.0, 3
    write_partition(cfg, tmp_path / "shards")
    work = tmp_path / "deploy"
    result: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: result.setdefault(
            "res", run_loopback_deployment(cfg, work, 500, tmp_path / "shards", nodes=[0, 1, 2])
        )
    )
    thread.start()
    log, late, deadline = work / "supernode0.log", None, time.monotonic() + 300
    try:
        while late is None and time.monotonic() < deadline and thread.is_alive():
            if log.is_file() and "Received successfully" in log.read_text(errors="ignore"):
                addr = (work / "flwr_home" / "config.toml").read_text().split('address = "127.0.0.1:')[1]
                cmd = supernode_cmd(int(addr.split('"')[0]), tmp_path / "shards" / "client_3.pt", cfg.out)
                env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
                late = subprocess.Popen(cmd, cwd=work, env=env, stdout=(work / "supernode3.log").open("wb"),
                                        stderr=subprocess.STDOUT)  # fmt: skip
            time.sleep(0.2)
        thread.join(timeout=600)
    finally:
        if late is not None:
            late.terminate()
            late.wait(timeout=30)
    res = result["res"]
    assert late is not None and np.isnan(res.test_acc[0, 3])  # round 1 ran without it
    assert np.isfinite(res.test_acc[-1, 3]) and np.isfinite(res.test_acc[:, :3]).all()
    models = sorted(p.name for p in (cfg.out / "models").glob("client_*.pt"))
    assert models == [f"client_{i}.pt" for i in range(4)]
