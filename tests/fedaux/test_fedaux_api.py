"""Inputs graph users have: PyG ``Data`` objects and files through ``quintet.fedaux.run``; the SBM generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import quintet.fedaux as fedaux
from quintet.fedaux.algorithms import AlgoConfig
from quintet.fedaux.data import build_clients, graph_from_pyg, load_graph, sbm_clients, sbm_graph
from quintet.fedaux.simulate import DataConfig, load_client_models, load_data, simulate

Data = pytest.importorskip("torch_geometric.data").Data


@pytest.fixture(scope="module")
def pyg_graph():
    g, _ = sbm_graph(4, seed=1)
    return Data(x=g.x, edge_index=g.edge_index, y=g.y.view(-1, 1))  # OGB-style (N, 1) labels


def test_run_takes_a_pyg_data_object_and_equals_the_same_graph_from_a_file(pyg_graph, tmp_path: Path) -> None:
    res = fedaux.run(pyg_graph, num_clients=4, rounds=3, algorithm="fedaux", hidden=8, out=tmp_path / "a")
    assert res.val_acc.shape == (3, 4) and np.isfinite(res.test_at_best_val)
    assert sorted(load_client_models(tmp_path / "a")) == [0, 1, 2, 3]
    torch.save(pyg_graph, tmp_path / "g.pt")  # a pickled PyG Data: read with weights_only=True
    again = fedaux.run(tmp_path / "g.pt", num_clients=4, rounds=3, algorithm="fedaux", hidden=8)
    assert np.array_equal(res.test_acc, again.test_acc)
    clients, info = build_clients(graph_from_pyg(pyg_graph), "metis", 4, 1234)
    ref = simulate(AlgoConfig(name="fedaux", hidden=8), clients, info["num_classes"], 3, 0, progress=False)
    assert np.array_equal(res.test_acc, ref.test_acc)


def test_a_pt_file_with_foreign_code_is_refused(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("ran foreign code",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match=r"evil\.pt: not a graph loadable with weights_only=True"):
        load_graph(tmp_path / "evil.pt")


def test_pyg_input_is_checked_like_any_graph() -> None:
    bad = Data(
        x=torch.tensor([[float("nan")], [1.0]]), edge_index=torch.tensor([[0], [1]]), y=torch.tensor([0, 1])
    )
    with pytest.raises(ValueError, match="NaN or inf"):
        graph_from_pyg(bad)
    with pytest.raises(ValueError, match="expected tensors x, edge_index and y"):
        graph_from_pyg(Data(edge_index=torch.tensor([[0], [1]]), num_nodes=2))


def test_sbm_is_seeded_and_its_shift_moves_the_right_answer_from_fedavg_to_local() -> None:
    a, _ = sbm_graph(3, seed=5, feature_shift=2.0)
    b, _ = sbm_graph(3, seed=5, feature_shift=2.0)
    assert torch.equal(a.x, b.x) and torch.equal(a.edge_index, b.edge_index)
    acc = {}
    for shift in (0.0, 3.0):
        clients, info = sbm_clients(6, shift, seed=0)
        for m in ("local", "fedavg"):
            algo = AlgoConfig(name=m, hidden=16, local_epochs=3)  # type: ignore[arg-type]
            acc[m, shift] = simulate(
                algo, clients, info["num_classes"], 10, 0, progress=False
            ).test_at_best_val
    assert acc["fedavg", 0.0] > acc["local", 0.0]  # one distribution: sharing helps
    assert acc["local", 3.0] > acc["fedavg", 3.0] + 10  # a class looks different in every community
    clients, _ = load_data(DataConfig(dataset="sbm", num_clients=6, sbm_shift=3.0))
    assert len(clients) == 6 and all(
        torch.equal(c.x, d.x) for c, d in zip(clients, sbm_clients(6, 3.0, seed=1234)[0], strict=True)
    )


def test_an_ogb_node_property_folder_is_read_without_the_ogb_package(tmp_path: Path) -> None:
    import gzip

    g, _ = sbm_graph(4, seed=2)
    raw = tmp_path / "ogbn-toy" / "raw"
    raw.mkdir(parents=True)
    one_way = g.edge_index[:, g.edge_index[0] < g.edge_index[1]]  # OGB lists each undirected edge once
    for name, arr, fmt in (
        ("node-feat.csv.gz", g.x.numpy(), "%.8g"),
        ("edge.csv.gz", one_way.t().numpy(), "%d"),
        ("node-label.csv.gz", g.y.view(-1, 1).numpy(), "%d"),
    ):
        with gzip.open(raw / name, "wt") as fh:
            np.savetxt(fh, arr, fmt=fmt, delimiter=",")
    loaded = load_graph(tmp_path / "ogbn-toy")
    assert torch.equal(loaded.edge_index, g.edge_index) and torch.equal(loaded.y, g.y)
    assert torch.allclose(loaded.x, g.x)
    res = fedaux.run(tmp_path / "ogbn-toy", num_clients=4, rounds=2, algorithm="fedavg", hidden=8)
    assert np.isfinite(res.test_at_best_val)
