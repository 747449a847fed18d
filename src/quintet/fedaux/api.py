"""One call for graph users: ``quintet.fedaux.run(data, num_clients=..., rounds=..., algorithm=...)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quintet.fedaux.algorithms import AlgoConfig
from quintet.fedaux.data import ClientData, Graph, build_clients, graph_from_pyg
from quintet.fedaux.loop import MODELS_DIR, SimResult
from quintet.fedaux.simulate import (
    DataConfig,
    clear_client_models,
    load_data,
    simulate,
    write_outputs,
)
from quintet.runtime import torch_threads

__all__ = ["run"]


def _clients(
    data: Any, num_clients: int, partition: str, split_seed: int, data_root: str | Path | None
) -> tuple[list[ClientData], dict[str, int]]:
    if isinstance(data, str | Path):
        root = {"root": Path(data_root)} if data_root is not None else {}
        cfg = DataConfig(dataset=str(data), num_clients=num_clients, partition=partition,  # type: ignore[arg-type]
                         split_seed=split_seed, cache_dir="", **root)  # fmt: skip
        return load_data(cfg)
    graph = data if isinstance(data, Graph) else graph_from_pyg(data, name=type(data).__name__)
    return build_clients(graph, partition, num_clients, split_seed)  # type: ignore[arg-type]


def run(
    data: Any,
    num_clients: int = 10,
    rounds: int = 100,
    algorithm: str = "fedaux",
    *,
    partition: str = "metis",
    seed: int = 0,
    split_seed: int = 1234,
    out: str | Path | None = None,
    data_root: str | Path | None = None,
    progress: bool = False,
    threads: int = 1,
    **algo: Any,
) -> SimResult:
    """Federated training of ``algorithm`` on ``data`` cut into ``num_clients`` clients, in this process.

    Args:
        data: a PyG ``Data`` (or a one-graph ``InMemoryDataset``), a :class:`~quintet.fedaux.data.Graph`, a
            graph file (``.pt`` holding a PyG ``Data``/dict, ``.npz``), a Planetoid name (with
            ``data_root``), ``"synthetic"``/``"sbm"``, or a folder of shards from ``quintet fedaux partition``.
        num_clients / partition / split_seed: how the graph is cut (``metis``, ``overlapping``, ``louvain``)
            and the seed of the 20/40/40 node split.
        rounds / seed: communication rounds; model seed.
        algorithm: ``local``, ``fedavg``, ``fedprox``, ``fedper``, ``fedpub`` or ``fedaux``.
        out: if given, metrics.csv, clients.csv, curves.png, summary.json and ``models/client_<id>.pt``.
        **algo: any :class:`~quintet.fedaux.algorithms.AlgoConfig` field (``hidden=256``, ``alpha=1.0``...).

    Returns:
        The per-round accuracies and the protocol's number (``test_at_best_val``); ``best_states`` holds
        every client's personalised model at the best round.

    Example:
        >>> from torch_geometric.datasets import Planetoid  # doctest: +SKIP
        >>> res = quintet.fedaux.run(Planetoid(root, "Cora")[0], num_clients=10, rounds=100)  # doctest: +SKIP
    """
    cfg = AlgoConfig(name=algorithm, **algo)  # type: ignore[arg-type]
    clients, info = _clients(data, num_clients, partition, split_seed, data_root)
    model_dir = None
    if out is not None:
        clear_client_models(Path(out))
        model_dir = Path(out) / MODELS_DIR
    with torch_threads(threads):
        res = simulate(cfg, clients, info["num_classes"], rounds, seed, progress, model_dir=model_dir)
    if out is not None:
        write_outputs(res, Path(out), f"{algorithm} ({len(clients)} clients)")
    return res
