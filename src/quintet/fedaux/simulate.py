"""Deterministic in-process federated simulation (``quintet fedaux run``).

All clients take part in every round (fraction 1.0, as in FED-PUB/FedAux). Per round each client runs
:func:`~quintet.fedaux.algorithms.client_round` and the server runs
:func:`~quintet.fedaux.algorithms.server_aggregate`. The metric follows the protocol: the unweighted mean
over clients of local test accuracy after local training, taken at the round with the best mean
validation accuracy.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from quintet.config import save_config
from quintet.fedaux.algorithms import AlgoConfig, build_model
from quintet.fedaux.data import (
    MANIFEST,
    ClientData,
    build_clients,
    load_shards,
    sbm_clients,
    synthetic_clients,
)
from quintet.fedaux.loop import (
    MODELS_DIR,
    ClientContext,
    InProcessTransport,
    LoopSpec,
    SimResult,
    run_rounds,
    summarise_rounds,
)
from quintet.io import atomic_save_json, atomic_write_bytes, atomic_write_text
from quintet.runtime import torch_threads

__all__ = [
    "DataConfig",
    "RunConfig",
    "SimResult",
    "clear_client_models",
    "load_client_models",
    "load_data",
    "partition_provenance",
    "run",
    "simulate",
    "summarise_rounds",
]


@dataclass
class DataConfig:
    """Where the graph comes from and how it is cut into clients.

    Attributes:
        dataset: ``cora`` | ``citeseer`` | ``synthetic`` | ``sbm`` (:func:`~quintet.fedaux.data.sbm_graph`,
            one community per client, seeded by ``split_seed``) | a path to an ``.npz``/``.pt`` graph | a folder of
            client shards written by ``quintet fedaux partition`` (its ``partition.json``; the partition
            keys below are then not used).
        root: folder with the Planetoid raw files (``ind.cora.*``); nothing is downloaded.
        partition: ``metis`` (disjoint), ``overlapping`` (FED-PUB) or ``louvain``.
        num_clients: K (for ``overlapping``: 5 × number of communities).
        split_seed: seed of the node split (fixed across runs, as FED-PUB's 1234) and of the
            partitioner where it takes one (``metis=pymetis``, Louvain, the overlapping halves).
        metis: how METIS is called: ``fedpub`` (k-way for every K with METIS's default seed, as
            FED-PUB's partition script calls it) or ``pymetis`` (pymetis's default: recursive
            bisection for K <= 8, seeded by ``split_seed``).
        cache_dir: partition cache (keyed by a fingerprint); empty string disables it.
        sbm_shift: ``sbm`` only: how far each community moves every class's feature mean (0: one shared
            distribution; 3: a class looks different in every community).
    """

    dataset: str = "cora"
    root: Path = Path("../shared/data/planetoid")
    partition: Literal["metis", "overlapping", "louvain"] = "metis"
    num_clients: int = 10
    split_seed: int = 1234
    metis: Literal["fedpub", "pymetis"] = "fedpub"
    cache_dir: str = "~/.cache/quintet/fedaux"
    sbm_shift: float = 1.0


@dataclass
class RunConfig:
    """One federated run.

    Attributes:
        data: the clients.
        algo: the method and its hyperparameters.
        rounds: communication rounds T (100).
        seed: model/run seed (init, dropout); vary it for repeated trials.
        out: where metrics.csv, clients.csv, curves.png, summary.json and config.yaml go.
        progress: show a progress bar.
        threads: torch CPU threads (1 is fastest for subgraphs of a few thousand nodes).
    """

    data: DataConfig = field(default_factory=DataConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    rounds: int = 100
    seed: int = 0
    out: Path = Path("runs/fedaux")
    progress: bool = True
    threads: int = 1

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")


def load_data(cfg: DataConfig) -> tuple[list[ClientData], dict[str, int]]:
    """Build (or load from the cache, or from a folder of shards) the clients of ``cfg``."""
    if (Path(cfg.dataset) / MANIFEST).is_file():
        return load_shards(cfg.dataset)
    if cfg.dataset == "sbm":
        return sbm_clients(cfg.num_clients, cfg.sbm_shift, seed=cfg.split_seed)
    if cfg.dataset == "synthetic":
        if cfg.num_clients < 2 or cfg.num_clients % 2:
            raise ValueError(
                f"the synthetic graph needs an even number of clients >= 2, got {cfg.num_clients}"
            )
        return synthetic_clients(seed=cfg.split_seed, num_groups=cfg.num_clients // 2, clients_per_group=2)
    return build_clients(
        cfg.dataset,
        cfg.partition,
        cfg.num_clients,
        cfg.split_seed,
        data_root=cfg.root,
        metis=cfg.metis,
        cache_dir=Path(cfg.cache_dir).expanduser() if cfg.cache_dir else None,
    )


def partition_provenance(cfg: DataConfig) -> dict[str, object]:
    """Where a partition comes from: the data keys and the sha256 of the source files."""
    from quintet.fedaux.data import PLANETOID_SHA256
    from quintet.io import file_sha256

    name = cfg.dataset.lower()
    if name in ("cora", "citeseer", "pubmed"):
        sources = {k: v for k, v in PLANETOID_SHA256.items() if k.startswith(f"ind.{name}.")}
    elif Path(cfg.dataset).is_file():
        sources = {Path(cfg.dataset).name: file_sha256(cfg.dataset)}
    else:
        sources = {}
    keys = {k: v for k, v in asdict(cfg).items() if k not in ("root", "cache_dir")}
    return {**keys, "source_sha256": sources, "split": "20/40/40 (train/val/test)"}


def simulate(
    algo: AlgoConfig,
    clients: list[ClientData],
    num_classes: int,
    rounds: int,
    seed: int,
    progress: bool = True,
    desc: str | None = None,
    on_round: Callable[[int, dict[int, dict[str, torch.Tensor]]], None] | None = None,
    model_dir: Path | None = None,
) -> SimResult:
    """Run ``rounds`` rounds of ``algo`` over ``clients`` in this process (deterministic under ``seed``).

    The round loop is :func:`~quintet.fedaux.loop.run_rounds`, the one Flower runs use, over an
    :class:`~quintet.fedaux.loop.InProcessTransport`. ``on_round(rnd, local_states)``, if given, is called
    after every round's local training with each client's local state (``model/...`` parameters and
    ``opt/...`` Adam moments); it must not modify them. With ``model_dir`` every client saves its model of
    the best round there (``client_<id>.pt``); ``best_states`` of the result holds them either way.
    """
    contexts = [ClientContext(algo, c, num_classes, model_dir) for c in clients]
    transport = InProcessTransport(contexts, on_round)
    spec = LoopSpec(
        algo, len(clients), int(clients[0].x.shape[1]), num_classes, rounds, seed, progress=progress,
        desc=desc or algo.name,
    )  # fmt: skip
    res = run_rounds(spec, transport)
    res.best_states = transport.best_states()
    return res


def write_outputs(result: SimResult, out_dir: Path, title: str) -> None:
    """metrics.csv (per round means), clients.csv (long format), curves.png and summary.json, atomically."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a round nobody answered has no mean: NaN
        _write_outputs(result, out_dir, title)


def _write_outputs(result: SimResult, out_dir: Path, title: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["round", "mean_train_loss", "mean_val_acc", "mean_test_acc"])
    for r in range(result.val_acc.shape[0]):
        w.writerow(
            [
                r + 1,
                f"{np.nanmean(result.train_loss[r]):.6f}",
                f"{np.nanmean(result.val_acc[r]):.6f}",
                f"{np.nanmean(result.test_acc[r]):.6f}",
            ]
        )
    atomic_write_text(out_dir / "metrics.csv", buf.getvalue())
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["round", "client", "train_loss", "val_acc", "test_acc"])
    for r in range(result.val_acc.shape[0]):
        for c in range(result.val_acc.shape[1]):
            w.writerow(
                [r + 1, c, f"{result.train_loss[r, c]:.6f}", result.val_acc[r, c], result.test_acc[r, c]]
            )
    atomic_write_text(out_dir / "clients.csv", buf.getvalue())
    atomic_save_json(out_dir / "summary.json", result.summary())
    plot_curves({title: result}, out_dir / "curves.png")


def clear_client_models(out_dir: Path) -> None:
    """Remove ``models/client_*.pt`` an earlier run left in ``out_dir`` (the folder then holds this run's)."""
    for stale in (Path(out_dir) / MODELS_DIR).glob("client_*.pt"):
        stale.unlink()


def load_client_models(out_dir: Path | str) -> dict[int, torch.nn.Module]:
    """The personalised models that :func:`run` saved, rebuilt and in eval mode: ``{client_id: model}``.

    Call ``model(client.features(), client.gcn_adjacency())`` for the logits of a client's nodes.

    Raises:
        FileNotFoundError: no ``models/client_*.pt`` in ``out_dir``.
        ValueError: a file that is not a model written by :func:`~quintet.fedaux.loop.save_client_model`.
    """
    files = sorted((Path(out_dir) / MODELS_DIR).glob("client_*.pt"))
    if not files:
        raise FileNotFoundError(f"no {MODELS_DIR}/client_*.pt in {out_dir} (written by `quintet fedaux run`, `flower-sim` or `deploy-local`)")
    models: dict[int, torch.nn.Module] = {}
    for path in files:
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            algo = AlgoConfig(**blob["algo"])
            model = build_model(algo, int(blob["in_dim"]), int(blob["num_classes"]))
            model.load_state_dict(blob["state_dict"])
        except Exception as exc:  # unpickling, missing keys, shape mismatch: name the file
            raise ValueError(f"{path}: not a client model written by quintet fedaux run ({exc})") from exc
        models[int(blob["client_id"])] = model.eval()
    return models


def plot_curves(results: dict[str, SimResult], path: Path, title: str = "") -> None:
    """Mean validation/test accuracy per round for several runs, one PNG written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, res in results.items():
        rounds = np.arange(1, res.val_acc.shape[0] + 1)
        axes[0].plot(rounds, np.nanmean(res.val_acc, 1) * 100, label=name)
        axes[1].plot(rounds, np.nanmean(res.test_acc, 1) * 100, label=name)
    for ax, lab in zip(axes, ("mean client val acc (%)", "mean client test acc (%)"), strict=True):
        ax.set_xlabel("round")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def run(cfg: RunConfig) -> SimResult:
    """Load the clients, simulate, write the outputs and the resolved config into ``cfg.out``."""
    clients, info = load_data(cfg.data)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    clear_client_models(out)
    with torch_threads(cfg.threads):
        res = simulate(
            cfg.algo, clients, info["num_classes"], cfg.rounds, cfg.seed, cfg.progress, model_dir=out / MODELS_DIR
        )
    write_outputs(res, out, f"{cfg.algo.name} on {cfg.data.dataset} ({len(clients)} clients)")
    if not math.isfinite(res.test_at_best_val):
        raise RuntimeError("the run produced non-finite accuracies")
    return res
