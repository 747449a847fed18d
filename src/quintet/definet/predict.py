"""DefiNet inference: ``predict`` (files → relaxed CIFs + CSV, optional oracle finish) and ``eval``.

``predict`` labels each input against the pristine host, runs the model in batches, writes
``<out>/structures/<name>_definet.cif`` (real atoms only, the input cell) and one row per structure
in ``<out>/predictions.csv``. Structures already listed there are skipped, so a killed run resumes.
``--finish-with`` relaxes each prediction further with an oracle (FIRE, positions only, fmax
0.05 eV/Å) and records the steps it needed, which measures how close the one-shot guess was.

``eval`` compares the model with the unrelaxed "dummy" baseline on labelled pairs: per-structure
coordinate MAE, local MAE within 3/4/5/6 Å of a defect and, optionally, the oracle steps needed
from the prediction vs from the unrelaxed input.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from quintet.atomistic import keys as K
from quintet.atomistic.nn.compile import CompiledModel
from quintet.config import save_config
from quintet.definet.model import PRED_POSITIONS, DefiNet
from quintet.definet.run import DataConfig
from quintet.io import atomic_save_json, atomic_write_text, check_resume_record, file_sha256

__all__ = [
    "FINISHERS",
    "EvalJob",
    "PredictJob",
    "atoms_from",
    "dataset_ids",
    "evaluate_model",
    "finish_relax",
    "list_inputs",
    "predict",
    "predict_batches",
    "record_metrics",
    "summarize",
]

#: ``--finish-with`` choices -> oracle names of :func:`quintet.atomistic.oracle.get_calculator`
FINISHERS: dict[str, str | None] = {"none": None, "emt": "emt", "chgnet": "chgnet", "sevenn": "sevennet"}
STRUCTURE_SUFFIXES = (".cif", ".vasp", ".poscar", ".xyz", ".extxyz", ".traj")


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


def finish_relax(
    atoms: Any,
    oracle: str,
    fmax: float = 0.05,
    max_steps: int = 400,
    calc: Any = None,
    optimizer: str = "fire",
) -> dict[str, Any]:
    """Relax ``atoms`` (positions only; FIRE or BFGS) with an oracle; return steps, seconds, fmax and the result.

    Args:
        atoms: the starting structure (not modified).
        oracle: a key of :data:`FINISHERS` other than ``"none"``.
        fmax: force convergence, eV/Å.
        max_steps: step limit.
        calc: a ready calculator (re-used across structures); built from ``oracle`` when ``None``.
        optimizer: ``fire`` or ``bfgs``.
    """
    from quintet.atomistic.oracle import get_calculator, relax

    if optimizer not in ("fire", "bfgs"):
        raise ValueError(f"finish_optimizer must be 'fire' or 'bfgs', got {optimizer!r}")
    if oracle not in FINISHERS or FINISHERS[oracle] is None:
        raise ValueError(
            f"finish_with must be one of {[k for k in FINISHERS if k != 'none']}, got {oracle!r}"
        )
    calc = calc if calc is not None else get_calculator(FINISHERS[oracle])
    try:
        res = relax(atoms, calc, fmax=fmax, max_steps=max_steps, optimizer=optimizer)  # type: ignore[arg-type]
    except Exception as exc:  # calculators raise many types (unsupported elements, NaN, ...)
        raise RuntimeError(
            f"oracle {oracle!r} failed on {atoms.get_chemical_formula()}: {type(exc).__name__}: {exc}"
        ) from exc
    return {
        "atoms": res.atoms,
        "steps": res.steps,
        "seconds": res.seconds,
        "fmax_final": res.fmax_final,
        "converged": res.converged,
        "e_initial": res.e_initial,
        "e_final": res.e_final,
    }


# --------------------------------------------------------------------------------------------
# predict
# --------------------------------------------------------------------------------------------


@dataclass
class PredictJob:
    """``quintet definet predict``.

    Attributes:
        model: the model file (``best.pt`` of a training run).
        inputs: structure files and/or folders (CIF, POSCAR/.vasp, extxyz); in folders, files whose
            name ends in ``_relaxed`` are skipped (2DMD pairs).
        pristine: the pristine supercell file, or
        unit_cell: a pristine unit-cell file repeated ``supercell`` times.
        supercell: repetitions of ``unit_cell`` (e.g. ``[5, 5, 1]``).
        out: output folder (``structures/``, ``predictions.csv``, ``config.yaml``).
        batch_size: structures per forward pass.
        max_atoms: most nodes per forward pass (a larger structure runs alone).
        tol: site-matching tolerance of the defect labelling, Å.
        finish_with: ``none``, ``emt``, ``chgnet`` or ``sevenn``: relax each prediction further.
        finish_optimizer: ``fire`` or ``bfgs`` (quasi-Newton, like DFT ionic relaxations).
        fmax: oracle force convergence, eV/Å.
        max_steps: oracle step limit.
        compile: run the network through ``torch.compile`` (:class:`~quintet.atomistic.nn.CompiledModel`):
            a one-off compile on the first batch, then a faster forward pass (about 3× on 2D defect cells).
        resume: skip structures already listed in ``predictions.csv``, when ``predict_run.json`` shows the
            same model, host and output settings (else ``ValueError``: resuming would mix two runs).
        progress: progress bars.
    """

    model: str = "runs/definet/best.pt"
    inputs: list[str] = field(default_factory=list)
    pristine: str | None = None
    unit_cell: str | None = None
    supercell: list[int] | None = None
    out: str = "definet_predictions"
    batch_size: int = 8
    max_atoms: int | None = 4096
    tol: float = 0.3
    finish_with: Literal["none", "emt", "chgnet", "sevenn"] = "none"
    finish_optimizer: Literal["fire", "bfgs"] = "fire"
    fmax: float = 0.05
    max_steps: int = 400
    resume: bool = True
    progress: bool = True
    compile: bool = False


PREDICT_COLUMNS = (
    "id",
    "source",
    "n_atoms",
    "n_substitutions",
    "n_vacancies",
    "max_displacement_A",
    "mean_displacement_A",
    "predict_s",
    "output",
    "finish_with",
    "finish_steps",
    "finish_s",
    "finish_fmax",
    "finished_output",
)


def list_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders into structure files (sorted, duplicates removed).

    Raises:
        FileNotFoundError: a missing input, or no structure file at all.
    """
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                f
                for f in p.iterdir()
                if f.is_file()
                and (
                    f.suffix.lower() in STRUCTURE_SUFFIXES or f.name.upper().startswith(("POSCAR", "CONTCAR"))
                )
                and not f.stem.endswith("_relaxed")
            )
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"input {p} does not exist")
    files = list(dict.fromkeys(files))
    if not files:
        raise FileNotFoundError(f"no structure files in {[str(i) for i in inputs]}")
    return files


def _structure_id(path: Path) -> str:
    stem = path.stem
    return stem[: -len("_unrelaxed")] if stem.endswith("_unrelaxed") else stem


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _write_rows(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    atomic_write_text(path, buf.getvalue())


def atoms_from(numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> Any:
    """An ``ase.Atoms`` from arrays (positions in Å, cell rows as lattice vectors)."""
    from ase import Atoms

    return Atoms(numbers=numbers, positions=positions, cell=cell, pbc=pbc)


def _predict_record(job: PredictJob) -> dict[str, Any]:
    """What produced a prediction folder: the model's and host files' SHA-256 and the settings that change
    the outputs (batching and progress bars do not)."""
    host = {k: file_sha256(getattr(job, k)) for k in ("pristine", "unit_cell") if getattr(job, k)}
    settings = ("supercell", "tol", "finish_with", "finish_optimizer", "fmax", "max_steps")
    return {"model": file_sha256(job.model), **host, **{k: getattr(job, k) for k in settings}}


def predict(job: PredictJob) -> Path:
    """Predict relaxed structures for every input file; returns the path of ``predictions.csv``.

    Raises:
        FileNotFoundError: missing model, host or input files.
        ValueError: an input that cannot be labelled against the host (the message names the file
            and atoms), a bad ``finish_with``.
    """
    from tqdm.auto import tqdm

    from quintet.atomistic.structures import read_structure, write_structure
    from quintet.definet.data import defect_record, load_host
    from quintet.definet.run import load_definet

    if job.finish_with not in FINISHERS:
        raise ValueError(f"finish_with must be one of {list(FINISHERS)}, got {job.finish_with!r}")
    model: Any = load_definet(job.model)[0]
    if job.compile:
        model = CompiledModel(model)
    host = load_host(job.pristine, job.unit_cell, job.supercell)
    files = list_inputs(job.inputs)
    out = Path(job.out)  # created only once the inputs are known to be usable
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "predictions.csv"
    rows = _read_rows(csv_path) if job.resume else []
    check_resume_record(out, _predict_record(job), "predict_run.json", resuming=bool(rows))
    save_config(job, out / "config.yaml")
    done = {r["id"] for r in rows}
    todo = [f for f in files if _structure_id(f) not in done]
    if len(todo) < len(files):
        print(f"resuming: {len(files) - len(todo)} of {len(files)} structures already in {csv_path}")
    calc = None
    if FINISHERS[job.finish_with] is not None and todo:
        from quintet.atomistic.oracle import get_calculator

        calc = get_calculator(FINISHERS[job.finish_with])
    bar = tqdm(total=len(todo), desc="definet predict", unit="structure", disable=not job.progress)
    for s in range(0, len(todo), job.batch_size):
        chunk = todo[s : s + job.batch_size]
        recs, labs, atoms_in = [], [], []
        for f in chunk:
            atoms = read_structure(f)
            rec, lab = defect_record(atoms, host, tol=job.tol, name=str(f))
            recs.append(rec)
            labs.append(lab)
            atoms_in.append(atoms)
        preds, seconds = predict_batches(model, recs, batch_size=len(recs), max_atoms=job.max_atoms)
        for f, atoms, lab, pred in zip(chunk, atoms_in, labs, preds, strict=True):
            sid = _structure_id(f)
            real = pred[: lab.num_atoms]
            disp = np.linalg.norm(real - atoms.positions, axis=1)
            result = atoms_from(atoms.numbers, real, np.asarray(atoms.cell), atoms.pbc)
            target = out / "structures" / f"{sid}_definet.cif"
            write_structure(target, result)
            row: dict[str, Any] = {
                "id": sid,
                "source": str(f),
                "n_atoms": len(atoms),
                "n_substitutions": int((lab.labels == 1).sum()),
                "n_vacancies": lab.num_vacancies,
                "max_displacement_A": f"{disp.max():.5f}",
                "mean_displacement_A": f"{disp.mean():.5f}",
                "predict_s": f"{seconds / len(chunk):.5f}",
                "output": str(target.relative_to(out)),
                "finish_with": job.finish_with,
            }
            if calc is not None:
                fin = finish_relax(
                    result,
                    job.finish_with,
                    job.fmax,
                    job.max_steps,
                    calc=calc,
                    optimizer=job.finish_optimizer,
                )
                ftarget = out / "structures" / f"{sid}_definet_{job.finish_with}.cif"
                write_structure(ftarget, fin["atoms"])
                row.update(
                    finish_steps=fin["steps"],
                    finish_s=f"{fin['seconds']:.3f}",
                    finish_fmax=f"{fin['fmax_final']:.4f}",
                    finished_output=str(ftarget.relative_to(out)),
                )
            rows.append(row)
            bar.update(1)
        _write_rows(csv_path, rows, PREDICT_COLUMNS)
    bar.close()
    if not todo:
        _write_rows(csv_path, rows, PREDICT_COLUMNS)
    return csv_path


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
        max_steps: oracle step limit.
        batch_size: structures per forward pass.
        max_atoms: most nodes per forward pass (a larger structure runs alone).
        out: where ``eval.json`` and ``per_structure.csv`` go.
    """

    model: str = "runs/definet/best.pt"
    data: DataConfig = field(default_factory=DataConfig)
    split: Literal["train", "val", "test", "all"] = "test"
    radii: list[float] = field(default_factory=lambda: [3.0, 4.0, 5.0, 6.0])
    finish_with: Literal["none", "emt", "chgnet", "sevenn"] = "none"
    finish_limit: int = 20
    finish_optimizer: Literal["fire", "bfgs"] = "fire"
    fmax: float = 0.05
    max_steps: int = 400
    batch_size: int = 8
    max_atoms: int | None = 4096
    out: str = "definet_eval"
    compile: bool = False


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
    steps = [int(r["finish_steps"]) for r in rows if r.get("finish_steps") not in (None, "")]
    steps0 = [int(r["unrelaxed_steps"]) for r in rows if r.get("unrelaxed_steps") not in (None, "")]
    if steps:
        out["median_finish_steps"] = float(np.median(steps))
        out["median_unrelaxed_steps"] = float(np.median(steps0))
        out["finish_steps_ratio_vs_unrelaxed"] = out["median_finish_steps"] / max(
            out["median_unrelaxed_steps"], 1.0
        )
        out["oracle_structures"] = len(steps)
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
    from tqdm.auto import tqdm

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
    if FINISHERS.get(job.finish_with) is not None:
        from quintet.atomistic.oracle import get_calculator

        calc = get_calculator(FINISHERS[job.finish_with])
        n = min(job.finish_limit, len(rows))
        for k in tqdm(range(n), desc=f"{job.finish_with} finish", unit="structure", disable=not progress):
            rec, pred = records[k], preds[k]
            real = (rec[K.DEFECT] != 2).numpy()
            cell, pbc = rec[K.CELL].double().numpy(), rec[K.PBC].numpy()
            z = rec[K.ATOMIC_NUMBERS].numpy()[real]
            fin = finish_relax(
                atoms_from(z, pred[real], cell, pbc),
                job.finish_with,
                job.fmax,
                job.max_steps,
                calc,
                job.finish_optimizer,
            )
            base = finish_relax(
                atoms_from(z, rec[K.POSITIONS].double().numpy()[real], cell, pbc),
                job.finish_with,
                job.fmax,
                job.max_steps,
                calc,
                job.finish_optimizer,
            )
            rows[k].update(
                finish_steps=fin["steps"],
                finish_s=fin["seconds"],
                unrelaxed_steps=base["steps"],
                unrelaxed_s=base["seconds"],
            )
    summary = summarize(rows, job.radii)
    summary["model_seconds_per_structure"] = seconds / max(len(rows), 1)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    _write_rows(out / "per_structure.csv", rows, columns)
    atomic_save_json(out / "eval.json", summary)
    return summary


def dataset_ids(ds: Any) -> list[str]:
    """Pair ids of a RelaxPairDataset, a Subset of one, or a ConcatDataset of those."""
    from torch.utils.data import ConcatDataset, Subset

    if isinstance(ds, ConcatDataset):
        return [i for d in ds.datasets for i in dataset_ids(d)]
    if isinstance(ds, Subset):
        inner = dataset_ids(ds.dataset)
        return [inner[i] for i in ds.indices]
    return list(ds.ids)
