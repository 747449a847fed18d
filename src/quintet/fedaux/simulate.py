"""Deterministic in-process federated simulation (``quintet fedaux run``).

All clients take part in every round (fraction 1.0, as in FED-PUB/FedAux). Per round each client runs
:func:`~quintet.fedaux.algorithms.client_round` and the server runs
:func:`~quintet.fedaux.algorithms.server_aggregate`. The metric follows the protocol: the unweighted mean
over clients of local test accuracy after local training, taken at the round with the best mean
validation accuracy.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from quintet.config import save_config
from quintet.fedaux.algorithms import AlgoConfig, build_model, client_round, initial_state, server_aggregate
from quintet.fedaux.data import ClientData, build_clients, synthetic_clients
from quintet.io import atomic_save_json, atomic_torch_save, atomic_write_bytes, atomic_write_text

__all__ = [
    "DataConfig",
    "RunConfig",
    "SimResult",
    "load_client_models",
    "load_data",
    "run",
    "save_client_models",
    "simulate",
    "summarise_rounds",
]

#: folder (inside ``out``) of the per-client personalised models written by :func:`run`
MODELS_DIR = "models"


@dataclass
class DataConfig:
    """Where the graph comes from and how it is cut into clients.

    Attributes:
        dataset: ``cora`` | ``citeseer`` | ``synthetic`` | a path to an ``.npz``/``.pt`` graph.
        root: folder with the Planetoid raw files (``ind.cora.*``); nothing is downloaded.
        partition: ``metis`` (disjoint), ``overlapping`` (FED-PUB) or ``louvain``.
        num_clients: K (for ``overlapping``: 5 × number of communities).
        split_seed: seed of the node split (fixed across runs, as FED-PUB's 1234) and of the
            partitioner where it takes one (``metis=pymetis``, Louvain, the overlapping halves).
        metis: how METIS is called: ``fedpub`` (k-way for every K with METIS's default seed, as
            FED-PUB's partition script calls it) or ``pymetis`` (pymetis's default: recursive
            bisection for K <= 8, seeded by ``split_seed``).
        cache_dir: partition cache (keyed by a fingerprint); empty string disables it.
    """

    dataset: str = "cora"
    root: Path = Path("../shared/data/planetoid")
    partition: Literal["metis", "overlapping", "louvain"] = "metis"
    num_clients: int = 10
    split_seed: int = 1234
    metis: Literal["fedpub", "pymetis"] = "fedpub"
    cache_dir: str = "~/.cache/quintet/fedaux"


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


@dataclass
class SimResult:
    """Per-round metrics and the protocol's headline number.

    Attributes:
        val_acc / test_acc: (T, K) per-round per-client accuracies (after local training).
        train_loss: (T, K).
        best_round: 1-based round with the highest mean validation accuracy.
        test_at_best_val: mean client test accuracy at ``best_round`` (the reported metric, %).
        final_test: mean client test accuracy at the last round (%).
        seconds: wall time.
        weights: the last mixing matrix (if any).
        mix_max: (T,) largest entry of each round's mixing matrix (NaN for methods without one); 1/K
            everywhere means the server's weights are uniform.
        best_states: ``{client_id: state_dict}`` of every client's model at ``best_round`` (after its local
            training, as evaluated there), the personalised models the reported metric belongs to.
    """

    val_acc: np.ndarray
    test_acc: np.ndarray
    train_loss: np.ndarray
    best_round: int
    test_at_best_val: float
    final_test: float
    seconds: float
    weights: np.ndarray | None = None
    mix_max: np.ndarray | None = None
    best_states: dict[int, dict[str, torch.Tensor]] | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "best_round": self.best_round,
            "test_at_best_val": self.test_at_best_val,
            "val_at_best": float(np.nanmean(self.val_acc[self.best_round - 1]) * 100),
            "final_test": self.final_test,
            "rounds": int(self.val_acc.shape[0]),
            "clients": int(self.val_acc.shape[1]),
            "seconds": self.seconds,
            "mix_weight_max": float(self.weights.max()) if self.weights is not None else None,
            "mix_weight_min": float(self.weights.min()) if self.weights is not None else None,
            "mix_weight_max_any_round": (
                float(np.nanmax(self.mix_max))
                if self.mix_max is not None and np.isfinite(self.mix_max).any()
                else None
            ),
        }


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Temporarily set ``torch.set_num_threads(n)`` (``n <= 0`` leaves it unchanged)."""
    old = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def summarise_rounds(val_acc: np.ndarray, test_acc: np.ndarray) -> tuple[int, float, float]:
    """(best round 1-based, mean test % at the best mean-val round, final mean test %).

    Ties in validation accuracy go to the earliest round.
    """
    mv = np.nanmean(val_acc, axis=1)
    mt = np.nanmean(test_acc, axis=1)
    best = int(np.nanargmax(mv))
    return best + 1, float(mt[best] * 100), float(mt[-1] * 100)


def load_data(cfg: DataConfig) -> tuple[list[ClientData], dict[str, int]]:
    """Build (or load from the cache) the clients of ``cfg``."""
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


def simulate(
    algo: AlgoConfig,
    clients: list[ClientData],
    num_classes: int,
    rounds: int,
    seed: int,
    progress: bool = True,
    desc: str | None = None,
    on_round: Callable[[int, dict[int, dict[str, torch.Tensor]]], None] | None = None,
) -> SimResult:
    """Run ``rounds`` rounds of ``algo`` over ``clients`` in this process (deterministic under ``seed``).

    ``on_round(rnd, local_states)``, if given, is called after every round's local training with each
    client's local state (``model/...`` parameters and ``opt/...`` Adam moments); it must not modify them.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    k = len(clients)
    init = initial_state(algo, clients[0].x.shape[1], num_classes, seed)
    downloads: dict[int, dict[str, torch.Tensor]] = {c.client_id: init for c in clients}
    local: dict[int, dict[str, torch.Tensor] | None] = {c.client_id: None for c in clients}
    sizes = {c.client_id: float(c.train_mask.sum()) for c in clients}
    val = np.zeros((rounds, k))
    test = np.zeros((rounds, k))
    loss = np.zeros((rounds, k))
    mix_max = np.full(rounds, np.nan)
    weights = None
    best_val, best_states = -math.inf, None
    bar = tqdm(range(1, rounds + 1), desc=desc or algo.name, disable=not progress, leave=False)
    for rnd in bar:
        uploads = {}
        for i, c in enumerate(clients):
            res = client_round(
                algo, c, num_classes, downloads.get(c.client_id, {}), local[c.client_id], rnd, seed
            )
            local[c.client_id] = res.local_state
            uploads[c.client_id] = res.upload
            val[rnd - 1, i] = res.metrics["val_acc"]
            test[rnd - 1, i] = res.metrics["test_acc"]
            loss[rnd - 1, i] = res.metrics["train_loss"]
        if on_round is not None:
            on_round(rnd, {cid: st for cid, st in local.items() if st is not None})
        mean_val = float(np.nanmean(val[rnd - 1])) if np.isfinite(val[rnd - 1]).any() else -math.inf
        if best_states is None or mean_val > best_val:  # ties keep the earliest round, as summarise_rounds
            best_val = mean_val
            best_states = {
                cid: {k[len("model/") :]: v for k, v in st.items() if k.startswith("model/")}
                for cid, st in local.items()
                if st is not None
            }
        new, diag = server_aggregate(algo, uploads, sizes)
        downloads = new
        if "weights" in diag:
            weights = diag["weights"].numpy()
            mix_max[rnd - 1] = float(weights.max())
        bar.set_postfix(
            val=f"{np.nanmean(val[rnd - 1]) * 100:.1f}", test=f"{np.nanmean(test[rnd - 1]) * 100:.1f}"
        )
    best, at_best, final = summarise_rounds(val, test)
    return SimResult(
        val, test, loss, best, at_best, final, time.perf_counter() - t0, weights, mix_max, best_states
    )


def write_outputs(result: SimResult, out_dir: Path, title: str) -> None:
    """metrics.csv (per round means), clients.csv (long format), curves.png and summary.json, atomically."""
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


def save_client_models(
    result: SimResult, algo: AlgoConfig, in_dim: int, num_classes: int, out_dir: Path
) -> list[Path]:
    """Write each client's model at the best round to ``out_dir/models/client_<id>.pt`` (atomically), and
    remove client files an earlier run left there, so that the folder holds exactly this run's models.

    Each file is a dict of plain tensors and numbers (loadable with ``weights_only=True``): ``state_dict``,
    ``client_id``, ``round``, ``in_dim``, ``num_classes`` and the method's ``algo`` config.
    """
    if not result.best_states:
        return []
    folder = Path(out_dir) / MODELS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for cid, state in sorted(result.best_states.items()):
        path = folder / f"client_{cid}.pt"
        atomic_torch_save(
            path,
            {
                "state_dict": state,
                "client_id": int(cid),
                "round": int(result.best_round),
                "in_dim": int(in_dim),
                "num_classes": int(num_classes),
                "algo": asdict(algo),
            },
        )
        paths.append(path)
    for stale in set(folder.glob("client_*.pt")) - set(paths):  # an earlier run into this out_dir
        stale.unlink()
    return paths


def load_client_models(out_dir: Path | str) -> dict[int, torch.nn.Module]:
    """The personalised models that :func:`run` saved, rebuilt and in eval mode: ``{client_id: model}``.

    Call ``model(client.features(), client.gcn_adjacency())`` for the logits of a client's nodes.

    Raises:
        FileNotFoundError: no ``models/client_*.pt`` in ``out_dir``.
        ValueError: a file that is not a model written by :func:`save_client_models`.
    """
    files = sorted((Path(out_dir) / MODELS_DIR).glob("client_*.pt"))
    if not files:
        raise FileNotFoundError(f"no {MODELS_DIR}/client_*.pt in {out_dir} (written by `quintet fedaux run`)")
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
    with torch_threads(cfg.threads):
        res = simulate(cfg.algo, clients, info["num_classes"], cfg.rounds, cfg.seed, cfg.progress)
    write_outputs(res, out, f"{cfg.algo.name} on {cfg.data.dataset} ({len(clients)} clients)")
    save_client_models(res, cfg.algo, clients[0].x.shape[1], info["num_classes"], out)
    if not math.isfinite(res.test_at_best_val):
        raise RuntimeError("the run produced non-finite accuracies")
    return res
