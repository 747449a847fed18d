"""Graph loading, preprocessing and partition invariants (on graphs the tests make)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from quintet.fedaux import data as D
from quintet.fedaux.data import (
    Graph,
    build_clients,
    largest_connected_component,
    load_clients,
    load_graph,
    louvain_partition,
    make_clients,
    metis_partition,
    normalize_features,
    overlapping_partition,
    random_split,
    synthetic_community_graph,
)


@pytest.fixture
def graph() -> Graph:
    g, _ = synthetic_community_graph(num_groups=3, clients_per_group=2, nodes_per_client=40, seed=3)
    return g


def _edge_set(ei: torch.Tensor) -> set[tuple[int, int]]:
    return set(map(tuple, ei.t().tolist()))


@pytest.mark.parametrize("method", ["metis", "louvain"])
def test_disjoint_partitions_cover_every_node_once(graph: Graph, method: str) -> None:
    fn = metis_partition if method == "metis" else louvain_partition
    parts = fn(graph.edge_index, graph.num_nodes, 4, seed=1)
    assert len(parts) == 4 and all(p.numel() > 0 for p in parts)
    assert torch.equal(torch.sort(torch.cat(parts)).values, torch.arange(graph.num_nodes))
    again = fn(graph.edge_index, graph.num_nodes, 4, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(parts, again, strict=True))  # deterministic


def test_fedpub_metis_scheme_is_kway_whatever_the_seed_and_has_its_own_cache(
    tmp_path: Path, graph: Graph
) -> None:
    import pymetis

    parts = metis_partition(graph.edge_index, graph.num_nodes, 4, seed=1, scheme="fedpub")
    assert torch.equal(torch.sort(torch.cat(parts)).values, torch.arange(graph.num_nodes))
    other_seed = metis_partition(graph.edge_index, graph.num_nodes, 4, seed=99)
    assert all(torch.equal(a, b) for a, b in zip(parts, other_seed, strict=True))  # METIS's own seed
    xadj, adjncy = D._csr(graph.edge_index, graph.num_nodes)
    _, kway = pymetis.part_graph(4, adjacency=pymetis.CSRAdjacency(xadj, adjncy), recursive=False)
    member = np.empty(graph.num_nodes, dtype=np.int64)
    for c, p in enumerate(parts):
        member[p.numpy()] = c
    assert np.array_equal(member, np.asarray(kway))  # METIS_PartGraphKway with default options
    build_clients(graph, "metis", 4, seed=0, cache_dir=tmp_path, metis="pymetis")
    build_clients(graph, "metis", 4, seed=0, cache_dir=tmp_path)  # default: fedpub
    names = sorted(f.name for f in tmp_path.glob("*.pt"))
    assert len(names) == 2 and any("_metis_fedpub_" in n for n in names)
    with pytest.raises(ValueError, match="unknown METIS scheme"):
        metis_partition(graph.edge_index, graph.num_nodes, 4, scheme="gpmetis")  # type: ignore[arg-type]


def test_metis_rejects_too_many_parts(graph: Graph) -> None:
    with pytest.raises(ValueError, match="cannot split"):
        metis_partition(graph.edge_index, graph.num_nodes, graph.num_nodes + 1)


def test_overlapping_clients_are_halves_of_one_community(graph: Graph) -> None:
    parts = overlapping_partition(graph.edge_index, graph.num_nodes, 2, seed=0)
    comms = metis_partition(graph.edge_index, graph.num_nodes, 2, seed=0)
    assert len(parts) == 10
    for i, p in enumerate(parts):
        comm = set(comms[i // 5].tolist())
        assert set(p.tolist()) <= comm and p.numel() == len(comm) // 2
    assert set(parts[0].tolist()).isdisjoint(parts[5].tolist())
    assert parts[0].tolist() != parts[1].tolist()  # drawn independently


def test_clients_hold_induced_edges_only_and_restricted_masks(graph: Graph) -> None:
    masks = random_split(graph.num_nodes, seed=0)
    parts = metis_partition(graph.edge_index, graph.num_nodes, 3)
    clients = make_clients(graph, parts, masks)
    global_edges = _edge_set(graph.edge_index)
    kept = 0
    for c, nodes in zip(clients, parts, strict=True):
        local = {(int(c.node_ids[a]), int(c.node_ids[b])) for a, b in c.edge_index.t().tolist()}
        inside = {(a, b) for a, b in global_edges if a in set(nodes.tolist()) and b in set(nodes.tolist())}
        assert local == inside  # every induced edge, nothing else
        kept += len(local)
        for m_local, m_global in zip((c.train_mask, c.val_mask, c.test_mask), masks, strict=True):
            assert torch.equal(m_local, m_global[c.node_ids])
        assert torch.equal(c.x, graph.x[c.node_ids]) and torch.equal(c.y, graph.y[c.node_ids])
    assert kept < len(global_edges)  # cross-client edges were dropped


def test_client_without_training_nodes_is_a_clear_error(graph: Graph) -> None:
    n = graph.num_nodes
    no_train = (
        torch.zeros(n, dtype=torch.bool),
        torch.ones(n, dtype=torch.bool),
        torch.zeros(n, dtype=torch.bool),
    )
    with pytest.raises(ValueError, match="no training node"):
        make_clients(graph, [torch.arange(n)], no_train)


def test_random_split_sizes_disjoint_and_seeded() -> None:
    tr, va, te = random_split(100, seed=5)
    assert (int(tr.sum()), int(va.sum()), int(te.sum())) == (20, 40, 40)
    assert not (tr & va).any() and not (tr & te).any() and (tr | va | te).all()
    assert torch.equal(tr, random_split(100, seed=5)[0]) and not torch.equal(tr, random_split(100, seed=6)[0])
    with pytest.raises(ValueError, match="sum to 1"):
        random_split(10, 0, (0.5, 0.5, 0.5))


def test_lcc_and_row_normalisation() -> None:
    ei = torch.tensor([[0, 1, 1, 2, 3, 4], [1, 0, 2, 1, 4, 3]])
    g = Graph(
        x=torch.tensor([[1.0, 3.0], [0, 0], [2, 2], [5, 5], [1, 1]]), edge_index=ei, y=torch.arange(5) % 2
    )
    lcc = largest_connected_component(g)
    assert lcc.num_nodes == 3 and torch.equal(lcc.y, g.y[:3])
    assert _edge_set(lcc.edge_index) == {(0, 1), (1, 0), (1, 2), (2, 1)}
    xn = normalize_features(g.x)
    assert xn[0].tolist() == pytest.approx([0.25, 0.75]) and xn[1].tolist() == [0.0, 0.0]


def test_npz_graph_round_trip_and_bad_files(tmp_path: Path, graph: Graph) -> None:
    p = tmp_path / "g.npz"
    np.savez(p, x=graph.x.numpy(), edge_index=graph.edge_index.numpy(), y=graph.y.numpy())
    g2 = load_graph(p)
    assert torch.equal(g2.x, graph.x) and _edge_set(g2.edge_index) == _edge_set(graph.edge_index)
    np.savez(tmp_path / "bad.npz", x=graph.x.numpy())
    with pytest.raises(ValueError, match="missing array"):
        load_graph(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_graph(tmp_path / "nope.npz")
    (tmp_path / "g.txt").write_text("x")
    with pytest.raises(ValueError, match="unsupported"):
        load_graph(tmp_path / "g.txt")
    torch.save({"x": graph.x, "edge_index": torch.tensor([[0], [10_000]]), "y": graph.y}, tmp_path / "oob.pt")
    with pytest.raises(ValueError, match="outside"):
        load_graph(tmp_path / "oob.pt")
    with pytest.raises(ValueError, match="data root"):
        load_graph("cora")


def test_partitions_are_cached_under_a_fingerprint(tmp_path: Path, graph: Graph, monkeypatch) -> None:
    c1, info = build_clients(graph, "metis", 3, seed=0, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.pt"))
    assert len(files) == 1 and info["num_classes"] == graph.num_classes

    def boom(*a, **k):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(D, "partition", boom)
    c2, _ = build_clients(graph, "metis", 3, seed=0, cache_dir=tmp_path)
    assert all(
        torch.equal(a.x, b.x) and torch.equal(a.edge_index, b.edge_index) for a, b in zip(c1, c2, strict=True)
    )
    monkeypatch.undo()
    build_clients(graph, "metis", 2, seed=0, cache_dir=tmp_path)  # another K: another file
    assert len(list(tmp_path.glob("*.pt"))) == 2
    loaded, _ = load_clients(files[0])
    assert torch.equal(loaded[0].train_mask, c1[0].train_mask)
    with pytest.raises(ValueError, match="overlapping"):
        build_clients(graph, "overlapping", 7, seed=0)


@pytest.mark.integration
def test_cora_lcc_metis_and_checksums(shared_data: Path, tmp_path: Path) -> None:
    root = shared_data / "planetoid"
    clients, info = build_clients("cora", "metis", 10, 1234, data_root=root, cache_dir=tmp_path)
    assert info == {"num_features": 1433, "num_classes": 7, "num_nodes": 2485}
    assert sum(c.num_nodes for c in clients) == 2485 and min(c.num_nodes for c in clients) > 200
    bad = tmp_path / "raw"
    shutil.copytree(root / "raw", bad)
    (bad / "ind.cora.y").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="sha256"):
        D.load_planetoid("cora", bad.parent)
