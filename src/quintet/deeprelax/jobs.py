"""DeepRelax jobs: train, evaluate, predict (each a typed function of a dataclass config).

- :func:`train` fits the model with the shared trainer on relaxation pairs (custom/2DMD layout, an
  ASE db of pairs, or EMT pairs generated on the fly) and writes ``best.pt``.
- :func:`evaluate_model` / :func:`evaluate` measure coordinate, cell, volume and distance errors next to
  the "dummy" baseline (the unrelaxed input) and the calibration of the uncertainty.
- :func:`predict` relaxes a file, folder or glob of structures in batches, writes relaxed CIFs and a
  CSV, resumes a half-done folder and can finish each prediction with an ASE calculator.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from quintet.atomistic import keys as K
from quintet.atomistic.batch import collate, plan_batches
from quintet.atomistic.datasets import training_domain
from quintet.atomistic.nn.compile import CompiledModel
from quintet.atomistic.pipeline import Item, finish_steps, finisher_for, steps_summary
from quintet.config import save_config
from quintet.deeprelax.data import (
    DeepRelaxTransform,
    canonical_record,
    check_record,
    from_canonical,
    pairs_to_records,
)
from quintet.deeprelax.graph import DISPLACE
from quintet.deeprelax.inference import SolveConfig, check_ensemble, relax_ensemble, uncertainty_scale
from quintet.deeprelax.maths import (
    LAPLACE_LEVEL,
    calibration_factor,
    edge_lengths,
    per_graph_mean,
    spearman,
    volume,
)
from quintet.deeprelax.model import DeepRelax, ModelConfig, ensure_graph
from quintet.deeprelax.task import DeepRelaxTask, LossConfig, targets
from quintet.io import atomic_save_json, atomic_write_csv, file_sha256
from quintet.models import resolve_model
from quintet.train import TrainConfig, fit, save_model

__all__ = [
    "CalibrateJob",
    "DataConfig",
    "EvalJob",
    "PredictJob",
    "TrainJob",
    "calibrate",
    "compiled",
    "evaluate",
    "evaluate_model",
    "from_model_file",
    "load_dataset",
    "load_deeprelax",
    "load_ensemble",
    "predict",
    "read_db_pairs",
    "relax",
    "relax_items",
    "train",
]



@dataclass
class DataConfig:
    """Where relaxation pairs come from.

    Attributes:
        root: data folder (``custom``/``2dmd`` layouts) or ASE db file (``db``); unused for ``emt``.
        layout: ``"custom"`` (``CIF/<id>_{un}relaxed.cif`` + csv), ``"2dmd"`` (host folders),
            or ``"db"`` (an ASE db whose rows carry ``pair_id`` and ``relaxed`` = 0/1 key-values).
            Make more pairs with ``quintet data relax-pairs`` (any ASE calculator; EMT takes milliseconds).
        seed: seed of new splits and generated data.
        fractions: train/val/test fractions of new splits.
        cache_dir: keep parsed pairs here between runs (optional).
        extra_train: more folders of pairs (same layout as ``root``; for instance made with
            ``quintet data relax-pairs``) whose pairs are all added to the training split; validation
            and test stay those of ``root``. Pairs whose ``meta.csv`` says ``converged=0`` (the oracle
            stopped at its step limit) are left out.
        exclude_eval_formulas: leave out extra pairs whose composition equals that of a validation or
            test pair of ``root`` (the same composition in the same prototype is a near-duplicate;
            custom layout only).
    """

    root: str = ""
    layout: Literal["custom", "2dmd", "db"] = "custom"
    seed: int = 0
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    cache_dir: str | None = None
    extra_train: list[str] = field(default_factory=list)
    exclude_eval_formulas: bool = True


@dataclass
class TrainJob:
    """``quintet deeprelax train``: model, loss and trainer settings plus the data and the run folder."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            lr=5e-4,
            batch_size=16,
            grad_clip=150.0,
            monitor="val/disp_mae",
            min_lr=1e-6,
            early_stop_patience=50,
        )
    )
    out: str = "runs/deeprelax"
    init_from: str | None = None


@dataclass
class EvalJob:
    """``quintet deeprelax eval``: a trained model file (or an ensemble: ``model`` + ``ensemble``)
    evaluated on a data split.

    ``finish_with`` (an oracle) adds the "predict, then finish" metric on the first ``finish_limit``
    structures: the oracle's steps from the prediction next to its steps from the input, which come from
    the data's ``meta.csv`` when it records them (``recorded_steps``) instead of relaxing every input again.
    """

    model: str = "runs/deeprelax/best.pt"
    ensemble: list[str] = field(default_factory=list)
    data: DataConfig = field(default_factory=DataConfig)
    split: Literal["train", "val", "test", "all"] = "test"
    batch_size: int = 64
    max_atoms: int | None = 2048
    solve: SolveConfig = field(default_factory=SolveConfig)
    out: str = "runs/deeprelax/eval"
    compile: bool = False
    finish_with: str = "none"
    finish_limit: int = 20
    fmax: float = 0.05
    finish_steps: int = 500
    finish_cell: bool = True
    finish_filter: Literal["frechet", "unitcell"] = "frechet"
    finish_optimizer: Literal["fire", "bfgs"] = "fire"
    recorded_steps: bool = True


@dataclass
class PredictJob:
    """``quintet deeprelax predict``: relax every structure of ``inputs`` with a trained model.

    Attributes:
        model: model file (``best.pt``) or pretrained name; default: the shipped DeepRelax model
            (``quintet models`` lists them).
        ensemble: more model files (same graph settings, e.g. trained with other ``train.seed``): the
            prediction becomes the ensemble's (:func:`~quintet.deeprelax.inference.relax_ensemble`) and the
            CSV gains ``spread_A``, the members' disagreement.
        inputs: files, folders (every CIF/POSCAR/extxyz inside) or glob patterns.
        out: output folder (relaxed CIFs + ``predictions.csv``); never an input's folder.
        batch_size: most structures per forward pass + solve.
        max_atoms: most atoms per batch (small cells are packed many to a batch, large ones few).
        solve: coordinate-solve settings.
        finish_with: relax each prediction further with ``emt``, ``chgnet`` or ``sevenn`` (``none``: don't).
        fmax: force threshold of the finishing relaxation, eV/Å.
        finish_steps: most optimizer steps of the finishing relaxation.
        finish_cell: also relax the cell while finishing (periodic directions only).
        finish_filter: cell filter of the finishing relaxation (``unitcell`` is cheaper for EMT).
        finish_optimizer: ``fire`` (ASE FIRE) or ``bfgs`` (ASE BFGS, quasi-Newton like the ionic
            relaxations of DFT codes; far fewer steps from a nearly relaxed start).
        resume: skip inputs already listed in ``predictions.csv`` with their output file present. The folder's
            ``predict_run.json`` must show the same model files (SHA-256) and output settings, else a
            ``ValueError``: resuming would mix predictions of two models.
        output_format: ``cif`` (``<id>_relaxed.cif``) or ``extxyz`` (``<id>_relaxed.extxyz``, which also
            carries the per-atom uncertainty as the array ``uncertainty_A``, and ``spread_A`` for an ensemble).
        compile: run the networks through ``torch.compile`` (:class:`~quintet.atomistic.nn.CompiledModel`):
            a one-off compile on the first batch (tens of seconds), then a faster forward pass; for large jobs.
        shard: ``K/N``: predict only shard K of N of the input files (a stable hash of each file name), for
            the tasks of a cluster job array writing into one ``out``; each writes
            ``predictions.shard<K>of<N>.csv`` and ``quintet deeprelax merge -o OUT`` joins them.
        strict: refuse (before predicting anything) inputs with elements the model was not trained on;
            without it they are predicted and flagged ``in_domain=False`` in ``predictions.csv``.
        min_distance: inputs with two atoms closer than this (Å) are refused.
    """

    model: str | None = None
    ensemble: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    out: str = "deeprelax_out"
    batch_size: int = 64
    max_atoms: int | None = 2048
    solve: SolveConfig = field(default_factory=SolveConfig)
    finish_with: str = "none"
    fmax: float = 0.05
    finish_steps: int = 500
    finish_cell: bool = True
    finish_filter: Literal["frechet", "unitcell"] = "frechet"
    finish_optimizer: Literal["fire", "bfgs"] = "fire"
    resume: bool = True
    output_format: Literal["cif", "poscar", "extxyz"] = "cif"
    compile: bool = False
    shard: str | None = None
    strict: bool = False
    min_distance: float = 0.5


# --------------------------------------------------------------------------------------------- data


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, records: list[dict[str, Tensor]], transform: Callable[[dict], dict]) -> None:
        self.records = records
        self.transform = transform
        self.ids = [str(int(r[K.STRUCTURE_ID])) for r in records]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, k: int) -> dict[str, Tensor]:
        return self.transform(self.records[k])


def _split_indices(n: int, fractions: Sequence[float], seed: int) -> dict[str, list[int]]:
    perm = np.random.default_rng(seed).permutation(n)
    n_tr = round(fractions[0] * n)
    n_va = round(fractions[1] * n)
    return {
        "train": sorted(perm[:n_tr].tolist()),
        "val": sorted(perm[n_tr : n_tr + n_va].tolist()),
        "test": sorted(perm[n_tr + n_va :].tolist()),
        "all": list(range(n)),
    }


def read_db_pairs(path: str | Path) -> list[tuple[Any, Any]]:
    """Pairs from an ASE db: rows with key-values ``pair_id`` (any) and ``relaxed`` (0 or 1).

    Raises:
        FileNotFoundError: no such file. ValueError: a pair lacks one of its two rows.
    """
    import ase.db

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ASE db")
    found: dict[str, dict[int, Any]] = {}
    with ase.db.connect(str(path)) as db:
        for row in db.select():
            kv = row.key_value_pairs
            if "pair_id" not in kv or "relaxed" not in kv:
                raise ValueError(f"{path}: row {row.id} lacks the 'pair_id' and 'relaxed' key-values")
            found.setdefault(str(kv["pair_id"]), {})[int(kv["relaxed"])] = row.toatoms()
    pairs = []
    for pid, d in sorted(found.items()):
        if 0 not in d or 1 not in d:
            raise ValueError(f"{path}: pair {pid!r} needs one row with relaxed=0 and one with relaxed=1")
        pairs.append((d[0], d[1]))
    if not pairs:
        raise ValueError(f"{path}: no pairs")
    return pairs


_DB_CACHE: dict[str, list[dict[str, Tensor]]] = {}


def load_dataset(data: DataConfig, split: str, model_cfg: ModelConfig) -> torch.utils.data.Dataset:
    """The dataset of ``split`` with the DeepRelax graph transform applied."""
    tf = DeepRelaxTransform(model_cfg.cutoff, model_cfg.max_neighbors, model_cfg.max_displace, model_cfg.canonical_cell)
    if data.extra_train and data.layout not in ("custom", "2dmd"):
        raise ValueError(f"extra_train needs the custom or 2dmd layout, not {data.layout!r}")
    if data.layout in ("custom", "2dmd"):
        from quintet.atomistic.datasets import RelaxPairDataset

        def pairs(root: str, split: str | None, ids: Sequence[str] | None = None) -> RelaxPairDataset:
            return RelaxPairDataset(
                root,
                layout=data.layout,  # type: ignore[arg-type]
                split=split,
                transform=tf,
                fractions=data.fractions,
                seed=data.seed,
                defects=False,
                cache_dir=data.cache_dir,
                dtype=torch.float32,
                ids=ids,
            )

        main = pairs(data.root, None if split == "all" else split)
        if split != "train" or not data.extra_train:
            return main
        held: set[tuple] = set()
        if data.exclude_eval_formulas and data.layout == "custom":
            for name in ("val", "test"):
                ev = pairs(data.root, name)
                held |= {_composition(ev, i) for i in ev.ids}
        parts: list[torch.utils.data.Dataset] = [main]
        for root in data.extra_train:
            extra = pairs(root, None)
            done = [i for i in extra.ids if extra.meta.get(i, {}).get("converged", "1") != "0"]
            keep = [i for i in done if _composition(extra, i) not in held]
            if len(keep) < len(extra.ids):
                print(
                    f"{root}: {len(extra.ids) - len(keep)} of {len(extra.ids)} pairs left out "
                    f"({len(extra.ids) - len(done)} not converged by the oracle, {len(done) - len(keep)} "
                    "with the composition of a validation/test pair)"
                )
            if keep:
                parts.append(pairs(root, None, keep))
        return torch.utils.data.ConcatDataset(parts)
    if data.layout != "db":
        raise ValueError(f"unknown data layout {data.layout!r}; use custom, 2dmd or db")
    key = str(Path(data.root).resolve())
    if key not in _DB_CACHE:
        _DB_CACHE[key] = pairs_to_records(read_db_pairs(data.root))
    records = _DB_CACHE[key]
    idx = _split_indices(len(records), data.fractions, data.seed)[split]
    if not idx:
        raise ValueError(f"split {split!r} of {data.layout} data is empty ({len(records)} pairs)")
    return _ListDataset([records[i] for i in idx], tf)


def _composition(ds: Any, pid: str) -> tuple[tuple[str, int], ...]:
    """Element counts of pair ``pid`` of a :class:`RelaxPairDataset` (``meta.csv`` formula, else the CIF)."""
    from ase.formula import Formula

    formula = ds.meta.get(pid, {}).get("formula", "")
    if not formula:
        from quintet.atomistic.structures import read_structure

        formula = read_structure(Path(ds.root) / "CIF" / f"{pid}_unrelaxed.cif").get_chemical_formula()
    return tuple(sorted(Formula(formula).count().items()))


# -------------------------------------------------------------------------------------------- model


def from_model_file(d: dict[str, Any], path: str | Path) -> DeepRelax:
    """Rebuild a :class:`DeepRelax` (eval mode) from a loaded model file (:func:`quintet.load_model`)."""
    from quintet.models import build

    model = build(DeepRelax, ModelConfig, d, path)
    scale = d["extra"].get("uncertainty_scale", 1.0)
    if not isinstance(scale, int | float) or not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"{path}: uncertainty_scale must be a positive number, got {scale!r}; recalibrate the model")
    model.uncertainty_scale = float(scale)
    return model


def load_deeprelax(path: str | Path) -> tuple[DeepRelax, dict[str, Any]]:
    """Rebuild a :class:`DeepRelax` from a model file or pretrained name; returns ``(model, file dict)``.

    Raises:
        FileNotFoundError: no such file. ValueError: not a DeepRelax model file, or a corrupted one.
    """
    from quintet.models import load_model

    return load_model(path, system="deeprelax")


def load_ensemble(paths: Sequence[str | Path]) -> list[DeepRelax]:
    """Load model files as ensemble members (:func:`load_deeprelax` each).

    Raises:
        ValueError: no path, or members that build different edges (cutoff, neighbour counts).
    """
    models = [load_deeprelax(p)[0] for p in paths]
    check_ensemble(models)
    return models


def compiled(models: Sequence[DeepRelax]) -> list[CompiledModel]:
    """The members wrapped for ``torch.compile`` (eager again, with a warning, if compiling fails)."""
    return [CompiledModel(m) for m in models]


def train(job: TrainJob) -> Path:
    """Train DeepRelax; returns the path of the best model file (``<out>/best.pt``)."""
    out = Path(job.out)
    train_ds = load_dataset(job.data, "train", job.model)  # bad data fails before anything is written
    val_ds = load_dataset(job.data, "val", job.model) if job.data.fractions[1] > 0 else None
    out.mkdir(parents=True, exist_ok=True)
    save_config(job, out / "config.yaml")
    torch.manual_seed(job.train.seed)  # initial weights follow train.seed too (ensemble members differ)
    model = DeepRelax(job.model)
    if job.init_from:
        init, _ = load_deeprelax(job.init_from)
        if asdict(init.cfg) != asdict(job.model):
            raise ValueError(
                f"{job.init_from}: its architecture {asdict(init.cfg)} differs from model={asdict(job.model)}"
            )
        model.load_state_dict(init.state_dict())
    task = DeepRelaxTask(model, job.loss)
    extra = {"domain": training_domain(train_ds)}
    res = fit(task, train_ds, val_ds, job.train, out, collate_fn=collate, extra=extra)
    if val_ds is not None and len(val_ds):  # report calibrated bands (the solve is unchanged)
        calibrate_file(res.best_path, val_ds, res.best_path)
    return res.best_path


# --------------------------------------------------------------------------------------- evaluation


def evaluate_model(
    model: DeepRelax | CompiledModel | Sequence[DeepRelax | CompiledModel],
    dataset: Any,
    batch_size: int = 64,
    solve: SolveConfig | None = None,
    progress: bool = True,
    max_atoms: int | None = 2048,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Errors of the one-shot relaxation next to the dummy baseline (the unrelaxed input).

    Structures are batched in order, at most ``batch_size`` and ``max_atoms`` atoms per batch
    (:func:`quintet.atomistic.batch.plan_batches`). ``model`` may be a list: a deep ensemble
    (:func:`~quintet.deeprelax.inference.relax_ensemble`); members may be :func:`compiled`.

    Returns:
        ``(summary, rows)``: the summary has ``coord_mae_A``, ``dummy_coord_mae_A``, ``cell_mae_A``,
        ``dummy_cell_mae_A``, ``volume_mae_A3``, ``dummy_volume_mae_A3``, ``distance_mae_A``,
        ``dummy_distance_mae_A``, their ratios, ``guess_coord_mae_A`` (the network's first guess, before
        the solve; ``residual_base="displaced"``) and its ratio, ``time_per_structure_s`` (graph + forward +
        solve, batched: the edges are rebuilt inside the timing, as ``predict`` builds them),
        ``uncertainty_spearman`` (per structure: mean σ vs coordinate MAE), ``shift_spearman`` (the mean
        distance the prediction moves the atoms vs coordinate MAE: a σ-free error proxy), ``distance_spearman``
        (per edge: σ vs |error|), ``spread_spearman`` (ensembles: members' spread vs coordinate MAE)
        and ``coverage`` (fraction of relaxed distances inside mu ± σ, σ with the file's calibration factor
        ``uncertainty_scale``; ``coverage_uncalibrated`` without it); one row per structure with its
        errors, uncertainty, spread and residuals.
    """
    from tqdm.auto import tqdm

    solve = solve or SolveConfig()
    models = list(model) if isinstance(model, Sequence) else [model]
    for m in models:
        m.eval()
    rows: list[dict[str, Any]] = []
    edges: list[tuple[np.ndarray, np.ndarray]] = []
    t_total = 0.0
    records = [dataset[k] for k in range(len(dataset))]  # each record (and its graph) built once
    sizes = [int(r[K.POSITIONS].shape[0]) for r in records]
    for span in tqdm(plan_batches(sizes, batch_size, max_atoms), desc="evaluate", disable=not progress):
        batch_rows, batch_edges, seconds = _evaluate_batch(models, records[span.start : span.stop], span.start, solve)
        rows += batch_rows
        edges.append(batch_edges)
        t_total += seconds
    return _evaluation_summary(rows, edges, t_total, models), rows


def _evaluate_batch(
    models: Sequence[Any], recs: Sequence[dict[str, Tensor]], start: int, solve: SolveConfig
) -> tuple[list[dict[str, Any]], tuple[np.ndarray, np.ndarray], float]:
    """One batch of :func:`evaluate_model`: per-structure rows, (σ, |error|) of the relaxed distances, and the
    seconds of graph + forward + solve."""
    batch = collate(recs)
    bare = {k: v for k, v in batch.items() if k not in (K.EDGE_INDEX, K.EDGE_SHIFT, DISPLACE)}
    t0 = time.perf_counter()
    res = relax_ensemble(models, ensure_graph(bare, models[0].cfg), solve)  # the same edges, rebuilt
    seconds = time.perf_counter() - t0
    b, nb = batch[K.BATCH], len(recs)
    rel, unrel = batch[K.RELAXED_POSITIONS], batch[K.POSITIONS]
    cell_r, cell_u = batch[K.RELAXED_CELL].reshape(-1, 3, 3), batch[K.CELL].reshape(-1, 3, 3)
    ei, sh = res[K.EDGE_INDEX], res[K.EDGE_SHIFT]
    _, y_r = targets(batch, ei, sh, res["deeprelax_displace"])
    eg = b[ei[0]]
    cols = {
        "coord_mae_A": per_graph_mean((res["positions"] - rel).abs().mean(-1), b, nb),
        "dummy_coord_mae_A": per_graph_mean((unrel - rel).abs().mean(-1), b, nb),
        "guess_coord_mae_A": per_graph_mean((res["init_positions"] - rel).abs().mean(-1), b, nb),
        "shift_A": per_graph_mean((res["positions"] - unrel).norm(dim=-1), b, nb),  # how far the prediction moves
        "cell_mae_A": (res["cell"] - cell_r).abs().mean((-1, -2)),
        "dummy_cell_mae_A": (cell_u - cell_r).abs().mean((-1, -2)),
        "volume_err_A3": (volume(res["cell"]) - volume(cell_r)).abs(),
        "dummy_volume_err_A3": (volume(cell_u) - volume(cell_r)).abs(),
        "distance_mae_A": per_graph_mean((edge_lengths(res["positions"], res["cell"], ei, sh, b) - y_r).abs(), eg, nb),
        "dummy_distance_mae_A": per_graph_mean((edge_lengths(unrel, cell_u, ei, sh, b) - y_r).abs(), eg, nb),
        **{f"{k}_A": res[k] for k in ("uncertainty", "cell_uncertainty", "spread")},
        **{f"{k}_A": res[k] for k in ("displace_residual", "relaxed_residual")},
    }
    rows = [
        {
            "structure_id": int(r[K.STRUCTURE_ID]) if K.STRUCTURE_ID in r else start + g,
            "n_atoms": int(r[K.POSITIONS].shape[0]),
            **{k: float(v[g]) for k, v in cols.items()},
        }
        for g, r in enumerate(recs)
    ]
    return rows, (res["sigma_relaxed"].numpy(), (res["mu_relaxed"] - y_r).abs().numpy()), seconds


def _evaluation_summary(
    rows: list[dict[str, Any]], edges: list[tuple[np.ndarray, np.ndarray]], seconds: float, models: Sequence[Any]
) -> dict[str, float]:
    """The means, ratios vs the dummy and uncertainty statistics of :func:`evaluate_model`; ``edges`` holds each
    batch's (σ, |error|) of the relaxed distances, σ with the models' calibration factor."""

    def mean(key: str) -> float:
        return float(np.mean([r[key] for r in rows]))

    def ratio(a: float, b: float) -> float:
        return a / b if b > 0 else float("nan")

    summary: dict[str, float] = {"num_structures": float(len(rows))}
    for key in ("coord_mae_A", "cell_mae_A", "distance_mae_A"):
        summary[key] = mean(key)
        summary["dummy_" + key] = mean("dummy_" + key)
        summary[key.replace("_A", "_ratio_vs_dummy")] = ratio(summary[key], summary["dummy_" + key])
    summary["guess_coord_mae_A"] = mean("guess_coord_mae_A")
    summary["guess_coord_mae_ratio_vs_dummy"] = ratio(summary["guess_coord_mae_A"], summary["dummy_coord_mae_A"])
    summary["volume_mae_A3"] = mean("volume_err_A3")
    summary["dummy_volume_mae_A3"] = mean("dummy_volume_err_A3")
    summary["time_per_structure_s"] = seconds / max(len(rows), 1)
    errors = [r["coord_mae_A"] for r in rows]
    summary["uncertainty_spearman"] = spearman([r["uncertainty_A"] for r in rows], errors)
    summary["shift_spearman"] = spearman([r["shift_A"] for r in rows], errors)
    if len(models) > 1:
        summary["spread_spearman"] = spearman([r["spread_A"] for r in rows], errors)
    sigma, err = (np.concatenate([e[k] for e in edges]) for k in (0, 1))
    scale = uncertainty_scale(models)  # the file's σ factor: the coverage of the network's own σ too
    summary["distance_spearman"] = spearman(sigma, err)
    summary["coverage"] = float(np.mean(err <= sigma)) if len(err) else float("nan")
    summary["coverage_nominal"] = LAPLACE_LEVEL
    # the factor on σ that would make the coverage nominal on these pairs (``calibrate`` stores it)
    summary["calibration_factor"] = calibration_factor(sigma, err)
    summary["uncertainty_scale"] = scale
    summary["coverage_uncalibrated"] = float(np.mean(err <= sigma / scale)) if len(err) else float("nan")
    return summary


def _eval_finish(job: EvalJob, models: Sequence[Any], ds: Any, rows: list[dict[str, Any]], finisher: Any) -> None:
    """The oracle steps from the prediction and from the input of the first ``finish_limit`` structures."""
    from quintet.atomistic.datasets import dataset_ids, dataset_meta
    from quintet.atomistic.structures import to_ase

    ids = dataset_ids(ds) or [str(r["structure_id"]) for r in rows]
    for row, pid in zip(rows, ids, strict=False):
        row["id"] = pid

    def starts() -> Any:
        for k in range(min(job.finish_limit, len(rows))):
            rec = {key: ds[k][key] for key in (K.POSITIONS, K.ATOMIC_NUMBERS, K.CELL, K.PBC)}
            res = relax_ensemble(models, collate([rec]), job.solve)
            yield to_ase({**rec, K.POSITIONS: res["positions"], K.CELL: res["cell"][0]}), to_ase(rec)

    finish_steps(rows, starts(), finisher, dataset_meta(ds) if job.recorded_steps else None)


def evaluate(job: EvalJob) -> dict[str, float]:
    """Evaluate a model file on a split; writes ``metrics.json``, ``per_structure.csv`` and the config."""
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(job, out / "config.yaml")
    models = load_ensemble([job.model, *job.ensemble])
    ds = load_dataset(job.data, job.split, models[0].cfg)
    summary, rows = evaluate_model(
        compiled(models) if job.compile else models, ds, job.batch_size, job.solve, max_atoms=job.max_atoms
    )
    finisher = finisher_for(job)
    if finisher is not None:
        _eval_finish(job, models, ds, rows, finisher)
        summary.update(steps_summary(rows))
    atomic_save_json(out / "metrics.json", summary)
    atomic_write_csv(out / "per_structure.csv", rows)
    return summary


@dataclass
class CalibrateJob:
    """``quintet deeprelax calibrate``: rescale a model's reported σ so that its bands hold their nominal share.

    The factor is fitted on ``split`` (held-out pairs, not the training split) so that a fraction
    1 - 1/e ≈ 63 % of the true relaxed distances falls inside ``mu ± σ`` (the coverage of a Laplace band),
    and written with the weights to ``out`` (``train`` does this on its validation split by itself).
    """

    model: str = "runs/deeprelax/best.pt"
    data: DataConfig = field(default_factory=DataConfig)
    split: Literal["train", "val", "test", "all"] = "val"
    out: str = "runs/deeprelax/calibrated.pt"
    batch_size: int = 64
    max_atoms: int | None = 2048


def calibrate_file(model: str | Path, dataset: Any, out: str | Path, batch_size: int = 64, max_atoms: int | None = 2048) -> dict[str, float]:
    """Fit the σ factor of a model file on ``dataset`` and write the calibrated file to ``out``.

    Returns:
        ``uncertainty_scale`` (the stored factor), ``coverage_before`` (with the file's own factor) and
        ``coverage_nominal``.
    """
    return _calibrate(*load_deeprelax(model), dataset, out, batch_size, max_atoms, source=str(model))


def _calibrate(
    net: DeepRelax, d: dict[str, Any], dataset: Any, out: str | Path, batch_size: int, max_atoms: int | None,
    source: str,
) -> dict[str, float]:  # fmt: skip
    summary, _ = evaluate_model(net, dataset, batch_size, max_atoms=max_atoms)
    scale = net.uncertainty_scale * summary["calibration_factor"]
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"{source}: no finite σ factor on these {len(dataset)} pairs (no edges?); give more pairs")
    extra = {**d["extra"], "uncertainty_scale": scale, "calibration_pairs": len(dataset),
             "calibration_coverage_before": summary["coverage"]}  # fmt: skip
    save_model(out, d["state_dict"], d["config"], extra, d["metrics"])
    return {"uncertainty_scale": scale, "coverage_before": summary["coverage"], "coverage_nominal": LAPLACE_LEVEL}


def calibrate(job: CalibrateJob) -> dict[str, float]:
    """Calibrate ``job.model`` on ``job.split`` of ``job.data``; writes ``job.out`` and ``calibration.json`` beside it."""
    net, d = load_deeprelax(job.model)
    ds = load_dataset(job.data, job.split, net.cfg)
    Path(job.out).parent.mkdir(parents=True, exist_ok=True)
    res = _calibrate(net, d, ds, job.out, job.batch_size, job.max_atoms, source=str(job.model))
    atomic_save_json(Path(job.out).with_name("calibration.json"), {**res, "split": job.split, "model": str(job.model)})
    return res


# ------------------------------------------------------------------------------------------ predict

def _record_from_atoms(atoms: Any, source: str) -> dict[str, Tensor]:
    from quintet.atomistic.structures import from_ase

    rec = from_ase(atoms, dtype=torch.float32)
    rec = {k: rec[k] for k in (K.POSITIONS, K.ATOMIC_NUMBERS, K.CELL, K.PBC)}
    check_record(rec, source)
    return rec


#: the settings that change what ``predict`` writes for a structure (batching and ``compile`` do not)
_OUTPUT_SETTINGS = (
    "solve", "finish_with", "fmax", "finish_steps", "finish_cell", "finish_filter", "finish_optimizer", "output_format",
)  # fmt: skip


def _predict_record(job: PredictJob) -> dict[str, Any]:
    """What produced a prediction folder: the model files' SHA-256 (members in order) and the output settings."""
    settings = {k: asdict(job.solve) if k == "solve" else getattr(job, k) for k in _OUTPUT_SETTINGS}
    return {"models": [file_sha256(resolve_model(p)) for p in [job.model, *job.ensemble]], **settings}


def check_bonded(atoms: Any, cutoff: float, source: str) -> None:
    """DeepRelax predicts from bonds: a structure with no two atoms (periodic images included) within the
    model's ``cutoff`` has no graph (a lone atom in a large cell); refuse it naming ``source``."""
    from ase.neighborlist import neighbor_list

    if len(neighbor_list("i", atoms, cutoff, self_interaction=False)) == 0:
        raise ValueError(
            f"{source}: no two atoms within the model's {cutoff} Å cutoff (isolated atoms in a "
            f"{atoms.cell.volume:.0f} Å^3 cell); DeepRelax needs bonded atoms: give a denser structure"
        )


def relax_items(models: Sequence[Any], items: Sequence[Item], solve: SolveConfig, fmt: str = "cif") -> list[tuple[Any, dict[str, Any]]]:
    """One batch of the predict pipeline: each input's relaxed ``Atoms`` and its table columns
    (structure uncertainty, largest per-atom uncertainty, cell uncertainty, ensemble spread, residuals)."""
    from quintet.atomistic.structures import to_ase

    given = [_record_from_atoms(it.atoms, it.source) for it in items]
    canon = [canonical_record(r, models[0].cfg.canonical_cell) for r in given]  # predicted in the model's basis
    recs = [c[0] for c in canon]
    for it in items:
        check_bonded(it.atoms, max(m.cfg.cutoff for m in models), it.source)
    res = relax_ensemble(models, collate(recs), solve)
    starts = np.concatenate([[0], np.cumsum([len(r[K.POSITIONS]) for r in recs])])
    out = []
    for g, (rec, (_, m, n)) in enumerate(zip(given, canon, strict=True)):
        atoms_slice = slice(int(starts[g]), int(starts[g + 1]))
        pos, cell = from_canonical(res["positions"][atoms_slice], res["cell"][g], m, n)
        new = to_ase({**rec, K.POSITIONS: pos, K.CELL: cell})
        cols: dict[str, Any] = {
            "uncertainty_A": round(float(res["uncertainty"][g]), 6),
            "max_atom_uncertainty_A": round(float(res["atom_uncertainty"][atoms_slice].max()), 6),
        }
        if len(models) > 1:
            cols["spread_A"] = round(float(res["spread"][g]), 6)
        if all(getattr(m, "cell_scale", None) is not None for m in models):
            cols["cell_uncertainty_A"] = round(float(res["cell_uncertainty"][g]), 6)
        cols["displace_residual_A"] = round(float(res["displace_residual"][g]), 6)
        cols["relaxed_residual_A"] = round(float(res["relaxed_residual"][g]), 6)
        if fmt == "extxyz":  # per-atom uncertainty travels with the structure
            new.arrays["uncertainty_A"] = res["atom_uncertainty"][atoms_slice].double().numpy()
            if len(models) > 1:
                new.arrays["spread_A"] = res["atom_spread"][atoms_slice].double().numpy()
        out.append((new, cols))
    return out


def predict(job: PredictJob) -> Path:
    """Relax every input structure; writes ``<out>/<id>.{cif,vasp,extxyz}`` and ``<out>/predictions.csv``
    through the shared pipeline (:mod:`quintet.atomistic.pipeline`).

    Returns:
        The CSV path.

    Raises:
        ValueError: the output folder holds an input, an input is invalid (named in the message), or
            resuming would mix outputs: the folder's predictions came from other model files or output settings
            (recorded in ``predict_run.json``).
    """
    from quintet.atomistic.pipeline import Domain, predict_job
    from quintet.models import choose_model

    job.model = choose_model(job.model, "deeprelax")

    def setup() -> Any:
        loaded = [load_deeprelax(p) for p in [job.model, *job.ensemble]]
        models: Sequence[Any] = [m for m, _ in loaded]
        check_ensemble(models)
        models = compiled(models) if job.compile else models
        domain = Domain.of([d for _, d in loaded], source=str(job.model))
        return (lambda chunk: relax_items(models, chunk, job.solve, job.output_format)), domain

    return predict_job(job, _predict_record, setup, "deeprelax predict")


def relax(
    structures: Any,
    model: str | Path | None = None,
    ensemble: Sequence[str | Path] = (),
    solve: SolveConfig | None = None,
    batch_size: int = 64,
    max_atoms: int | None = 2048,
) -> Any:
    """Relax ASE ``Atoms`` or pymatgen ``Structure``s in one call; returns the same type (one or a list).

    Each result carries its uncertainty: ``uncertainty_A`` (the structure's mean per-atom σ, Å) and the
    other columns of ``predictions.csv`` in ``atoms.info`` (pymatgen: ``Structure.properties``), and the
    per-atom ``uncertainty_A`` as an array (pymatgen: a site property).

    Args:
        structures: one structure or a list; disordered pymatgen structures are refused.
        model: a model file or pretrained name (default: the shipped DeepRelax model).
        ensemble: more model files (a deep ensemble: ``spread_A`` is added).
        solve: coordinate-solve settings.
        batch_size, max_atoms: batch bounds.
    """
    from quintet.atomistic.pipeline import Domain, relax_structures
    from quintet.models import choose_model

    name = choose_model(model, "deeprelax")
    loaded = [load_deeprelax(p) for p in [name, *ensemble]]
    models = [m for m, _ in loaded]
    check_ensemble(models)
    solve = solve or SolveConfig()
    return relax_structures(
        structures, lambda chunk: relax_items(models, chunk, solve, "extxyz"), batch_size, max_atoms,
        domain=Domain.of([d for _, d in loaded], source=str(name)),
    )  # fmt: skip
