"""The one round loop: strategies per method, reply validation, node identity, saved personalised models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from quintet.fedaux.algorithms import METHODS, AlgoConfig, initial_state
from quintet.fedaux.flower import FlowerConfig, handle_train, run_server
from quintet.fedaux.loop import METRIC_KEYS, Reply, SimResult, json_safe, validate_reply
from quintet.fedaux.simulate import DataConfig, load_client_models, load_data, simulate
from quintet.fedaux.strategies import STRATEGIES, strategy_for


def test_one_strategy_object_per_method_and_what_each_keeps_local() -> None:
    assert set(STRATEGIES) == set(METHODS)
    names = ["gnn.layers.0.weight", "gnn.layers.0.mask", "head.weight", "head.bias", "apv"]
    kept = {m: strategy_for(AlgoConfig(name=m)).local_keys(names) for m in METHODS}  # type: ignore[arg-type]
    assert kept["local"] == set(names) and kept["fedavg"] == kept["fedprox"] == set()
    assert kept["fedper"] == {"head.weight", "head.bias"}
    assert kept["fedpub"] == kept["fedaux"] == {"gnn.layers.0.mask"}
    assert strategy_for(AlgoConfig(name="fedaux", local_masks=False)).local_keys(names) == set()
    cfg = AlgoConfig()
    cfg.name = "fedsgd"  # type: ignore[assignment]
    with pytest.raises(ValueError, match="unknown method 'fedsgd'"):
        strategy_for(cfg)


def test_fedavg_strategy_weights_by_example_count_and_local_sends_nothing() -> None:
    ups = {0: {"w": torch.tensor([1.0, 1.0])}, 3: {"w": torch.tensor([4.0, 7.0])}}
    down, diag = strategy_for(AlgoConfig(name="fedavg")).aggregate(ups, {0: 2.0, 3: 1.0})
    assert torch.allclose(down[3]["w"], torch.tensor([2.0, 3.0])) and down[0] is down[3]
    assert diag["clients"].tolist() == [0, 3]
    assert strategy_for(AlgoConfig(name="local")).aggregate(ups, {0: 2.0, 3: 1.0}) == ({}, {})


GOOD = {
    "arrays": {"w": np.ones((2, 2), np.float32), "apv": np.ones(2, np.float32)},
    "metrics": {"partition-id": 1, "num-examples": 5, "train_loss": 0.5, "val_acc": 0.5, "test_acc": 0.25},
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"arrays": {"w": np.array([["a", "b"], ["c", "d"]]), "apv": np.ones(2, np.float32)}}, "dtype"),
        ({"arrays": {"w": np.ones((2, 2), np.int64), "apv": np.ones(2, np.float32)}}, "dtype"),
        ({"metrics": {**GOOD["metrics"], "num-examples": -3}}, "positive integer"),
        ({"metrics": {**GOOD["metrics"], "num-examples": 2.5}}, "positive integer"),
        ({"metrics": {**GOOD["metrics"], "test_acc": 1e6}}, r"outside \[0, 1\]"),
        ({"metrics": {**GOOD["metrics"], "val_acc": float("nan")}}, "not finite"),
        ({"metrics": {**GOOD["metrics"], "train_loss": -1.0}}, "negative"),
        ({"metrics": {**GOOD["metrics"], "val_acc": "0.9"}}, "not a number"),
        ({"metrics": {**GOOD["metrics"], "partition-id": True}}, "not a number"),
    ],
)
def test_validate_reply_checks_dtypes_metric_ranges_and_example_counts(change: dict, message: str) -> None:
    expected = {"w": (2, 2), "apv": (2,)}
    pid, upload, metrics = validate_reply(GOOD, expected, 4)
    assert pid == 1 and upload["w"].dtype == torch.float32 and metrics["num-examples"] == 5.0
    with pytest.raises(ValueError, match=message):
        validate_reply({**GOOD, **change}, expected, 4)


def _cfg(tmp_path: Path, rounds: int = 3, name: str = "fedaux") -> FlowerConfig:
    return FlowerConfig(
        data=DataConfig(dataset="synthetic", num_clients=4, cache_dir=""),
        algo=AlgoConfig(name=name, hidden=16),  # type: ignore[arg-type]
        rounds=rounds,
        out=tmp_path / "flower",
        wait_s=1.0,
        progress=False,
    )


class LyingGrid:
    """Nodes 101..104 serve partitions 0..3; ``lies`` maps (round, node) to a partition id it claims, or to
    ``"examples"`` (it reports another example count)."""

    def __init__(self, cfg: FlowerConfig, lies: dict[tuple[int, int], Any]) -> None:
        self.cfg, self.lies = cfg, lies
        self.nodes = {101 + i: {"partition-id": i} for i in range(cfg.data.num_clients)}
        self.state: dict[int, dict[str, Any]] = {n: {} for n in self.nodes}

    def node_ids(self) -> list[int]:
        return list(self.nodes)

    def exchange(self, payloads: dict[int, dict[str, Any]], timeout: float) -> list[Reply]:
        out = []
        for nid, p in payloads.items():
            reply = handle_train(p, self.nodes[nid], self.state[nid], self.cfg)
            lie = self.lies.get((p["config"]["round"], nid))
            if lie == "examples":
                reply["metrics"]["num-examples"] += 1
            elif lie is not None:
                reply["metrics"]["partition-id"] = lie
            out.append(Reply(nid, reply))
        return out


def test_identity_is_the_node_id_a_claimed_partition_does_not_move_data(tmp_path: Path, caplog) -> None:
    cfg = _cfg(tmp_path)
    _, info = load_data(cfg.data)
    lies = {(2, 101): 1, (2, 103): 0, (3, 104): "examples"}  # node 101 claims 102's partition, etc.
    with caplog.at_level("WARNING", logger="quintet.fedaux.loop"):
        res = run_server(cfg, LyingGrid(cfg, lies), info["num_features"], info["num_classes"])
    assert "serves partition 0 but its reply claims 1" in caplog.text
    assert "serves partition 2 but its reply claims 0" in caplog.text
    assert "num-examples changed" in caplog.text
    assert np.isnan(res.test_acc[1, 0]) and np.isnan(res.test_acc[1, 2]) and np.isnan(res.test_acc[2, 3])
    assert np.isfinite(res.test_acc[1, 1]) and res.rejected == 3
    summary = json.loads((cfg.out / "summary.json").read_text(), parse_constant=_no_constants)
    assert summary["rejected_replies"] == 3
    rounds = json.loads((cfg.out / "rounds.json").read_text(), parse_constant=_no_constants)
    assert rounds["test_acc"][1][0] is None  # a hole is null, not a bare NaN


def _no_constants(name: str) -> None:
    raise AssertionError(f"invalid JSON constant {name}")


@pytest.mark.parametrize("method", ["fedaux", "fedper"])
def test_flower_and_in_process_runs_both_save_the_same_personalised_models(
    tmp_path: Path, method: str
) -> None:
    cfg = _cfg(tmp_path, rounds=4, name=method)
    clients, info = load_data(cfg.data)
    grid = LyingGrid(cfg, {})
    res = run_server(cfg, grid, info["num_features"], info["num_classes"])
    ref_dir = tmp_path / "inproc" / "models"
    ref = simulate(
        cfg.algo, clients, info["num_classes"], cfg.rounds, cfg.seed, progress=False, model_dir=ref_dir
    )
    assert np.array_equal(res.test_acc, ref.test_acc) and res.models_saved == 4 == ref.models_saved
    flower_models, inproc_models = load_client_models(cfg.out), load_client_models(ref_dir.parent)
    assert sorted(flower_models) == sorted(inproc_models) == [0, 1, 2, 3]
    for c in clients:
        a, b = flower_models[c.client_id].state_dict(), inproc_models[c.client_id].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
        with torch.no_grad():
            pred = flower_models[c.client_id](c.features(), c.gcn_adjacency()).argmax(1)
        acc = float((pred[c.test_mask] == c.y[c.test_mask]).float().mean())
        assert acc == res.test_acc[res.best_round - 1, c.client_id]
    blob = torch.load(cfg.out / "models" / "client_0.pt", weights_only=True)
    assert blob["round"] == res.best_round
    assert any(k.endswith(".mask") for k in blob["state_dict"]) == (method == "fedaux")


def test_summary_is_valid_json_even_with_non_finite_values() -> None:
    nan = np.full((2, 2), np.nan)
    res = SimResult(nan, nan, nan, 1, float("nan"), float("inf"), 1.0, mix_max=np.full(2, np.nan))
    text = json.dumps(res.summary(), allow_nan=False)
    assert json.loads(text)["test_at_best_val"] is None
    assert json_safe({"a": [np.float32(np.inf), 1.0]}) == {"a": [None, 1.0]}


def test_initial_state_is_the_round_one_download(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, rounds=1)
    _, info = load_data(cfg.data)
    grid = LyingGrid(cfg, {})
    sent: list[dict] = []
    orig = grid.exchange
    grid.exchange = lambda p, t: (sent.append(p), orig(p, t))[1]  # type: ignore[method-assign]
    run_server(cfg, grid, info["num_features"], info["num_classes"])
    init = initial_state(cfg.algo, info["num_features"], info["num_classes"], cfg.seed)
    assert all(torch.equal(sent[0][101]["arrays"][k], init[k]) for k in init)
    assert sent[-1][101]["config"]["final"] and sent[-1][101]["arrays"] == {}
    assert set(METRIC_KEYS) <= set(GOOD["metrics"])


class ChurnGrid(LyingGrid):
    """Node 104 (partition 3) joins only at round ``join``; at round ``restart`` node 102 (partition 1) is
    replaced by a new node 202 that serves the same partition with an empty store (a restarted SuperNode):
    as 102 is gone, 202 takes partition 1 over."""

    def __init__(self, cfg: FlowerConfig, join: int, restart: int) -> None:
        super().__init__(cfg, {})
        self.join, self.restart, self.round = join, restart, 1
        self.sent: list[dict[int, dict[str, Any]]] = []

    def node_ids(self) -> list[int]:
        ids = [n for n in self.nodes if n != 104 or self.round >= self.join]
        if self.round >= self.restart:
            ids = [202 if n == 102 else n for n in ids]
            self.nodes.setdefault(202, {"partition-id": 1})
            self.state.setdefault(202, {})
        return ids

    def exchange(self, payloads: dict[int, dict[str, Any]], timeout: float) -> list[Reply]:
        self.sent.append(payloads)
        out = super().exchange(payloads, timeout)
        self.round += 1
        return out


def test_a_late_node_and_a_restarted_node_start_from_the_initial_model_and_then_are_served(
    tmp_path: Path,
) -> None:
    cfg = _cfg(tmp_path, rounds=4)
    _, info = load_data(cfg.data)
    grid = ChurnGrid(cfg, join=3, restart=3)
    res = run_server(cfg, grid, info["num_features"], info["num_classes"])
    assert np.isnan(res.test_acc[:2, 3]).all() and np.isfinite(res.test_acc[2:, 3]).all()
    assert np.isfinite(res.test_acc[:, 1]).all() and res.rejected == 0
    init = initial_state(cfg.algo, info["num_features"], info["num_classes"], cfg.seed)
    for nid in (104, 202):  # unknown node ids, no local state: the full θ⁽⁰⁾, masks included
        assert all(torch.equal(grid.sent[2][nid]["arrays"][k], init[k]) for k in init)
    assert set(grid.sent[3][202]["arrays"]) < set(init)  # bound to partition 1 now: its personalised mix
