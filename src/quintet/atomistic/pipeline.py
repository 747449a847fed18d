"""The one inference pipeline of the atomistic systems (DeepRelax, DefiNet, LEIGNN ``predict``).

A predict verb is: find the inputs (:func:`discover`, streaming: files, folders, globs, ASE dbs),
read them one structure at a time with a stable id (:func:`iter_structures`), group them into
batches bounded by structures and atoms (:func:`batches`), run the model on each batch (the only
system-specific part), write each result as ``<out>/<id>.<format>`` (:func:`write_output`),
optionally finish it with an oracle (:class:`Finisher`, written to ``<out>/finished/<id>.<format>``)
and keep one row per structure in a resumable table (:class:`PredictionTable`). :func:`run_predictions`
drives all of it; a system passes a function ``predict(chunk) -> [(atoms, row), ...]``.

Threads: the model runs with the process's torch threads (``--threads``, default the cores
available); an oracle finish runs with one thread, because a many-threaded oracle on a loaded
machine was measured 10-20x slower per structure than a single-threaded one.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import io
import os
import re
import shutil
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quintet.io import atomic_write_csv, check_resume_record, read_csv, remove_stale_temps

__all__ = [
    "FINISH_ORACLES",
    "OUTPUT_FORMATS",
    "Domain",
    "Finisher",
    "Item",
    "MergeJob",
    "PredictionTable",
    "batches",
    "check_inputs",
    "clean_on_failure",
    "discover",
    "finish_steps",
    "finisher_for",
    "in_shard",
    "is_structure_file",
    "iter_structures",
    "merge_tables",
    "merge_verb",
    "one_thread",
    "open_table",
    "oracle_name",
    "output_name",
    "parse_shard",
    "predict_job",
    "relax_structures",
    "run_predictions",
    "steps_summary",
    "structure_id",
    "table_name",
    "write_output",
]

#: file suffixes read as structures inside a folder (``POSCAR*``/``CONTCAR*`` are recognised by name)
STRUCTURE_SUFFIXES = (".cif", ".vasp", ".poscar", ".xyz", ".extxyz", ".traj", ".db")
#: an input with one of these suffixes is an index: one structure file per line
INDEX_SUFFIXES = (".txt", ".list")
#: ``--format`` of a predict verb -> file suffix
OUTPUT_FORMATS = {"cif": "cif", "poscar": "vasp", "extxyz": "extxyz"}
#: the one map of oracle names a finish accepts (any ``package.module:Class`` works too)
FINISH_ORACLES: dict[str, str | None] = {
    "none": None,
    "emt": "emt",
    "chgnet": "chgnet",
    "sevenn": "sevennet",
    "sevennet": "sevennet",
    "xtb": "xtb",
}


def is_structure_file(path: Path) -> bool:
    """A structure file by suffix or VASP name (``POSCAR``, ``POSCAR_001``, ``CONTCAR``...)."""
    return path.suffix.lower() in STRUCTURE_SUFFIXES or path.name.upper().startswith(("POSCAR", "CONTCAR"))


def _index(path: Path) -> Iterator[Path]:
    """The files an index file lists, one per line (relative to the index's folder; ``#`` comments)."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            entry = line.split("#", 1)[0].strip()
            if entry:
                f = Path(entry) if Path(entry).is_absolute() else path.parent / entry
                if not f.is_file():
                    raise FileNotFoundError(f"{path}: lists {entry}, which does not exist")
                yield f


def _folder(path: Path) -> list[Path]:
    return sorted(
        Path(e.path) for e in os.scandir(path)
        if e.is_file() and is_structure_file(Path(e.name)) and not Path(e.name).stem.endswith("_relaxed")
    )  # fmt: skip


def discover(inputs: Iterable[str | Path], shard: tuple[int, int] | None = None) -> Iterator[Path]:
    """Yield the structure files of ``inputs`` (files, folders, glob patterns, index files ``*.txt``/
    ``*.list`` of one path per line), each once, in order; with ``shard=(K, N)`` only shard K's files.

    In a folder, files whose name ends in ``_relaxed`` (the relaxed half of a pair) are skipped and
    the rest are sorted by name. Nothing is listed twice in memory: a folder is walked once.

    Raises:
        FileNotFoundError: an input that is no file, folder or matching glob; or no structure at all.
    """
    seen: set[Path] = set()
    found = 0
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths: Iterable[Path] = _folder(p)
        elif p.is_file() and p.suffix.lower() in INDEX_SUFFIXES:
            paths = _index(p)
        elif p.is_file():
            paths = [p]
        else:
            paths = sorted(Path(h) for h in glob.glob(str(item)) if Path(h).is_file())
            if not paths:
                raise FileNotFoundError(f"{item}: no such file, folder or matching glob")
        for f in paths:
            if f not in seen:
                seen.add(f)
                found += 1
                if in_shard(f, shard):
                    yield f
    if not found:
        raise FileNotFoundError(f"no structure files (CIF/POSCAR/extxyz/traj/db) in {[str(i) for i in inputs]}")


def structure_id(path: Path) -> str:
    """The id of a structure file: its stem, without a trailing ``_unrelaxed`` (pair layouts)."""
    stem = path.stem if path.suffix.lower() in STRUCTURE_SUFFIXES else path.name
    return stem[: -len("_unrelaxed")] if stem.endswith("_unrelaxed") else stem


@dataclass
class Item:
    """One input structure: its id, the file it came from, and the ASE ``Atoms``."""

    id: str
    source: str
    atoms: Any


def iter_structures(
    files: Iterable[Path], skip: set[str] | frozenset[str] = frozenset(), min_distance: float | None = None
) -> Iterator[Item]:
    """Read each file (validated; atoms closer than ``min_distance`` Å, default
    :data:`~quintet.atomistic.structures.MIN_DISTANCE`, refused) and yield its structures; a multi-frame
    file gives ``<stem>_<k>``.

    Ids in ``skip`` (already done) are not yielded. Two inputs with the same id are an error that
    names both files (their outputs would collide).
    """
    from quintet.atomistic.structures import MIN_DISTANCE, read_structures

    owner: dict[str, str] = {}
    for f in files:
        sid = structure_id(f)
        if sid in skip and not _multi_frame(f):
            owner[sid] = str(f)
            continue
        frames = read_structures(f, min_distance=MIN_DISTANCE if min_distance is None else min_distance)
        for k, atoms in enumerate(frames):
            fid = sid if len(frames) == 1 else f"{sid}_{k}"
            if fid in owner:
                raise ValueError(f"{f} and {owner[fid]} both give the structure id {fid!r}; outputs would collide")
            owner[fid] = str(f)
            if fid not in skip:
                yield Item(fid, str(f) + (f"@{k}" if len(frames) > 1 else ""), atoms)


def _multi_frame(path: Path) -> bool:
    return path.suffix.lower() in (".xyz", ".extxyz", ".traj", ".db")


def batches(items: Iterable[Item], max_structures: int, max_atoms: int | None) -> Iterator[list[Item]]:
    """Group a stream of items into batches of at most ``max_structures`` and ``max_atoms`` atoms
    (a structure larger than ``max_atoms`` runs alone)."""
    if max_structures < 1:
        raise ValueError(f"batch_size must be at least 1, got {max_structures}")
    chunk: list[Item] = []
    atoms = 0
    for item in items:
        n = len(item.atoms)
        if chunk and (len(chunk) >= max_structures or (max_atoms is not None and atoms + n > max_atoms)):
            yield chunk
            chunk, atoms = [], 0
        chunk.append(item)
        atoms += n
    if chunk:
        yield chunk


def output_name(sid: str, fmt: str) -> str:
    """The one naming rule for predicted structures: ``<id>.<format suffix>``."""
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"output format must be one of {list(OUTPUT_FORMATS)}, got {fmt!r}")
    return f"{sid}.{OUTPUT_FORMATS[fmt]}"


def write_output(out: Path, sid: str, atoms: Any, fmt: str, folder: str = "") -> str:
    """Write ``atoms`` as ``<out>/[folder/]<id>.<format>`` (atomically); returns the path relative to ``out``."""
    from quintet.atomistic.structures import write_structure

    rel = Path(folder) / output_name(sid, fmt) if folder else Path(output_name(sid, fmt))
    write_structure(out / rel, atoms, format="vasp" if fmt == "poscar" else fmt)
    return rel.as_posix()


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the body with one torch (and BLAS) thread; restore the previous setting afterwards."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        limits: Any = threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl ships with scipy's stack
        limits = contextlib.nullcontext()
    try:
        with limits:
            yield
    finally:
        torch.set_num_threads(old)


def oracle_name(name: str) -> str | None:
    """Map a ``finish_with`` value to an oracle of :func:`quintet.atomistic.oracle.get_calculator`
    (``None`` for ``none``); ``package.module:Class`` passes through."""
    key = name.strip().lower()
    if key in FINISH_ORACLES:
        return FINISH_ORACLES[key]
    if ":" in name:
        return name.strip()
    raise ValueError(
        f"finish_with: unknown oracle {name!r}; choose from {sorted(FINISH_ORACLES)} or give 'package.module:Class'"
    )


@dataclass
class Finisher:
    """Relax predictions further with an oracle (FIRE or BFGS), one thread, in this process.

    Args:
        oracle: a key of :data:`FINISH_ORACLES` or ``package.module:Class``.
        fmax: force threshold, eV/Å.
        steps: most optimizer steps.
        cell: also relax the cell (periodic directions only).
        cell_filter: ``frechet`` or ``unitcell``.
        optimizer: ``fire`` or ``bfgs``.
    """

    oracle: str
    fmax: float = 0.05
    steps: int = 500
    cell: bool = False
    cell_filter: str = "frechet"
    optimizer: str = "fire"
    calc: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.optimizer not in ("fire", "bfgs"):
            raise ValueError(f"finish_optimizer must be 'fire' or 'bfgs', got {self.optimizer!r}")
        name = oracle_name(self.oracle)
        if name is None:
            raise ValueError("Finisher needs an oracle, not 'none'")
        if self.calc is None:
            from quintet.atomistic.oracle import get_calculator

            self.calc = get_calculator(name)
            if not hasattr(self.calc, "get_forces"):
                raise ValueError(f"finish_with: {self.oracle!r} is not an ASE calculator (it has no get_forces)")

    def __call__(self, atoms: Any) -> Any:
        """The oracle's :class:`~quintet.atomistic.oracle.RelaxResult` from ``atoms`` (not modified)."""
        from quintet.atomistic.oracle import relax

        relax_cell = bool(self.cell and any(atoms.pbc))
        p = [bool(x) for x in atoms.pbc]
        mask = [p[0], p[1], p[2], p[1] and p[2], p[0] and p[2], p[0] and p[1]]
        try:
            with one_thread():
                return relax(
                    atoms, self.calc, fmax=self.fmax, max_steps=self.steps, relax_cell=relax_cell,
                    optimizer=self.optimizer, cell_mask=mask if relax_cell else None,  # type: ignore[arg-type]
                    cell_filter=self.cell_filter,  # type: ignore[arg-type]
                )  # fmt: skip
        except Exception as exc:  # calculators raise many types (unsupported elements, NaN, ...)
            raise RuntimeError(
                f"oracle {self.oracle!r} failed on {atoms.get_chemical_formula()}: {type(exc).__name__}: {exc}"
            ) from exc

    def row(self, atoms: Any, out: Path, sid: str, fmt: str) -> dict[str, Any]:
        """Finish ``atoms``, write ``finished/<id>.<format>``, return the table columns."""
        res = self(atoms)
        res.atoms.calc = None
        return {
            "finish_with": self.oracle,
            "finish_steps": res.steps,
            "finish_fmax": round(res.fmax_final, 5),
            "finish_converged": res.converged,
            "finish_time_s": round(res.seconds, 3),
            "finished_output": write_output(out, sid, res.atoms, fmt, folder="finished"),
        }


class PredictionTable:
    """``<out>/predictions.csv`` (or a shard's ``predictions.shard<K>of<N>.csv``): one row per structure.

    Rows are appended after every batch (flushed to disk), so a table of 100,000 structures is never
    rewritten as a whole while it grows; nothing but the ids is held in memory. On ``resume``, rows whose
    output file still exists are kept (their ids are :attr:`done`) and a line cut short by a kill is
    dropped. The folder's ``predict_run.json`` must show the same ``record`` (model files, output
    settings), or resuming is refused: it would mix two runs.
    """

    def __init__(self, out: Path, record: dict[str, Any], resume: bool = True, name: str = "predictions.csv"):
        self.out = Path(out)
        self.path = self.out / name
        rows = [r for r in read_csv(self.path) if self._complete(r)] if resume else []
        check_resume_record(out, record, "predict_run.json", resuming=bool(rows))
        self.columns: list[str] | None = list(rows[0]) if rows else None
        self.done = frozenset(r["id"] for r in rows)
        if self.path.exists() or rows:  # start from the clean rows only (no partial line, no stale rows)
            atomic_write_csv(self.path, rows, self.columns or ["id", "output"])

    def _complete(self, row: dict[str, Any]) -> bool:
        return bool(row.get("output")) and None not in row.values() and (self.out / row["output"]).is_file()

    def add(self, rows: Sequence[dict[str, Any]]) -> None:
        """Append ``rows`` (a new column rewrites the table once with the union of the columns)."""
        keys = list(dict.fromkeys(k for r in rows for k in r))
        if self.columns is None or not set(keys) <= set(self.columns):
            old = read_csv(self.path) if self.columns is not None else []
            self.columns = list(dict.fromkeys([*(self.columns or []), *keys]))
            atomic_write_csv(self.path, old, self.columns)
        buf = io.StringIO()
        csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore").writerows(
            {k: r.get(k, "") for k in self.columns} for r in rows
        )
        with open(self.path, "a", encoding="utf-8", newline="") as fh:
            fh.write(buf.getvalue())
            fh.flush()
            os.fsync(fh.fileno())

    def flush(self) -> None:
        """Make sure the table exists (with a header) even when nothing was predicted."""
        if not self.path.exists():
            atomic_write_csv(self.path, [], self.columns or ["id", "output"])


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    """``"K/N"`` -> ``(K, N)`` with 1 <= K <= N (``None``: no sharding)."""
    if shard in (None, "", "none"):
        return None
    try:
        k, n = (int(x) for x in str(shard).split("/"))
    except ValueError:
        raise ValueError(f"shard: expected K/N such as 1/4, got {shard!r}") from None
    if not 1 <= k <= n:
        raise ValueError(f"shard: K must be in 1..N, got {shard!r}")
    return k, n


def in_shard(path: Path, shard: tuple[int, int] | None) -> bool:
    """Whether ``path`` belongs to shard K of N: by a stable hash of its file name, so every task of a
    cluster job array agrees without talking to the others (and a listing's order does not matter)."""
    if shard is None:
        return True
    k, n = shard
    return zlib.crc32(path.name.encode()) % n == k - 1


def table_name(shard: tuple[int, int] | None) -> str:
    return "predictions.csv" if shard is None else f"predictions.shard{shard[0]}of{shard[1]}.csv"


def open_table(job: Any, record: dict[str, Any]) -> tuple[PredictionTable, tuple[int, int] | None]:
    """The output folder of a predict job (``job.out``, ``job.resume``, ``job.shard``): created, its table
    opened (resumed when allowed) and the resolved config saved (per shard: ``config.shard<K>of<N>.yaml``)."""
    from quintet.config import save_config

    shard = parse_shard(job.shard)
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    table = PredictionTable(out, record, resume=job.resume, name=table_name(shard))
    save_config(job, out / ("config.yaml" if shard is None else f"config.shard{shard[0]}of{shard[1]}.yaml"))
    return table, shard


def finisher_for(job: Any) -> Finisher | None:
    """The finish a predict job asks for (``finish_with``, ``fmax``, ``finish_steps``, ``finish_optimizer``;
    ``finish_cell``/``finish_filter`` where the system relaxes cells), or ``None``."""
    if oracle_name(getattr(job, "finish_with", "none")) is None:
        return None
    cell, cell_filter = getattr(job, "finish_cell", False), getattr(job, "finish_filter", "frechet")
    return Finisher(job.finish_with, job.fmax, job.finish_steps, cell, cell_filter, job.finish_optimizer)


def predict_job(
    job: Any, record: Callable[[Any], dict[str, Any]], setup: Callable[[], tuple[PredictChunk, Domain | None]],
    desc: str, relaxes: bool = True,
) -> Path:  # fmt: skip
    """A predict verb: inputs, shard and finish checked first, then ``setup()`` (load the model: the batch
    function and the model's training domain), then the output folder opened (:func:`open_table`) and
    :func:`run_predictions`; nothing is written before the inputs and the model are known to be usable, and
    a run that fails before its first batch leaves nothing (:func:`clean_on_failure`). Returns the table."""
    out = Path(job.out)
    check_inputs(job.inputs, out)
    parse_shard(job.shard)
    finisher = finisher_for(job)
    predict, domain = setup()
    with clean_on_failure(out):
        table, shard = open_table(job, record(job))
        return run_predictions(
            job.inputs, out, predict, table, fmt=job.output_format, finisher=finisher, batch_size=job.batch_size,
            max_atoms=job.max_atoms, desc=desc, progress=getattr(job, "progress", True), shard=shard,
            min_distance=getattr(job, "min_distance", None), domain=domain, strict=getattr(job, "strict", False),
            relaxes=relaxes,
        )  # fmt: skip


def finish_steps(
    rows: list[dict[str, Any]], starts: Iterable[tuple[Any, Any]], finisher: Finisher,
    meta: dict[str, dict[str, str]] | None = None, progress: bool = True,
) -> None:  # fmt: skip
    """The "predict, then finish" metric of an eval verb, in place on ``rows``: for each ``(predicted,
    unrelaxed)`` pair of ``starts`` (the first rows), the oracle steps from the prediction and from the
    input. The input's steps come from the data's ``meta.csv`` (``meta[id]["steps"]``, the relaxation that
    made the label) when it records them for this oracle (its ``oracle`` column, if any, names it), else
    the oracle runs again."""
    from tqdm.auto import tqdm

    pairs = list(starts)
    for row, (pred, unrelaxed) in tqdm(
        list(zip(rows, pairs, strict=False)), desc=f"{finisher.oracle} finish", unit="structure", disable=not progress
    ):  # fmt: skip
        res = finisher(pred)
        row.update(finish_steps=res.steps, finish_s=round(res.seconds, 3))
        recorded = (meta or {}).get(str(row.get("id")), {})
        if recorded.get("oracle", finisher.oracle) == finisher.oracle and recorded.get("steps") not in (None, ""):
            row.update(unrelaxed_steps=int(float(recorded["steps"])), unrelaxed_steps_from="meta.csv")
        else:
            base = finisher(unrelaxed)
            row.update(unrelaxed_steps=base.steps, unrelaxed_s=round(base.seconds, 3), unrelaxed_steps_from="oracle")


def steps_summary(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Median oracle steps from the predictions and from the inputs (rows with both), and their ratio."""
    import numpy as np

    done = [r for r in rows if r.get("finish_steps") not in (None, "") and r.get("unrelaxed_steps") not in (None, "")]
    if not done:
        return {}
    fin = float(np.median([int(r["finish_steps"]) for r in done]))
    base = float(np.median([int(r["unrelaxed_steps"]) for r in done]))
    return {
        "median_finish_steps": fin, "median_unrelaxed_steps": base,
        "finish_steps_ratio_vs_unrelaxed": fin / max(base, 1.0), "oracle_structures": float(len(done)),
    }  # fmt: skip


@dataclass
class MergeJob:
    """``quintet <system> merge -o OUT``: merge the shard tables a job array wrote into ``OUT``."""

    out: str = "predictions"


def merge_verb(system: str) -> Any:
    """The ``quintet <system> merge`` verb of a system whose predict takes ``--shard``."""
    from quintet.cli import Verb

    return Verb(
        "merge", "merge the shard tables of a job array (predict --shard K/N) into predictions.csv", MergeJob,
        lambda job: f"merged: {merge_tables(job.out)}", out="out", example=f"quintet {system} merge -o relaxed",
    )  # fmt: skip


def merge_tables(out: Path) -> Path:
    """Merge the shard tables ``predictions.shard<K>of<N>.csv`` of ``out`` into ``predictions.csv``.

    Raises:
        FileNotFoundError: no shard tables, or a shard missing (named).
        ValueError: tables of different N, or a structure id in two shards.
    """
    tables = sorted(Path(out).glob("predictions.shard*of*.csv"))
    if not tables:
        raise FileNotFoundError(f"{out}: no predictions.shard<K>of<N>.csv to merge (run predict with --shard K/N)")
    found = {tuple(int(x) for x in re.findall(r"\d+", t.name)[-2:]) for t in tables}
    ns = {n for _, n in found}
    if len(ns) != 1:
        raise ValueError(f"{out}: shard tables of different N {sorted(ns)}; merge one job's shards at a time")
    n = ns.pop()
    missing = [k for k in range(1, n + 1) if (k, n) not in found]
    if missing:
        raise FileNotFoundError(f"{out}: shards {missing} of {n} have no table yet; run them first")
    rows, owner = [], {}
    for t in tables:
        for r in read_csv(t):
            if r["id"] in owner:
                raise ValueError(f"structure id {r['id']!r} is in {owner[r['id']]} and {t.name}")
            owner[r["id"]] = t.name
            rows.append(r)
    path = Path(out) / "predictions.csv"
    atomic_write_csv(path, rows)
    return path


def check_inputs(inputs: Sequence[str], out: Path) -> None:
    """Before anything is written: every input exists (a glob matches at least one file), and the output
    folder holds no input (``<id>.<format>`` could overwrite it)."""
    target = Path(out).resolve()
    if not inputs:
        raise ValueError("no inputs: pass FILE|FOLDER|GLOB arguments (or inputs=[...])")
    for item in inputs:
        p = Path(item)
        if not p.exists() and next(glob.iglob(str(item)), None) is None:
            raise FileNotFoundError(f"{item}: no such file, folder or matching glob")
        if p.exists():
            folder = p if p.is_dir() else p.parent
        else:  # a glob: the folder before its first wildcard
            head = re.split(r"[*?\[]", str(item), maxsplit=1)[0]
            folder = Path(head) if head.endswith("/") or not head else Path(head).parent
        if folder.resolve() == target:
            raise ValueError(
                f"output folder {out} holds the input {item}; choose another -o/--out (inputs are never overwritten)"
            )


@dataclass(frozen=True)
class Domain:
    """What a model was trained on (``extra["domain"]`` of its file, written by the train jobs): input
    outside it gets ``in_domain=False`` and a ``domain_reason``. ``elements`` is ``None`` for model files
    written before domains were recorded (``in_domain`` is then left empty)."""

    elements: frozenset[str] | None
    source: str = "model"

    @classmethod
    def of(cls, files: Sequence[dict[str, Any]], source: str = "model") -> Domain:
        """The domain of one model file or of an ensemble (the elements every member saw)."""
        sets = [(f.get("extra") or {}).get("domain", {}).get("elements") for f in files]
        if not sets or any(e is None for e in sets):
            return cls(None, source)
        return cls(frozenset.intersection(*(frozenset(e) for e in sets)), source)

    def columns(self, atoms: Any) -> dict[str, Any]:
        """``{"in_domain": True/False/"", "domain_reason": "..."}`` for one input structure."""
        if self.elements is None:
            return {"in_domain": "", "domain_reason": "the model file records no training domain (an older file)"}
        unseen = sorted(set(atoms.get_chemical_symbols()) - self.elements)
        if unseen:
            return {"in_domain": False, "domain_reason": f"elements {' '.join(unseen)} not in the training set"}
        return {"in_domain": True, "domain_reason": ""}

    def check_all(self, items: Iterable[Item]) -> None:
        """``--strict``: refuse the first input outside the domain (called before anything is predicted)."""
        if self.elements is None:
            raise ValueError(
                f"{self.source}: the model file records no training domain (an older file), so --strict cannot "
                "check the inputs; retrain it, or drop --strict"
            )
        for item in items:
            cols = self.columns(item.atoms)
            if cols["in_domain"] is False:
                raise ValueError(
                    f"{item.source}: outside the domain of {self.source} ({cols['domain_reason']}); "
                    "drop --strict to predict it anyway (flagged in_domain=False)"
                )


@contextlib.contextmanager
def clean_on_failure(out: Path) -> Iterator[None]:
    """Run a predict verb's body; when it fails before any prediction was written, remove every file and
    folder it created in ``out`` (``out`` too if it created it): its config, run record and empty tables.
    Once a structure's output exists everything is kept, so a rerun resumes. A kill or Ctrl-C keeps all."""
    out = Path(out)
    existed = out.is_dir()
    before = set(out.iterdir()) if existed else set()
    try:
        yield
    except Exception:
        new = (set(out.iterdir()) if out.is_dir() else set()) - before
        if all(_bookkeeping(p) for p in new):
            if not existed:
                shutil.rmtree(out, ignore_errors=True)
            for p in new:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        raise


def _bookkeeping(path: Path) -> bool:
    """A file a predict run writes before its first prediction (config, run record, table, empty folders)."""
    if path.is_dir():
        return not any(path.iterdir())
    return path.name == "predict_run.json" or (path.name.startswith(("config", "predictions")) and
                                               path.suffix in (".yaml", ".csv"))  # fmt: skip


#: ``predict(chunk)`` of a system: for each item, the predicted ``Atoms`` and its table columns
PredictChunk = Callable[[list[Item]], list[tuple[Any, dict[str, Any]]]]


def run_predictions(
    inputs: Sequence[str],
    out: Path,
    predict: PredictChunk,
    table: PredictionTable,
    fmt: str = "cif",
    finisher: Finisher | None = None,
    batch_size: int = 8,
    max_atoms: int | None = None,
    desc: str = "predict",
    progress: bool = True,
    shard: tuple[int, int] | None = None,
    min_distance: float | None = None,
    domain: Domain | None = None,
    strict: bool = False,
    relaxes: bool = True,
) -> Path:
    """Drive a predict verb end to end (see the module docstring); returns the table's path.

    The progress bar counts input files first (one cheap listing pass, nothing kept) to show
    structures/s and an ETA; ``shard=(K, N)`` predicts only shard K's files (:func:`in_shard`). With a
    ``domain``, each row gets ``in_domain``/``domain_reason`` and a warning names the inputs outside it;
    a relaxer's rows get ``plausible``/``plausibility_reason`` (:func:`~quintet.atomistic.structures.plausibility`),
    and a warning counts the implausible predictions;
    ``strict`` refuses them all before anything is predicted (inputs are read twice then).
    """
    from tqdm.auto import tqdm

    check_inputs(inputs, out)
    remove_stale_temps(out)  # a killed run's half-written files
    if strict and domain is not None:
        domain.check_all(iter_structures(discover(inputs, shard), skip=table.done, min_distance=min_distance))
    if table.done:
        print(f"resuming: {len(table.done)} structures already in {table.path}")
    total = sum(1 for _ in discover(inputs, shard)) if progress else None
    items = iter_structures(discover(inputs, shard), skip=table.done, min_distance=min_distance)
    outside = implausible = 0
    bar = tqdm(total=total, initial=len(table.done), desc=desc, unit="structure", disable=not progress)
    for chunk in batches(items, batch_size, max_atoms):
        t0 = time.perf_counter()
        results = predict(chunk)
        dt = (time.perf_counter() - t0) / len(chunk)
        rows = []
        for item, (atoms, cols) in zip(chunk, results, strict=True):
            row = {"id": item.id, "source": item.source, "n_atoms": len(item.atoms), **cols}
            row.update(_flags(item.atoms, atoms, domain, relaxes))
            outside += row.get("in_domain") is False
            implausible += row.get("plausible") is False
            row["predict_s"] = round(dt, 6)
            row["output"] = write_output(out, item.id, atoms, fmt)
            if finisher is not None:
                row.update(finisher.row(atoms, out, item.id, fmt))
            rows.append(row)
        table.add(rows)
        bar.update(len(chunk))
    bar.close()
    table.flush()
    _domain_notes(outside, domain, table.path, implausible)
    return table.path


def _flags(before: Any, after: Any, domain: Domain | None, relaxes: bool) -> dict[str, Any]:
    """The flags of one prediction: ``in_domain``/``domain_reason`` (with a domain) and, for a relaxer,
    ``plausible``/``plausibility_reason``."""
    from quintet.atomistic.structures import plausibility

    flags = domain.columns(before) if domain is not None else {}
    return {**flags, **(plausibility(before, after) if relaxes else {})}


def _domain_notes(outside: int, domain: Domain | None, path: Path, implausible: int = 0) -> None:
    if implausible:
        print(
            f"warning: {implausible} prediction(s) outside the plausible range (plausible=False in {path}: cell "
            "strain, atomic shift or overlapping atoms, see plausibility_reason); do not use them without checking",
            file=sys.stderr,
        )
    if outside:
        print(
            f"warning: {outside} structure(s) outside the domain of {domain.source if domain else 'the model'} "
            f"(in_domain=False in {path}); their predictions are extrapolations",
            file=sys.stderr,
        )
    if domain is not None and domain.elements is None:
        print(f"note: {domain.source} records no training domain; in_domain is left empty", file=sys.stderr)


def relax_structures(
    structures: Any,
    predict: PredictChunk,
    batch_size: int,
    max_atoms: int | None,
    source: str = "structure",
    domain: Domain | None = None,
) -> Any:
    """The one-call APIs' shared body: ASE ``Atoms`` or pymatgen structures (one or a sequence) in, the
    same type out, each carrying its table columns (``atoms.info`` / ``Structure.properties``) and its
    per-atom arrays (``atoms.arrays`` / site properties); with a ``domain``, ``in_domain``/``domain_reason`` too."""
    from quintet.atomistic.structures import as_atoms, check_atoms, like

    single = not isinstance(structures, list | tuple)
    items, kinds = [], []
    for k, obj in enumerate([structures] if single else structures):
        atoms, kind = as_atoms(obj, f"{source} {k}")
        check_atoms(atoms, f"{source} {k}")
        items.append(Item(str(k), f"{source} {k}", atoms))
        kinds.append(kind)
    results: list[Any] = []
    for chunk in batches(items, batch_size, max_atoms):
        for item, (atoms, cols) in zip(chunk, predict(chunk), strict=True):
            atoms.info.update({**cols, **_flags(item.atoms, atoms, domain, True)})
            results.append(atoms)
    out = [_with_properties(like(a, kind), a) for a, kind in zip(results, kinds, strict=True)]
    return out[0] if single else out


def _with_properties(obj: Any, atoms: Any) -> Any:
    """Copy the per-structure columns and per-atom arrays of ``atoms`` onto a pymatgen object."""
    if obj is atoms:
        return obj
    for name, values in atoms.arrays.items():
        if name not in ("numbers", "positions"):
            obj.add_site_property(name, values.tolist())
    if hasattr(obj, "properties"):
        obj.properties.update(atoms.info)
    return obj
