"""DefiNet inference: ``predict`` (files → relaxed CIFs + CSV, optional oracle finish) and ``eval``.

``predict`` labels each input against the pristine host, runs the model in batches, writes
``<out>/<id>.cif`` (real atoms only, the input cell) and one row per structure in
``<out>/predictions.csv`` (the shared pipeline of :mod:`quintet.atomistic.pipeline`). Structures already listed there are skipped, so a killed run resumes.
``--finish-with`` relaxes each prediction further with an oracle (FIRE, positions only, fmax
0.05 eV/Å) and records the steps it needed, which measures how close the one-shot guess was.

``eval`` compares the model with the unrelaxed "dummy" baseline on labelled pairs: per-structure
coordinate MAE, local MAE within 3/4/5/6 Å of a defect and, optionally, the oracle steps needed
from the prediction vs from the unrelaxed input.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from quintet.atomistic import keys as K
from quintet.atomistic.datasets import dataset_ids, dataset_meta
from quintet.atomistic.nn.compile import CompiledModel
from quintet.atomistic.pipeline import Finisher, oracle_name, steps_summary
from quintet.config import save_config
from quintet.definet.model import PRED_POSITIONS, DefiNet
from quintet.definet.run import DataConfig
from quintet.io import atomic_save_json, atomic_write_csv, file_sha256
from quintet.models import resolve_model

__all__ = [
    "EvalJob",
    "PredictJob",
    "atoms_from",
    "defect_items",
    "evaluate_model",
    "jitter_spread",
    "predict",
    "predict_batches",
    "record_metrics",
    "relax",
    "summarize",
]



def _neighbors(rec: dict[str, Tensor], model: DefiNet) -> dict[str, Tensor]:
    from quintet.atomistic.neighbors import with_neighbors

    if K.EDGE_INDEX in rec:
        return rec
    return with_neighbors(rec, model.cfg.cutoff, model.cfg.max_neighbors)


@torch.no_grad()
def predict_batches(
    model: DefiNet,
    records: Sequence[dict[str, Tensor]],
    batch_size: int = 8,
    progress: bool = False,
    max_atoms: int | None = None,
) -> tuple[list[np.ndarray], float]:
    """Predicted positions (all nodes, placeholders included) of every record, and the model time.

    Args:
        model: a DefiNet in eval mode.
        records: DefiNet records (unrelaxed positions, labels, cell); edges are built when missing.
        batch_size: most structures per forward pass.
        progress: show a progress bar.
        max_atoms: most nodes per forward pass (``None``: no limit); a larger structure runs alone
            (:func:`quintet.atomistic.batch.plan_batches`).

    Returns:
        ``(positions per record, seconds spent in graph building + forward passes)``.
    """
    from tqdm.auto import tqdm

    from quintet.atomistic.batch import collate, plan_batches

    dtype = next(model.parameters()).dtype
    out: list[np.ndarray] = []
    seconds = 0.0
    spans = plan_batches([int(r[K.POSITIONS].shape[0]) for r in records], batch_size, max_atoms)
    for span in tqdm(spans, desc="DefiNet", unit="batch", disable=not progress):
        t0 = time.perf_counter()
        chunk = [_neighbors(dict(r), model) for r in records[span.start : span.stop]]
        chunk = [{k: (v.to(dtype) if v.is_floating_point() else v) for k, v in r.items()} for r in chunk]
        keep = set.intersection(*(set(r) for r in chunk))
        batch = collate([{k: r[k] for k in keep} for r in chunk])
        pred = model(batch)[PRED_POSITIONS].double().cpu().numpy()
        seconds += time.perf_counter() - t0
        counts = batch[K.NUM_ATOMS].tolist()
        off = 0
        for n in counts:
            out.append(pred[off : off + n])
            off += n
    return out, seconds


def jitter_spread(
    model: DefiNet,
    records: Sequence[dict[str, Tensor]],
    samples: int = 4,
    jitter: float = 0.02,
    max_atoms: int | None = None,
) -> list[np.ndarray]:
    """DefiNet's uncertainty proxy (test-time augmentation): the per-node spread, Å, of the predicted
    displacement when the input positions get ``samples`` Gaussian jitters of ``jitter`` Å.

    Sample ``k`` draws its noise from seed ``k`` for every structure, so a structure's value depends on
    neither its batch nor the run. The spread is ``sqrt(sum over x, y, z of the variance over samples)``.
    On the definet-2d test split it ranks the true error with Spearman 0.52 (docs/definet.md); it does not
    rise for elements the model never saw, which the ``in_domain`` flag reports instead.
    """
    if samples < 2:
        raise ValueError(f"uncertainty_samples={samples}: needs at least 2 jittered passes (0 turns them off)")
    runs = []
    for k in range(samples):
        noisy = [_jittered(rec, k, jitter) for rec in records]
        preds, _ = predict_batches(model, [r for r, _ in noisy], batch_size=len(noisy), max_atoms=max_atoms)
        runs.append([p - n for p, (_, n) in zip(preds, noisy, strict=True)])  # the input's own jitter taken out
    return [np.sqrt(np.stack([r[i] for r in runs]).var(axis=0).sum(axis=-1)) for i in range(len(records))]


def _jittered(rec: dict[str, Tensor], seed: int, jitter: float) -> tuple[dict[str, Tensor], np.ndarray]:
    """``rec`` with its positions moved by seeded Gaussian noise (its graph dropped: rebuilt for the new
    positions), and the noise."""
    pos = rec[K.POSITIONS]
    noise = torch.randn(pos.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * jitter
    out = {k: v for k, v in rec.items() if K.KINDS.get(k) not in ("edge", "index")}
    out[K.POSITIONS] = (pos.double() + noise).to(pos.dtype)
    return out, noise.numpy()


# --------------------------------------------------------------------------------------------
# predict
# --------------------------------------------------------------------------------------------


@dataclass
class PredictJob:
    """``quintet definet predict``.

    Attributes:
        model: the model file (``best.pt`` of a training run) or pretrained name; default: the shipped
            DefiNet model (``quintet models`` lists them).
        inputs: structure files and/or folders (CIF, POSCAR/.vasp, extxyz); in folders, files whose
            name ends in ``_relaxed`` are skipped (2DMD pairs).
        pristine: the pristine supercell file, or
        unit_cell: a pristine unit-cell file repeated ``supercell`` times.
        supercell: repetitions of ``unit_cell`` (e.g. ``[5, 5, 1]``).
        out: output folder (``structures/``, ``predictions.csv``, ``config.yaml``).
        batch_size: structures per forward pass.
        max_atoms: most nodes per forward pass (a larger structure runs alone).
        tol: site-matching tolerance of the defect labelling, Å.
        finish_with: ``none``, an oracle of :data:`quintet.atomistic.pipeline.FINISH_ORACLES` (``emt``,
            ``chgnet``, ``sevenn``...) or ``package.module:Class``: relax each prediction further (positions only)
            into ``finished/<id>.<format>``.
        finish_optimizer: ``fire`` or ``bfgs`` (quasi-Newton, like DFT ionic relaxations).
        fmax: oracle force convergence, eV/Å.
        finish_steps: oracle step limit.
        output_format: ``cif``, ``poscar`` or ``extxyz``; files are ``<id>.<format suffix>``.
        compile: run the network through ``torch.compile`` (:class:`~quintet.atomistic.nn.CompiledModel`):
            a one-off compile on the first batch, then a faster forward pass (about 3× on 2D defect cells).
        resume: skip structures already listed in ``predictions.csv``, when ``predict_run.json`` shows the
            same model, host and output settings (else ``ValueError``: resuming would mix two runs).
        progress: progress bars.
        shard: ``K/N``: predict only shard K of N of the input files (a stable hash of each file name), for
            the tasks of a cluster job array writing into one ``out``; ``quintet definet merge -o OUT`` joins
            their tables.
        strict: refuse (before predicting anything) inputs with elements the model was not trained on;
            without it they are predicted and flagged ``in_domain=False`` in ``predictions.csv``.
        min_distance: inputs with two atoms closer than this (Å) are refused.
        uncertainty_samples: jittered forward passes behind the ``uncertainty_A`` column (the spread of the
            predicted displacement, :func:`jitter_spread`); ``0`` leaves the column out and predicts 5×
            faster.
        uncertainty_jitter: standard deviation of those jitters, Å.
    """

    model: str | None = None
    inputs: list[str] = field(default_factory=list)
    pristine: str | None = None
    unit_cell: str | None = None
    supercell: list[int] | None = None
    out: str = "definet_predictions"
    batch_size: int = 8
    max_atoms: int | None = 4096
    tol: float = 0.3
    finish_with: str = "none"
    finish_optimizer: Literal["fire", "bfgs"] = "fire"
    fmax: float = 0.05
    finish_steps: int = 400
    output_format: Literal["cif", "poscar", "extxyz"] = "cif"
    resume: bool = True
    progress: bool = True
    compile: bool = False
    shard: str | None = None
    strict: bool = False
    min_distance: float = 0.5
    uncertainty_samples: int = 4
    uncertainty_jitter: float = 0.02

    def __post_init__(self) -> None:
        if self.uncertainty_samples == 1 or self.uncertainty_samples < 0:
            raise ValueError(f"uncertainty_samples={self.uncertainty_samples}: use 0 (no uncertainty) or 2 or more")
        if not self.uncertainty_jitter > 0:
            raise ValueError(f"uncertainty_jitter={self.uncertainty_jitter}: must be a positive distance in Å")


def atoms_from(numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> Any:
    """An ``ase.Atoms`` from arrays (positions in Å, cell rows as lattice vectors)."""
    from ase import Atoms

    return Atoms(numbers=numbers, positions=positions, cell=cell, pbc=pbc)


def _predict_record(job: PredictJob) -> dict[str, Any]:
    """What produced a prediction folder: the model's and host files' SHA-256 and the settings that change
    the outputs (batching and progress bars do not)."""
    host = {k: file_sha256(getattr(job, k)) for k in ("pristine", "unit_cell") if getattr(job, k)}
    settings = ("supercell", "tol", "finish_with", "finish_optimizer", "fmax", "finish_steps", "output_format")
    settings += ("uncertainty_samples", "uncertainty_jitter")
    return {"model": file_sha256(resolve_model(job.model)), **host, **{k: getattr(job, k) for k in settings}}


def defect_items(
    model: Any,
    host: Any,
    items: Sequence[Any],
    tol: float,
    max_atoms: int | None = None,
    uncertainty: tuple[int, float] = (4, 0.02),
) -> list[tuple[Any, dict[str, Any]]]:
    """One batch of the predict pipeline: each defect structure's one-shot relaxed ``Atoms`` (real atoms,
    input cell, per-atom ``uncertainty_A``) and its table columns. Records come from
    :func:`quintet.atomistic.datasets.pair_record`, the function training uses, so the model sees the same
    nodes at train and predict time. ``uncertainty``: ``(samples, jitter Å)`` of :func:`jitter_spread`
    (``samples=0``: no uncertainty, one forward pass)."""
    from quintet.atomistic.datasets import pair_record

    recs = [pair_record(it.atoms, None, host, tol, dtype=torch.float32, source=it.source) for it in items]
    preds, _ = predict_batches(model, recs, batch_size=len(recs), max_atoms=max_atoms)
    spreads = jitter_spread(model, recs, *uncertainty, max_atoms) if uncertainty[0] else [None] * len(recs)
    out = []
    for it, rec, pred, spread in zip(items, recs, preds, spreads, strict=True):
        atoms = it.atoms
        real = pred[: len(atoms)]
        disp = np.linalg.norm(real - atoms.positions, axis=1)
        cols = {
            "n_substitutions": int((rec[K.DEFECT] == 1).sum()),
            "n_vacancies": int((rec[K.DEFECT] == 2).sum()),
            "max_displacement_A": round(float(disp.max()), 5),
            "mean_displacement_A": round(float(disp.mean()), 5),
        }
        relaxed = atoms_from(atoms.numbers, real, np.asarray(atoms.cell), atoms.pbc)
        if spread is not None:
            cols["uncertainty_A"] = round(float(spread[: len(atoms)].mean()), 6)
            relaxed.arrays["uncertainty_A"] = spread[: len(atoms)]
        out.append((relaxed, cols))
    return out


def predict(job: PredictJob) -> Path:
    """Predict relaxed structures for every input; writes ``<out>/<id>.<format>`` and ``predictions.csv``
    through the shared pipeline (:mod:`quintet.atomistic.pipeline`); returns the CSV path.

    Raises:
        FileNotFoundError: missing model, host or input files.
        ValueError: an input that cannot be labelled against the host (the message names the file
            and atoms), a bad ``finish_with``.
    """
    from quintet.atomistic.defects import load_host
    from quintet.atomistic.pipeline import Domain, predict_job
    from quintet.definet.run import load_definet
    from quintet.models import choose_model

    job.model = choose_model(job.model, "definet")

    def setup() -> Any:
        model, file = load_definet(job.model)
        model = CompiledModel(model) if job.compile else model
        host = load_host(job.pristine, job.unit_cell, job.supercell)
        unc = (job.uncertainty_samples, job.uncertainty_jitter)
        predict = lambda chunk: defect_items(model, host, chunk, job.tol, job.max_atoms, unc)
        return predict, Domain.of([file], source=str(job.model))

    return predict_job(job, _predict_record, setup, "definet predict")


def relax(
    structures: Any,
    pristine: Any,
    model: str | Path | None = None,
    tol: float = 0.3,
    batch_size: int = 8,
    max_atoms: int | None = 4096,
    uncertainty_samples: int = 4,
) -> Any:
    """One-shot relaxed defect structures in one call: ASE ``Atoms`` or pymatgen ``Structure``s in (one or a
    list), the same type out, each with its columns (``n_vacancies``, ``max_displacement_A``,
    ``uncertainty_A``...) in ``atoms.info`` (pymatgen: ``Structure.properties``) and the per-atom
    ``uncertainty_A`` in ``atoms.arrays`` (pymatgen: site properties).

    Args:
        structures: defect supercells on the pristine lattice (vacancies, substitutions).
        pristine: the pristine supercell (``Atoms``/``Structure``) or its file.
        model: a model file or pretrained name (default: the shipped DefiNet model).
        tol: site-matching tolerance of the defect labelling, Å.
        uncertainty_samples: jittered passes behind ``uncertainty_A`` (:func:`jitter_spread`; 0: none).
    """
    from quintet.atomistic.pipeline import Domain, relax_structures
    from quintet.atomistic.structures import as_atoms, read_structure
    from quintet.definet.run import load_definet
    from quintet.models import choose_model

    name = choose_model(model, "definet")
    net, file = load_definet(name)
    host = read_structure(pristine) if isinstance(pristine, str | Path) else as_atoms(pristine, "pristine")[0]
    return relax_structures(
        structures, lambda chunk: defect_items(net, host, chunk, tol, max_atoms, (uncertainty_samples, 0.02)),
        batch_size, max_atoms,
        domain=Domain.of([file], source=str(name)),
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# eval
# --------------------------------------------------------------------------------------------


@dataclass
class EvalJob:
    """``quintet definet eval``: model vs the unrelaxed (dummy) input on labelled pairs.

    Attributes:
        model: the model file.
        data: the pairs (a :class:`~quintet.definet.run.DataConfig`).
        split: ``train``/``val``/``test`` or ``all``.
        radii: local-MAE radii around defects, Å.
        finish_with: oracle for the step counts (``none`` skips them).
        finish_limit: at most this many structures get oracle relaxations (they cost seconds each).
        finish_optimizer: ``fire`` or ``bfgs``.
        fmax: oracle force convergence, eV/Å.
        finish_steps: oracle step limit.
        recorded_steps: take the unrelaxed input's oracle steps from the data's ``meta.csv`` (its ``steps``
            column, the relaxation that made the label) instead of relaxing it again; used only when the
            file's ``oracle`` column, if any, names ``finish_with``.
        batch_size: structures per forward pass.
        max_atoms: most nodes per forward pass (a larger structure runs alone).
        out: where ``eval.json`` and ``per_structure.csv`` go.
        uncertainty_samples, uncertainty_jitter: the ``uncertainty_A`` proxy (:func:`jitter_spread`) per
            structure and its Spearman rank correlation with the true coordinate MAE (0: skipped).
    """

    model: str = "runs/definet/best.pt"
    data: DataConfig = field(default_factory=DataConfig)
    split: Literal["train", "val", "test", "all"] = "test"
    radii: list[float] = field(default_factory=lambda: [3.0, 4.0, 5.0, 6.0])
    finish_with: str = "none"
    finish_limit: int = 20
    finish_optimizer: Literal["fire", "bfgs"] = "fire"
    fmax: float = 0.05
    finish_steps: int = 400
    recorded_steps: bool = True
    batch_size: int = 8
    max_atoms: int | None = 4096
    out: str = "definet_eval"
    compile: bool = False
    uncertainty_samples: int = 4
    uncertainty_jitter: float = 0.02


def record_metrics(rec: dict[str, Tensor], pred: np.ndarray, radii: Sequence[float]) -> dict[str, float]:
    """Coordinate MAE and local MAE (within each radius of a defect) of ``pred`` and of the dummy.

    Args:
        rec: a DefiNet record with ``RELAXED_POSITIONS`` and ``DEFECT``.
        pred: (N, 3) predicted positions of all nodes (placeholders are ignored).
        radii: radii in Å.
    """
    from quintet.definet.metrics import defect_distance, real_atom_mask

    defect = rec[K.DEFECT]
    mask = real_atom_mask(defect).numpy()
    pos = rec[K.POSITIONS].double()
    target = rec[K.RELAXED_POSITIONS].double().numpy()
    start = pos.numpy()
    dist = defect_distance(
        pos,
        rec[K.CELL].double().unsqueeze(0),
        rec[K.PBC].reshape(1, 3),
        defect,
        torch.zeros(len(defect), dtype=torch.long),
    ).numpy()
    err = np.abs(pred - target).mean(axis=1)
    err0 = np.abs(start - target).mean(axis=1)
    row = {"coord_mae": float(err[mask].mean()), "dummy_coord_mae": float(err0[mask].mean())}
    for r in radii:
        sel = mask & (dist <= r)
        row[f"local_mae_{r:g}"] = float(err[sel].mean()) if sel.any() else math.nan
        row[f"dummy_local_mae_{r:g}"] = float(err0[sel].mean()) if sel.any() else math.nan
    return row


def summarize(rows: Sequence[dict[str, Any]], radii: Sequence[float]) -> dict[str, Any]:
    """Means over structures of the per-structure metrics, ratios vs the dummy, median oracle steps."""

    def mean(key: str) -> float:
        vals = [
            float(r[key])
            for r in rows
            if key in r and r[key] not in ("", None) and not math.isnan(float(r[key]))
        ]
        return float(np.mean(vals)) if vals else math.nan

    out: dict[str, Any] = {"structures": len(rows)}
    out["coord_mae_A"] = mean("coord_mae")
    out["dummy_coord_mae_A"] = mean("dummy_coord_mae")
    out["coord_mae_ratio_vs_dummy"] = out["coord_mae_A"] / out["dummy_coord_mae_A"]
    out["local_mae_A"] = {f"{r:g}": mean(f"local_mae_{r:g}") for r in radii}
    out["dummy_local_mae_A"] = {f"{r:g}": mean(f"dummy_local_mae_{r:g}") for r in radii}
    if rows and "uncertainty_A" in rows[0] and len(rows) > 2:
        from scipy.stats import spearmanr

        rho = spearmanr([r["uncertainty_A"] for r in rows], [r["coord_mae"] for r in rows]).statistic
        out["uncertainty_spearman"] = float(rho)  # does the proxy rank the structures by their true error?
    out.update(steps_summary(rows))
    return out


def evaluate_model(job: EvalJob, model: DefiNet | None = None, progress: bool = True) -> dict[str, Any]:
    """Evaluate a model on labelled pairs; writes ``eval.json`` and ``per_structure.csv``.

    Args:
        job: the settings.
        model: an already loaded model (else read from ``job.model``).
        progress: progress bars.

    Returns:
        The summary written to ``eval.json``.
    """

    from quintet.definet.run import load_definet, load_pairs

    if model is None:
        model, _ = load_definet(job.model)
    if job.compile:
        model = CompiledModel(model)  # type: ignore[assignment]
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(job, out / "config.yaml")
    ds = load_pairs(job.data, None if job.split == "all" else job.split, model.cfg)
    records = [ds[i] for i in range(len(ds))]
    ids = dataset_ids(ds)
    preds, seconds = predict_batches(
        model, records, job.batch_size, progress=progress, max_atoms=job.max_atoms
    )
    rows: list[dict[str, Any]] = []
    for sid, rec, pred in zip(ids, records, preds, strict=True):
        rows.append(
            {"id": sid, "n_atoms": int((rec[K.DEFECT] != 2).sum()), **record_metrics(rec, pred, job.radii)}
        )
    if job.uncertainty_samples:
        spreads = jitter_spread(model, records, job.uncertainty_samples, job.uncertainty_jitter, job.max_atoms)
        for row, rec, spread in zip(rows, records, spreads, strict=True):
            row["uncertainty_A"] = float(spread[(rec[K.DEFECT] != 2).numpy()].mean())
    if oracle_name(job.finish_with) is not None:
        _finish_rows(job, dataset_meta(ds), records, preds, rows, progress)
    summary = summarize(rows, job.radii)
    summary["model_seconds_per_structure"] = seconds / max(len(rows), 1)
    atomic_write_csv(out / "per_structure.csv", rows)
    atomic_save_json(out / "eval.json", summary)
    return summary


def _finish_rows(
    job: EvalJob, meta: dict[str, dict[str, str]], records: Sequence[dict[str, Tensor]],
    preds: Sequence[np.ndarray], rows: list[dict[str, Any]], progress: bool,
) -> None:  # fmt: skip
    """Oracle steps from the prediction and from the input for the first ``finish_limit`` structures."""
    from quintet.atomistic.pipeline import finish_steps

    def starts() -> Any:
        for rec, pred in zip(records[: job.finish_limit], preds, strict=False):
            real = (rec[K.DEFECT] != 2).numpy()
            cell, pbc, z = rec[K.CELL].double().numpy(), rec[K.PBC].numpy(), rec[K.ATOMIC_NUMBERS].numpy()[real]
            yield atoms_from(z, pred[real], cell, pbc), atoms_from(z, rec[K.POSITIONS].double().numpy()[real], cell, pbc)

    fin = Finisher(job.finish_with, job.fmax, job.finish_steps, cell=False, optimizer=job.finish_optimizer)
    finish_steps(rows, starts(), fin, meta if job.recorded_steps else None, progress)
