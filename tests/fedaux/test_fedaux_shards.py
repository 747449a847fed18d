"""Node-local data: shards written by ``quintet fedaux partition``, read one per node; bad input refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from quintet.cli import main
from quintet.fedaux.algorithms import AlgoConfig
from quintet.fedaux.data import MANIFEST, load_graph, load_shard, load_shards, synthetic_clients, write_shards
from quintet.fedaux.flower import (
    FlowerConfig,
    app_config,
    client_context,
    config_from_run_config,
    handle_train,
    run_server,
)
from quintet.fedaux.loop import Reply
from quintet.fedaux.simulate import DataConfig, load_data, simulate
from quintet.io import atomic_torch_save


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    rc = main(
        ["fedaux", "partition", "data.dataset=synthetic", "data.num_clients=4", "-o", str(tmp_path / "sh")]
    )
    assert rc == 0
    return tmp_path / "sh"


def test_partition_writes_one_verified_shard_per_client_and_a_manifest(shards: Path) -> None:
    assert sorted(p.name for p in shards.glob("client_*.pt")) == [f"client_{i}.pt" for i in range(4)]
    assert (shards / MANIFEST).is_file()
    ref, info = load_data(DataConfig(dataset="synthetic", num_clients=4, cache_dir=""))
    got, meta = load_shards(shards)
    assert meta["num_features"] == info["num_features"] and meta["num_classes"] == info["num_classes"]
    for a, b in zip(ref, got, strict=True):
        assert all(torch.equal(v, b.to_dict()[k]) for k, v in a.to_dict().items())
    blob = torch.load(shards / "client_1.pt", weights_only=True)
    assert blob["provenance"]["dataset"] == "synthetic" and len(blob["fingerprint"]) == 64


def test_an_edited_shard_is_refused_by_name(shards: Path) -> None:
    blob = torch.load(shards / "client_2.pt", weights_only=True)
    blob["client"]["y"][0] = (blob["client"]["y"][0] + 1) % 4
    atomic_torch_save(shards / "client_2.pt", blob)
    with pytest.raises(ValueError, match=r"client_2\.pt: content does not match its fingerprint"):
        load_shard(shards / "client_2.pt")
    with pytest.raises(FileNotFoundError, match="quintet fedaux partition"):
        load_shard(shards / "client_9.pt")


def _rewrite(folder: Path, clients: list, info: dict[str, int]) -> None:
    write_shards(clients, info, folder, {"test": True})


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda c: setattr(c, "x", c.x.clone().index_fill_(0, torch.tensor([3]), float("nan"))),
            "NaN or inf",
        ),
        (lambda c: setattr(c, "train_mask", torch.zeros_like(c.train_mask)), "no training node"),
        (
            lambda c: setattr(c, "edge_index", torch.cat([c.edge_index, torch.tensor([[5], [5]])], 1)),
            "self-loops",
        ),
        (
            lambda c: setattr(c, "edge_index", torch.cat([c.edge_index, c.edge_index[:, :1]], 1)),
            "duplicate edges",
        ),
    ],
)
def test_a_bad_shard_is_refused_before_any_round(tmp_path: Path, edit: Any, message: str) -> None:
    clients, info = synthetic_clients(seed=0)
    edit(clients[1])
    _rewrite(tmp_path, clients, info)
    with pytest.raises(ValueError, match=rf"client_1\.pt: .*{message}"):
        load_shards(tmp_path)


def test_shards_of_different_partitions_do_not_mix(tmp_path: Path) -> None:
    clients, info = synthetic_clients(seed=0)
    _rewrite(tmp_path / "a", clients, info)
    wide, wide_info = synthetic_clients(seed=0, num_features=8)
    _rewrite(tmp_path / "b", wide, wide_info)
    (tmp_path / "a" / "client_3.pt").write_bytes((tmp_path / "b" / "client_3.pt").read_bytes())
    with pytest.raises(ValueError, match=r"client_3\.pt: num_features=8 but client_0\.pt has 16"):
        load_shards(tmp_path / "a")


def _node_local_cfg(tmp_path: Path, rounds: int = 3) -> FlowerConfig:
    base = FlowerConfig(
        data=DataConfig(dataset="synthetic", num_clients=4, cache_dir=""),
        algo=AlgoConfig(name="fedaux", hidden=16),
        rounds=rounds,
        num_features=16,
        num_classes=4,
        wait_s=1.0,
        progress=False,
    )
    cfg = config_from_run_config(app_config(base))  # what a deployed ClientApp/ServerApp builds
    cfg.out = tmp_path / "out"
    return cfg


class ShardGrid:
    """Nodes whose only data is their ``data-path`` shard."""

    def __init__(self, cfg: FlowerConfig, shards: Path) -> None:
        self.cfg = cfg
        self.nodes = {7000 + i: {"data-path": str(shards / f"client_{i}.pt")} for i in range(4)}
        self.state: dict[int, dict[str, Any]] = {n: {} for n in self.nodes}

    def node_ids(self) -> list[int]:
        return list(self.nodes)

    def exchange(self, payloads: dict[int, dict[str, Any]], timeout: float) -> list[Reply]:
        return [
            Reply(n, handle_train(p, self.nodes[n], self.state[n], self.cfg)) for n, p in payloads.items()
        ]


def test_node_local_run_matches_the_in_process_run_exactly(tmp_path: Path, shards: Path) -> None:
    cfg = _node_local_cfg(tmp_path)
    assert cfg.node_local and cfg.data.dataset == "cora"  # the app does not even know the graph
    res = run_server(cfg, ShardGrid(cfg, shards), cfg.num_features, cfg.num_classes)
    clients, info = load_data(DataConfig(dataset=str(shards)))
    ref = simulate(cfg.algo, clients, info["num_classes"], cfg.rounds, cfg.seed, progress=False)
    assert np.array_equal(res.test_acc, ref.test_acc) and res.models_saved == 4
    with pytest.raises(ValueError, match="node_config lacks data-path"):
        client_context({"partition-id": 0}, cfg)
    cfg.num_features = 17
    with pytest.raises(ValueError, match=r"client_0\.pt: shard has num_features=16 but the run has 17"):
        client_context({"data-path": str(shards / "client_0.pt")}, cfg)


def test_app_config_has_no_paths_and_run_config_overrides_it(tmp_path: Path) -> None:
    base = FlowerConfig(out=tmp_path / "abs", num_features=16, num_classes=4)
    base.data.root = tmp_path
    flat = app_config(base)
    assert not any(str(tmp_path) in str(v) for v in flat.values())
    assert flat["algo.name"] == "fedaux" and flat["node_local"] is True and "data.root" not in flat
    cfg = config_from_run_config({**flat, "rounds": 7, "algo.name": "fedavg", "algo.alpha": 1})
    assert cfg.rounds == 7 and cfg.algo.name == "fedavg" and cfg.algo.alpha == 1.0
    with pytest.raises(ValueError, match="unknown config key"):
        config_from_run_config({**flat, "algo.alhpa": 1.0})


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.array([[np.nan, 1.0], [0.0, 1.0]])}, "NaN or inf"),
        ({"x": np.array([[np.inf, 1.0], [0.0, 1.0]])}, "NaN or inf"),
        ({"edge_index": np.array([[0, 1], [0, 0]])}, "self-loops"),
        ({"edge_index": np.array([[0, 0], [1, 1]])}, "duplicate edges"),
    ],
)
def test_graph_files_with_bad_content_are_refused_naming_the_file(
    tmp_path: Path, arrays: dict, message: str
) -> None:
    good = {"x": np.ones((2, 2), np.float32), "edge_index": np.array([[0], [1]]), "y": np.array([0, 1])}
    path = tmp_path / "g.npz"
    np.savez(path, **{**good, **arrays})
    with pytest.raises(ValueError, match=rf"g\.npz: .*{message}"):
        load_graph(path)


def test_more_clients_than_nodes_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "g.npz"
    np.savez(
        path, x=np.ones((3, 2), np.float32), edge_index=np.array([[0, 1], [1, 2]]), y=np.array([0, 1, 0])
    )
    with pytest.raises(ValueError, match="cannot split 3 nodes into 5 parts"):
        load_data(DataConfig(dataset=str(path), num_clients=5, cache_dir=""))


def test_flower_app_takes_dims_and_client_count_from_a_shard_folder(tmp_path: Path, shards: Path) -> None:
    rc = main(["fedaux", "flower-app", f"data.dataset={shards}", "rounds=5", "-o", str(tmp_path / "dep")])
    assert rc == 0
    text = (tmp_path / "dep" / "app" / "pyproject.toml").read_text()
    assert "num_features = 16" in text and "num_classes = 4" in text and "data.num_clients = 4" in text
    assert str(tmp_path) not in text and "rounds = 5" in text
