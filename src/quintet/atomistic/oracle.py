"""Oracle data generation with any ASE calculator: MD trajectories, relaxation pairs, defect pairs.

Built-in oracles by name (:func:`get_calculator`): ``emt`` (always), ``chgnet`` (CHGNet 0.3.0),
``sevennet`` (SevenNet-0), ``xtb`` (GFN2-xTB through tblite) when the ``oracles`` extra is installed,
or any calculator class given as ``"package.module:Class"``. The Python functions also accept a
ready ``ase.calculators.calculator.Calculator``.

Every job writes atomically and resumes: MD writes its frames in chunk files (each a seeded,
self-contained piece, so a resumed run gives the same frames as an uninterrupted one) and joins
them at the end; pair jobs skip the ids already listed in their ``meta.csv``. Outputs are the
layouts :mod:`quintet.atomistic.datasets` reads: extxyz trajectories, the DeepRelax *custom* layout
(``CIF/<id>_{un}relaxed.cif`` + ``meta.csv``) and the *2DMD* layout (``<host>/<host>.cif``,
``<host>/<host>_pristine_supercell.cif``, ``CIF/``, ``meta.csv``).
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
import io
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from quintet.atomistic.structures import check_atoms, read_structure, read_structures, write_structure
from quintet.config import config_to_dict, save_config
from quintet.io import (
    atomic_save_json,
    atomic_write_text,
    file_sha256,
    load_json,
    read_csv,
    remove_stale_temps,
    write_dataset_manifest,
)

__all__ = [
    "ORACLES",
    "DefectPairsConfig",
    "MDConfig",
    "RelaxPairsConfig",
    "RelaxResult",
    "build_structure",
    "get_calculator",
    "make_defect_pairs",
    "make_relax_pairs",
    "relax",
    "run_md",
]

#: built-in oracle names -> (import description, extra that provides it)
ORACLES: dict[str, str] = {
    "emt": "ase.calculators.emt.EMT (Al, Cu, Ag, Au, Ni, Pd, Pt; H, C, N, O toy parameters)",
    "chgnet": "CHGNet 0.3.0 universal potential (chgnet wheel, bundled weights)",
    "sevennet": "SevenNet-0 (7net-0) universal potential (sevenn wheel, bundled weights)",
    "xtb": "GFN2-xTB tight binding through tblite (molecules)",
}

Calculator = Any
CalcSpec = str | Calculator


def get_calculator(name: str, device: str = "cpu") -> Calculator:
    """An ASE calculator by name: one of :data:`ORACLES` or ``"package.module:Class"``.

    Raises:
        ValueError: unknown name.
        RuntimeError: the oracle's package is not installed (the message names the extra).
    """
    key = name.strip().lower()
    try:
        if key == "emt":
            from ase.calculators.emt import EMT

            return EMT()
        if key == "chgnet":
            from chgnet.model.dynamics import CHGNetCalculator

            return CHGNetCalculator(use_device=device, on_isolated_atoms="ignore")
        if key in ("sevennet", "7net-0", "sevennet-0"):
            from sevenn.calculator import SevenNetCalculator

            return SevenNetCalculator("7net-0", device=device)
        if key in ("xtb", "gfn2", "gfn2-xtb", "tblite"):
            from tblite.ase import TBLite

            return TBLite(method="GFN2-xTB", verbosity=0)
    except ImportError as exc:
        raise RuntimeError(
            f"oracle {name!r} is not installed: install the 'oracles' extra "
            f"(pip install -c constraints.txt -e '.[oracles]'); import failed with: {exc}"
        ) from exc
    if ":" in name:
        mod, _, cls = name.partition(":")
        try:
            calc = getattr(importlib.import_module(mod), cls)()
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cannot build calculator {name!r}: {exc}") from exc
        missing = [m for m in ("get_potential_energy", "get_forces") if not callable(getattr(calc, m, None))]
        if missing:
            raise ValueError(
                f"oracle {name!r}: a {type(calc).__name__} is not an ASE calculator (no {', '.join(missing)}); "
                "give 'package.module:Class' of an ase.calculators Calculator"
            )
        return calc
    raise ValueError(f"unknown oracle {name!r}; choose from {sorted(ORACLES)} or give 'package.module:Class'")


def _calc(spec: CalcSpec, device: str) -> tuple[Calculator, str]:
    if isinstance(spec, str):
        return get_calculator(spec, device), spec
    return spec, type(spec).__name__


# --------------------------------------------------------------------------------------------
# structures from short specs
# --------------------------------------------------------------------------------------------

_CRYSTALS = (
    "sc",
    "fcc",
    "bcc",
    "hcp",
    "diamond",
    "zincblende",
    "rocksalt",
    "cesiumchloride",
    "fluorite",
    "wurtzite",
)


def build_structure(spec: str, supercell: Sequence[int] = (1, 1, 1), vacuum: float = 7.0) -> Any:
    """Build a structure from a short spec.

    Specs:
        - a file path (CIF, POSCAR, extxyz ...): read and validated;
        - ``"Cu:fcc:3.61"`` (``element(s):crystal[:a]``; crystals: sc, fcc, bcc, hcp, diamond,
          zincblende, rocksalt, cesiumchloride, fluorite, wurtzite): conventional cubic cell when possible;
        - ``"MoS2:mx2[:a]"``: a 2H transition-metal dichalcogenide monolayer (pbc in-plane);
        - ``"BN:graphene[:a]"``: a honeycomb monolayer (graphene, hBN; pbc in-plane);
        - ``"SrTiO3:perovskite[:a]"``: the cubic 5-atom ABX3 perovskite cell (A at the corner, B at the
          body centre, X on the face centres; a = 3.9 Å by default);
        - an ASE molecule name (``"CH3CH2OH"``, ``"H2O"`` ...; g2 collection).

    Args:
        spec: see above.
        supercell: repetitions along the three cell vectors (ignored for molecules).
        vacuum: vacuum for 2D layers, Å.
    """
    from ase.build import molecule

    path = Path(spec)
    if path.suffix or path.name.upper().startswith(("POSCAR", "CONTCAR")):
        if path.is_file():
            atoms = read_structure(path)
            return atoms.repeat(tuple(int(s) for s in supercell)) if atoms.pbc.any() else atoms
        if path.suffix.lower() in (".cif", ".vasp", ".xyz", ".extxyz", ".json", ".traj"):
            raise FileNotFoundError(f"{path}: no such structure file")
    parts = spec.split(":")
    if len(parts) >= 2:
        try:
            a = float(parts[2]) if len(parts) > 2 and parts[2] else None
            atoms = _crystal(parts[0], parts[1].lower(), a, vacuum)
        except (KeyError, ValueError, RuntimeError, AssertionError) as exc:
            what = f"unknown element {exc.args[0]!r}" if isinstance(exc, KeyError) else str(exc)
            raise ValueError(f"structure spec {spec!r}: {what} (form: Element:crystal[:a], e.g. Cu:fcc:3.61)") from None
        return atoms.repeat(tuple(int(s) for s in supercell))
    from ase.collections import g2

    if spec in g2.names:
        return molecule(spec)
    raise ValueError(
        f"structure spec {spec!r} is neither a file, 'Element:crystal[:a]', 'MX2:mx2[:a]', 'BN:graphene[:a]' "
        "nor an ASE g2 molecule name (e.g. CH3CH2OH, H2O)"
    )


def _crystal(name: str, kind: str, a: float | None, vacuum: float) -> Any:
    from ase.build import bulk, mx2

    if kind == "mx2":
        return mx2(name, "2H", a=a or 3.18, thickness=3.19, vacuum=vacuum)
    if kind == "perovskite":
        return _perovskite(name, a or 3.9)
    if kind == "graphene":
        from ase.build import graphene

        return graphene(formula=name, a=a or 2.46, vacuum=vacuum)
    if kind in _CRYSTALS:
        try:
            return bulk(name, kind, a=a, cubic=kind not in ("hcp", "wurtzite"))
        except (ValueError, RuntimeError, KeyError):
            return bulk(name, kind, a=a)
    raise ValueError(f"unknown crystal {kind!r}; choose from {[*_CRYSTALS, 'mx2', 'graphene', 'perovskite']}")


def _perovskite(formula: str, a: float) -> Any:
    """Cubic ABX3 perovskite from a formula such as ``"SrTiO3"`` (A, B, then three X)."""
    from ase import Atoms
    from ase.symbols import string2symbols

    try:
        symbols = string2symbols(formula)
    except ValueError as exc:
        raise ValueError(f"perovskite {formula!r}: not a chemical formula") from exc
    if len(symbols) != 5 or len(set(symbols[2:])) != 1 or symbols[2] in symbols[:2]:
        raise ValueError(f"perovskite {formula!r}: expected an ABX3 formula such as 'SrTiO3'")
    frac = [(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)]
    return Atoms(symbols, scaled_positions=frac, cell=np.eye(3) * a, pbc=True)


def _remove_random(atoms: Any, n: int, rng: np.random.Generator) -> Any:
    if n <= 0:
        return atoms
    idx = sorted(rng.choice(len(atoms), size=n, replace=False).tolist(), reverse=True)
    for i in idx:
        del atoms[i]
    return atoms


# --------------------------------------------------------------------------------------------
# relaxation
# --------------------------------------------------------------------------------------------


@dataclass
class RelaxResult:
    """What one relaxation did."""

    atoms: Any
    steps: int
    e_initial: float
    e_final: float
    fmax_final: float
    converged: bool
    seconds: float


def _fmax(atoms_or_filter: Any) -> float:
    f = atoms_or_filter.get_forces()
    return float(np.sqrt((f**2).sum(axis=1)).max()) if len(f) else 0.0


def relax(
    atoms: Any,
    calc: Calculator,
    fmax: float = 0.05,
    max_steps: int = 400,
    relax_cell: bool = False,
    optimizer: Literal["fire", "bfgs"] = "fire",
    cell_mask: Sequence[bool] | None = None,
    cell_filter: Literal["frechet", "unitcell"] = "frechet",
) -> RelaxResult:
    """Relax ``atoms`` (a copy) with ``calc``: positions, or positions + cell (``FrechetCellFilter``).

    Args:
        atoms: the starting structure (not modified).
        calc: the ASE calculator.
        fmax: force convergence, eV/Å (with the cell: the filter's generalised forces).
        max_steps: optimiser step limit.
        relax_cell: also relax the cell.
        optimizer: ``"fire"`` or ``"bfgs"``.
        cell_mask: six booleans (Voigt) of the strain components the cell may change (e.g. in-plane
            only for a 2D layer); default all.
        cell_filter: ``"frechet"`` (``FrechetCellFilter``, the default) or ``"unitcell"``
            (``UnitCellFilter``: cheaper per step, a good choice for tiny EMT cells).
    """
    from ase.filters import FrechetCellFilter, UnitCellFilter
    from ase.optimize import BFGS, FIRE

    optimizers, filters = (
        {"fire": FIRE, "bfgs": BFGS},
        {"frechet": FrechetCellFilter, "unitcell": UnitCellFilter},
    )
    if optimizer not in optimizers:
        raise ValueError(f"unknown optimizer {optimizer!r}; use one of {sorted(optimizers)}")
    if cell_filter not in filters:
        raise ValueError(f"unknown cell filter {cell_filter!r}; use one of {sorted(filters)}")
    t0 = time.perf_counter()
    work = atoms.copy()
    work.calc = calc
    e0 = float(work.get_potential_energy())
    mask = list(cell_mask) if cell_mask is not None else None
    target = filters[cell_filter](work, mask=mask) if relax_cell else work
    opt = optimizers[optimizer](target, logfile=None)
    converged = bool(opt.run(fmax=fmax, steps=max_steps))
    e1 = float(work.get_potential_energy())
    if not math.isfinite(e1):
        raise RuntimeError("the oracle returned a non-finite energy during relaxation")
    return RelaxResult(work, int(opt.nsteps), e0, e1, _fmax(target), converged, time.perf_counter() - t0)


def _snapshot(atoms: Any) -> Any:
    """A copy of ``atoms`` carrying its current results on a single-point calculator."""
    from ase.calculators.singlepoint import SinglePointCalculator

    out = atoms.copy()
    out.constraints = []
    res = {k: v for k, v in atoms.calc.results.items() if k in ("energy", "forces", "stress", "free_energy")}
    out.calc = SinglePointCalculator(out, **res)
    return out


# --------------------------------------------------------------------------------------------
# molecular dynamics
# --------------------------------------------------------------------------------------------


@dataclass
class MDConfig:
    """``quintet data md``: Langevin or Nosé–Hoover-chain NVT dynamics, one frame every ``stride`` steps.

    Args:
        out: output extxyz file (energy, forces[, stress], momenta per frame).
        structure: a file, ``"Cu:fcc:3.61"``, ``"MoS2:mx2"`` or a g2 molecule name (see :func:`build_structure`).
        supercell: repetitions of a crystal.
        vacancies: atoms removed at random (seeded) from the crystal.
        rattle: Gaussian displacement of the start positions, Å.
        oracle: calculator name (see :func:`get_calculator`).
        device: device for ML oracles.
        ensemble: ``"langevin"`` or ``"nvt"`` (Nosé–Hoover chain).
        temperature_K: target temperature.
        timestep_fs: MD time step.
        friction_per_fs: Langevin friction.
        tdamp_fs: Nosé–Hoover damping time.
        equilibration_steps: steps run before the first frame (not written).
        steps: production steps; ``steps // stride`` frames are written.
        stride: steps between written frames.
        chunk_frames: frames per resumable chunk.
        stress: also store the stress of periodic cells.
        seed: seeds velocities, vacancies, rattle and the thermostat noise.
    """

    out: Path = Path("md.extxyz")
    structure: str = "Cu:fcc:3.61"
    supercell: tuple[int, int, int] = (3, 3, 3)
    vacancies: int = 0
    rattle: float = 0.0
    oracle: str = "emt"
    device: str = "cpu"
    ensemble: Literal["langevin", "nvt"] = "langevin"
    temperature_K: float = 300.0
    timestep_fs: float = 2.0
    friction_per_fs: float = 0.02
    tdamp_fs: float = 100.0
    equilibration_steps: int = 500
    steps: int = 1000
    stride: int = 10
    chunk_frames: int = 100
    stress: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.stride < 1 or self.steps < self.stride:
            raise ValueError(f"need 1 <= stride <= steps, got stride={self.stride} steps={self.steps}")
        if self.timestep_fs <= 0 or self.temperature_K < 0:
            raise ValueError("timestep_fs must be > 0 and temperature_K >= 0")
        if self.chunk_frames < 1:
            raise ValueError("chunk_frames must be >= 1")


def _md_start(cfg: MDConfig) -> Any:
    atoms = build_structure(cfg.structure, cfg.supercell)
    rng = np.random.default_rng([cfg.seed, 1])
    if cfg.vacancies:
        if cfg.vacancies >= len(atoms):
            raise ValueError(f"cannot remove {cfg.vacancies} atoms from {len(atoms)}")
        atoms = _remove_random(atoms, cfg.vacancies, rng)
    if cfg.rattle > 0:
        atoms.positions += rng.normal(0.0, cfg.rattle, atoms.positions.shape)
    check_atoms(atoms, f"start structure {cfg.structure!r}")
    return atoms


def _dynamics(atoms: Any, cfg: MDConfig, rng: np.random.Generator) -> Any:
    from ase import units

    if cfg.ensemble == "langevin":
        from ase.md.langevin import Langevin

        return Langevin(
            atoms,
            cfg.timestep_fs * units.fs,
            temperature_K=cfg.temperature_K,
            friction=cfg.friction_per_fs / units.fs,
            fixcm=False,
            rng=rng,
        )
    from ase.md.nose_hoover_chain import NoseHooverChainNVT

    return NoseHooverChainNVT(
        atoms, cfg.timestep_fs * units.fs, temperature_K=cfg.temperature_K, tdamp=cfg.tdamp_fs * units.fs
    )


def _md_fingerprint(cfg: MDConfig) -> dict[str, Any]:
    d = config_to_dict(cfg)
    d.pop("out", None)
    d.pop("device", None)
    return d


def run_md(cfg: MDConfig, calc: Calculator | None = None, progress: bool = True) -> Path:
    """Run MD and write ``cfg.out`` (extxyz); resumable, atomic, seeded. Returns the output path.

    Frames are produced in chunks of ``chunk_frames``; each chunk is written atomically into
    ``<out>.parts/`` and starts its thermostat noise from its own seed, so an interrupted run
    continues from the last complete chunk and gives the same frames as an uninterrupted one.
    The finished file is joined atomically; ``<out stem>.config.yaml`` and ``.summary.json`` go
    next to it.

    Raises:
        RuntimeError: the dynamics blew up (non-finite energy or temperature out of [0.1, 1e5] K).
    """
    from tqdm.auto import tqdm

    out = Path(cfg.out)
    parts = out.with_name(out.name + ".parts")
    summary_path = out.with_name(out.stem + ".summary.json")
    want = _md_fingerprint(cfg)
    if out.is_file() and summary_path.is_file() and load_json(summary_path).get("config") == want:
        print(f"{out}: already complete ({load_json(summary_path)['frames']} frames); nothing to do")
        return out
    calc, oracle_name = _calc(calc if calc is not None else cfg.oracle, cfg.device)
    _md_start(cfg)  # a bad structure spec fails here, before anything is written
    out.parent.mkdir(parents=True, exist_ok=True)
    _md_parts(cfg, parts, want)
    n_frames = cfg.steps // cfg.stride
    done = sorted(parts.glob("chunk_*.extxyz"))
    t0 = time.perf_counter()
    atoms = _md_initial(cfg, done, calc)
    if not done and cfg.equilibration_steps > 0:
        _md_equilibrate(atoms, cfg, out, progress)
    initial = min(len(done) * cfg.chunk_frames, n_frames)
    with tqdm(total=n_frames, initial=initial, desc=f"MD {out.name}", unit="frame", disable=not progress) as bar:
        for c in range(len(done), math.ceil(n_frames / cfg.chunk_frames)):
            n_here = min(cfg.chunk_frames, n_frames - c * cfg.chunk_frames)
            write_structure(parts / f"chunk_{c:05d}.extxyz", _md_chunk(atoms, cfg, c, n_here, out, oracle_name, bar))
    _md_join(out, parts, summary_path, {"config": want, "oracle": oracle_name}, t0)
    return out


def _md_parts(cfg: MDConfig, parts: Path, want: dict[str, Any]) -> None:
    """The chunk folder of a run: kept when it holds chunks of the same settings, else started over."""
    state_file = parts / "config.json"
    if parts.is_dir() and state_file.is_file() and load_json(state_file) != want:
        print(f"{parts}: chunks from different settings; starting over")
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    atomic_save_json(state_file, want)
    out = Path(cfg.out)
    save_config(cfg, out.with_name(out.stem + ".config.yaml"))


def _md_initial(cfg: MDConfig, done: list[Path], calc: Calculator) -> Any:
    """The starting atoms: the last frame of the last complete chunk, or fresh Maxwell-Boltzmann velocities."""
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation

    atoms = _md_start(cfg)
    if done:
        last = read_structures(done[-1], index=-1)[0]
        atoms.positions = last.positions
        atoms.set_momenta(last.get_momenta())
        atoms.set_cell(last.cell, scale_atoms=False)
    else:
        rng = np.random.default_rng([cfg.seed, 2])
        MaxwellBoltzmannDistribution(atoms, temperature_K=cfg.temperature_K, rng=rng)
        Stationary(atoms)
        if not atoms.pbc.any():
            ZeroRotation(atoms)
    if cfg.ensemble == "langevin":
        from ase.constraints import FixCom

        atoms.set_constraint(FixCom())  # the centre of mass stays put (Langevin noise would move it)
    atoms.calc = calc
    return atoms


def _md_equilibrate(atoms: Any, cfg: MDConfig, out: Path, progress: bool) -> None:
    from tqdm.auto import tqdm

    dyn = _dynamics(atoms, cfg, np.random.default_rng([cfg.seed, 3]))
    left = cfg.equilibration_steps
    with tqdm(total=left, desc="equilibrating", unit="step", disable=not progress) as ebar:
        while left > 0:
            n = min(50, left)
            dyn.run(n)
            _check_md(atoms, out)
            left -= n
            ebar.update(n)


def _md_chunk(atoms: Any, cfg: MDConfig, c: int, n_here: int, out: Path, oracle_name: str, bar: Any) -> list[Any]:
    """The frames of chunk ``c`` (its thermostat noise from its own seed, so a resumed run matches)."""
    frames = []
    dyn = _dynamics(atoms, cfg, np.random.default_rng([cfg.seed, 100 + c]))
    periodic = bool(atoms.pbc.any())
    for k in range(n_here):
        dyn.run(cfg.stride)
        _check_md(atoms, out)
        if cfg.stress and periodic:
            atoms.get_stress()
        snap = _snapshot(atoms)
        snap.info.update(
            step=(c * cfg.chunk_frames + k + 1) * cfg.stride,
            temperature_K=float(atoms.get_temperature()),
            oracle=oracle_name,
        )
        frames.append(snap)
        bar.update(1)
    return frames


def _md_join(out: Path, parts: Path, summary_path: Path, head: dict[str, Any], t0: float) -> None:
    """Join the chunks into ``out`` atomically, write the summary, remove the chunk folder."""
    buf = io.StringIO()
    for ch in sorted(parts.glob("chunk_*.extxyz")):
        buf.write(ch.read_text())
    atomic_write_text(out, buf.getvalue())
    head = {**head, "sha256": file_sha256(out)}  # TrajectoryDataset verifies the file against it
    frames = read_structures(out)
    energies = np.array([f.get_potential_energy() for f in frames])
    temps = np.array([f.info.get("temperature_K", np.nan) for f in frames])
    atomic_save_json(
        summary_path,
        {
            **head,
            "frames": len(frames),
            "atoms": len(frames[0]),
            "energy_mean": float(energies.mean()),
            "energy_std": float(energies.std()),
            "temperature_mean_K": float(np.nanmean(temps)),
            "seconds_this_run": round(time.perf_counter() - t0, 2),
        },
    )
    shutil.rmtree(parts)


def _check_md(atoms: Any, out: Path) -> None:
    e = atoms.get_potential_energy()
    t = atoms.get_temperature()
    if not (math.isfinite(e) and 0.1 <= t <= 1e5):
        raise RuntimeError(f"{out}: MD left the physical range (E={e}, T={t:.1f} K); lower the time step")


# --------------------------------------------------------------------------------------------
# pair sets: shared machinery
# --------------------------------------------------------------------------------------------


def _write_meta_rows(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    atomic_write_text(path, buf.getvalue())


def _check_settings(folder: Path, want: dict[str, Any]) -> None:
    """Refuse to mix pairs made with different settings in one folder (resume needs the same config)."""
    path = folder / "generation.json"
    if path.is_file():
        have = load_json(path)
        if have != want:
            diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k) and k != "n")
            if diff:
                raise ValueError(
                    f"{folder}: holds pairs made with other settings (differs in {diff}); "
                    "use another output folder or the same settings to resume"
                )
    atomic_save_json(path, want)


def _run_pairs(
    folder: Path,
    ids: list[str],
    make_one: Callable[[int, str], dict[str, Any]],
    columns: Sequence[str],
    desc: str,
    progress: bool,
) -> list[dict[str, str]]:
    from tqdm.auto import tqdm

    meta_path = folder / "meta.csv"
    rows = read_csv(meta_path)
    have = {r["atoms_id"] for r in rows}
    todo = [(k, i) for k, i in enumerate(ids) if i not in have]
    if have:
        print(f"{folder}: {len(have)} pairs already done, {len(todo)} to make")
    for k, i in tqdm(todo, desc=desc, unit="pair", disable=not progress):
        try:
            row = make_one(k, i)
        except (RuntimeError, ValueError, FloatingPointError) as exc:
            raise RuntimeError(
                f"{folder}: pair {i} failed ({exc}); the {len(rows)} pairs before it are kept, rerun to resume"
            ) from exc
        rows.append({c: row.get(c, "") for c in columns})
        _write_meta_rows(meta_path, rows, columns)
    write_dataset_manifest(folder)  # loaders verify the pairs against it
    return rows


def _fmt(x: float, nd: int = 5) -> str:
    return f"{x:.{nd}f}"


# --------------------------------------------------------------------------------------------
# relaxation pairs by substitution / strain / rattle
# --------------------------------------------------------------------------------------------


@dataclass
class RelaxPairsConfig:
    """``quintet data relax-pairs``: prototype → substitution, strain, rattle → oracle relaxation.

    Writes the DeepRelax custom layout: ``out/CIF/<id>_unrelaxed.cif``, ``out/CIF/<id>_relaxed.cif``,
    ``out/meta.csv`` (atoms_id, formula, n_atoms, oracle, steps, e_unrelaxed, e_relaxed, fmax_final,
    converged, vol_unrelaxed, vol_relaxed, seconds).

    Args:
        out: output folder.
        n: number of pairs.
        prototypes: structure specs (files or ``"Cu:fcc:3.61"``; see :func:`build_structure`), drawn
            at random per pair.
        supercell: repetitions of each prototype.
        supercells: when given, one of these repetitions is drawn per pair instead of ``supercell``.
        elements: substitution pool (one drawn per substituted site).
        substitute_fraction: probability that a site is substituted.
        sublattices: ordered substitution by sublattice, replacing the per-site draw from
            ``elements``: entries ``"Site:El1,El2,...[/k]"`` draw ``k`` distinct elements (default 1)
            from the pool for the prototype's ``Site`` atoms and give each an equal share of those
            sites, in random order. The double-perovskite recipe of the shared oxide set is
            ``["Sr:Ca,Sr,Ba,La,K,Na", "Ti:Ti,Zr,Mn,Fe,Co,Ni,Nb,Sn,Cr,V/2"]`` on ``SrTiO3:perovskite``.
        strain: largest |component| of the random symmetric strain.
        rattle: Gaussian displacement of positions, Å.
        relax_cell: relax positions and cell or positions only.
        cell_filter: ``"frechet"`` (FrechetCellFilter) or ``"unitcell"`` (UnitCellFilter).
        fmax: force convergence, eV/Å.
        max_steps: optimiser step limit.
        optimizer: ``"fire"`` or ``"bfgs"``.
        oracle: calculator name.
        device: device for ML oracles.
        seed: seeds every random choice (pair k uses ``(seed, k)``).
        prefix: id prefix (default ``<oracle>_s<seed>``).
    """

    out: Path = Path("relax_pairs")
    n: int = 20
    prototypes: list[str] = field(
        default_factory=lambda: ["Cu:fcc:3.61", "Ni:fcc:3.52", "Pd:fcc:3.89", "Ag:fcc:4.09"]
    )
    supercell: tuple[int, int, int] = (1, 1, 1)
    supercells: list[tuple[int, int, int]] = field(default_factory=list)
    elements: list[str] = field(default_factory=lambda: ["Cu", "Ni", "Pd", "Ag", "Au", "Pt", "Al"])
    substitute_fraction: float = 0.5
    sublattices: list[str] = field(default_factory=list)
    strain: float = 0.04
    rattle: float = 0.1
    relax_cell: bool = True
    cell_filter: Literal["frechet", "unitcell"] = "frechet"
    fmax: float = 0.05
    max_steps: int = 400
    optimizer: Literal["fire", "bfgs"] = "fire"
    oracle: str = "emt"
    device: str = "cpu"
    seed: int = 0
    prefix: str = ""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("n must be >= 1")
        if not self.prototypes:
            raise ValueError("prototypes must not be empty")
        if not 0 <= self.substitute_fraction <= 1:
            raise ValueError("substitute_fraction must be in [0, 1]")
        for rep in [self.supercell, *self.supercells]:
            if len(rep) != 3 or min(int(r) for r in rep) < 1:
                raise ValueError(f"supercell {rep!r}: need three repetitions >= 1")
        _parse_sublattices(self.sublattices)


@dataclass(frozen=True)
class Sublattice:
    """One ordered-substitution rule: the prototype's ``site`` atoms get ``k`` distinct elements of ``pool``."""

    site: str
    pool: tuple[str, ...]
    k: int = 1


def _parse_sublattices(entries: Sequence[str]) -> list[Sublattice]:
    """Parse ``"Site:El1,El2[/k]"`` entries (see :class:`RelaxPairsConfig`)."""
    out: list[Sublattice] = []
    for e in entries:
        rule, _, k_text = e.partition("/")
        try:
            k = int(k_text) if k_text.strip() else 1
        except ValueError:
            raise ValueError(f"sublattices entry {e!r}: '/k' must be an integer") from None
        ((site, pool),) = _parse_substitutions([rule], "sublattices", "Ti:Ti,Zr,Nb/2").items()
        if not 1 <= k <= len(set(pool)):
            raise ValueError(f"sublattices entry {e!r}: k={k} needs 1 <= k <= {len(set(pool))} distinct elements")
        if any(s.site == site for s in out):
            raise ValueError(f"sublattices: site {site!r} given twice")
        out.append(Sublattice(site, tuple(pool), k))
    return out


def _check_sublattices(atoms: Any, rules: Sequence[Sublattice], source: str) -> None:
    symbols = atoms.get_chemical_symbols()
    for r in rules:
        m = symbols.count(r.site)
        if m < r.k:
            raise ValueError(f"{source}: sublattice {r.site!r} has {m} sites, too few for {r.k} elements")


def _substitute_sublattices(atoms: Any, rng: np.random.Generator, rules: Sequence[Sublattice]) -> Any:
    """Ordered substitution: each rule's sites (by the prototype's element) get ``k`` drawn elements."""
    from ase.data import atomic_numbers

    atoms = atoms.copy()
    symbols = np.array(atoms.get_chemical_symbols())
    for r in rules:
        sites = np.flatnonzero(symbols == r.site)
        chosen = rng.choice(sorted(set(r.pool)), size=r.k, replace=False)
        for el, group in zip(chosen, np.array_split(rng.permutation(sites), r.k), strict=True):
            atoms.numbers[group] = atomic_numbers[str(el)]
    return atoms


def _perturb(
    atoms: Any, rng: np.random.Generator, elements: Sequence[str], frac: float, strain: float, rattle: float
) -> Any:
    from ase.data import atomic_numbers

    atoms = atoms.copy()
    if elements and frac > 0:
        pool = np.array([atomic_numbers[e] for e in elements])
        hit = rng.random(len(atoms)) < frac
        atoms.numbers[hit] = rng.choice(pool, size=int(hit.sum()))
    if strain > 0:
        eps = rng.uniform(-strain, strain, (3, 3))
        eps = 0.5 * (eps + eps.T)
        pbc = atoms.pbc
        eps[~pbc, :] = 0.0
        eps[:, ~pbc] = 0.0
        atoms.set_cell(atoms.cell[:] @ (np.eye(3) + eps), scale_atoms=True)
    if rattle > 0:
        atoms.positions += rng.normal(0.0, rattle, atoms.positions.shape)
    return atoms


def make_relax_pairs(cfg: RelaxPairsConfig, calc: Calculator | None = None, progress: bool = True) -> Path:
    """Generate relaxation pairs into ``cfg.out`` (resumable: ids already in ``meta.csv`` are skipped).

    Returns:
        the output folder.
    """
    out = Path(cfg.out)
    calc, oracle_name = _calc(calc if calc is not None else cfg.oracle, cfg.device)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)  # a killed run's half-written files
    settings = config_to_dict(cfg)
    settings.pop("out")
    settings.pop("device")
    for key in ("supercells", "sublattices"):  # folders made before these options existed still resume
        if not settings[key]:
            settings.pop(key)
    _check_settings(out, settings)
    save_config(cfg, out / "config.yaml")
    rules = _parse_sublattices(cfg.sublattices)
    reps = [tuple(int(r) for r in rep) for rep in cfg.supercells]
    protos = [build_structure(p, (1, 1, 1) if reps else cfg.supercell) for p in cfg.prototypes]
    for p, proto in zip(cfg.prototypes, protos, strict=True):
        for rep in reps or [(1, 1, 1)]:
            _check_sublattices(proto.repeat(rep), rules, f"prototype {p!r} x {rep}")
    prefix = cfg.prefix or f"{oracle_name}_s{cfg.seed}"
    ids = [f"{prefix}_{k:05d}" for k in range(cfg.n)]
    columns = [
        "atoms_id",
        "formula",
        "n_atoms",
        "oracle",
        "steps",
        "e_unrelaxed",
        "e_relaxed",
        "fmax_final",
        "converged",
        "vol_unrelaxed",
        "vol_relaxed",
        "seconds",
    ]

    def make_one(k: int, pid: str) -> dict[str, Any]:
        rng = np.random.default_rng([cfg.seed, k])
        proto = protos[int(rng.integers(len(protos)))]
        if reps:
            proto = proto.repeat(reps[int(rng.integers(len(reps)))])
        if rules:
            proto = _substitute_sublattices(proto, rng, rules)
        frac = 0.0 if rules else cfg.substitute_fraction
        unrelaxed = _perturb(proto, rng, cfg.elements, frac, cfg.strain, cfg.rattle)
        check_atoms(unrelaxed, f"pair {pid}")
        mask = None if unrelaxed.pbc.all() else [True, True, False, False, False, True]  # 2D: in-plane only
        res = relax(
            unrelaxed, calc, cfg.fmax, cfg.max_steps, cfg.relax_cell, cfg.optimizer, mask, cfg.cell_filter
        )
        write_structure(out / "CIF" / f"{pid}_relaxed.cif", res.atoms)
        write_structure(out / "CIF" / f"{pid}_unrelaxed.cif", unrelaxed)
        return {
            "atoms_id": pid,
            "formula": unrelaxed.get_chemical_formula(),
            "n_atoms": len(unrelaxed),
            "oracle": oracle_name,
            "steps": res.steps,
            "e_unrelaxed": _fmt(res.e_initial),
            "e_relaxed": _fmt(res.e_final),
            "fmax_final": _fmt(res.fmax_final, 4),
            "converged": int(res.converged),
            "vol_unrelaxed": _fmt(unrelaxed.get_volume(), 3) if unrelaxed.pbc.all() else "",
            "vol_relaxed": _fmt(res.atoms.get_volume(), 3) if res.atoms.pbc.all() else "",
            "seconds": _fmt(res.seconds, 2),
        }

    _run_pairs(out, ids, make_one, columns, f"relax pairs ({oracle_name})", progress)
    return out


# --------------------------------------------------------------------------------------------
# point-defect pairs on a pristine supercell (2DMD layout)
# --------------------------------------------------------------------------------------------


@dataclass
class DefectPairsConfig:
    """``quintet data defect-pairs``: vacancies/substitutions on a pristine supercell, then relaxation.

    Writes the 2DMD layout into ``out/<name>/``: ``<name>.cif`` (the unit cell, relaxed by the oracle
    when ``relax_host``), ``<name>_pristine_supercell.cif``, ``CIF/<id>_{un}relaxed.cif`` (unrelaxed =
    every atom exactly on its pristine site; relaxed = positions relaxed, cell fixed) and ``meta.csv``
    (atoms_id, n_atoms, defects, oracle, steps, e_unrelaxed, e_relaxed, fmax_final, converged, seconds).

    Args:
        out: output root (one folder per host).
        host: the pristine unit cell: a file or a spec such as ``"Cu:fcc:3.61"`` or ``"MoS2:mx2:3.18"``.
        name: host folder name (default: the unit cell's formula).
        supercell: repetitions of the unit cell.
        relax_host: relax the unit cell (positions + cell; in-plane only for 2D layers) first.
        n: number of defect structures.
        min_defects: fewest defects per structure.
        max_defects: most defects per structure.
        vacancy_prob: probability that a defect is a vacancy (else a substitution).
        substitutions: ``"El:Sub1,Sub2"`` entries: what each host element may be replaced by.
        fmax: force convergence, eV/Å.
        max_steps: optimiser step limit.
        optimizer: ``"fire"`` or ``"bfgs"``.
        oracle: calculator name.
        device: device for ML oracles.
        seed: seeds every random choice.
    """

    out: Path = Path("defects")
    host: str = "Cu:fcc:3.61"
    name: str = ""
    supercell: tuple[int, int, int] = (3, 3, 3)
    relax_host: bool = True
    n: int = 20
    min_defects: int = 1
    max_defects: int = 2
    vacancy_prob: float = 0.5
    substitutions: list[str] = field(default_factory=lambda: ["Cu:Ni,Ag,Au,Pd"])
    fmax: float = 0.05
    max_steps: int = 400
    optimizer: Literal["fire", "bfgs"] = "fire"
    oracle: str = "emt"
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.min_defects <= self.max_defects:
            raise ValueError("need 1 <= min_defects <= max_defects")
        if not 0 <= self.vacancy_prob <= 1:
            raise ValueError("vacancy_prob must be in [0, 1]")


def _parse_substitutions(
    entries: Sequence[str], key: str = "substitutions", example: str = "Mo:W,Nb"
) -> dict[str, list[str]]:
    """Parse ``"Host:El1,El2"`` entries into ``{host: [elements]}``; every name must be an element.
    ``key`` and ``example`` name the config key in the error messages."""
    from ase.data import atomic_numbers

    out: dict[str, list[str]] = {}
    for e in entries:
        host, _, subs = e.partition(":")
        els = [s.strip() for s in subs.split(",") if s.strip()]
        for el in [host.strip(), *els]:
            if el not in atomic_numbers:
                raise ValueError(f"{key} entry {e!r}: unknown element {el!r}")
        if not els:
            raise ValueError(f"{key} entry {e!r} must look like {example!r}")
        out[host.strip()] = els
    return out


_DEFECT_COLUMNS = [
    "atoms_id", "n_atoms", "defects", "oracle", "steps", "e_unrelaxed", "e_relaxed", "fmax_final", "converged",
    "seconds",
]  # fmt: skip


def make_defect_pairs(cfg: DefectPairsConfig, calc: Calculator | None = None, progress: bool = True) -> Path:
    """Generate point-defect pairs on a pristine supercell (2DMD layout); resumable. Returns the host folder."""
    calc, oracle_name = _calc(calc if calc is not None else cfg.oracle, cfg.device)
    unit = build_structure(cfg.host)
    name = cfg.name or unit.get_chemical_formula(mode="metal", empirical=True)
    folder = Path(cfg.out) / name
    folder.mkdir(parents=True, exist_ok=True)
    settings = config_to_dict(cfg)
    settings.pop("out")
    settings.pop("device")
    _check_settings(folder, settings)
    save_config(cfg, folder / "config.yaml")
    subs = _parse_substitutions(cfg.substitutions)
    pristine = _defect_host(cfg, unit, calc, folder, name)
    ids = [f"{name}_s{cfg.seed}_{k:04d}" for k in range(cfg.n)]

    def make_one(k: int, pid: str) -> dict[str, Any]:
        atoms, tags = _place_defects(pristine, subs, cfg, np.random.default_rng([cfg.seed, k]))
        res = relax(atoms, calc, cfg.fmax, cfg.max_steps, relax_cell=False, optimizer=cfg.optimizer)
        write_structure(folder / "CIF" / f"{pid}_relaxed.cif", res.atoms)
        write_structure(folder / "CIF" / f"{pid}_unrelaxed.cif", atoms)
        return {
            "atoms_id": pid, "n_atoms": len(atoms), "defects": ";".join(tags), "oracle": oracle_name,
            "steps": res.steps, "e_unrelaxed": _fmt(res.e_initial), "e_relaxed": _fmt(res.e_final),
            "fmax_final": _fmt(res.fmax_final, 4), "converged": int(res.converged), "seconds": _fmt(res.seconds, 2),
        }  # fmt: skip

    present = set(pristine.get_chemical_symbols())
    missing = sorted(set(subs) - present)
    if missing:
        print(f"note: substitutions for {missing} are unused: the host has only {sorted(present)}")
    _run_pairs(folder, ids, make_one, _DEFECT_COLUMNS, f"defect pairs {name} ({oracle_name})", progress)
    return folder


def _defect_host(cfg: DefectPairsConfig, unit: Any, calc: Calculator, folder: Path, name: str) -> Any:
    """The pristine supercell, as later runs will read it (CIF precision): the unit cell relaxed (cell too,
    in-plane only for a 2D host) when ``relax_host``, written once as ``<name>.cif`` and repeated."""
    unit_path = folder / f"{name}.cif"
    if not unit_path.is_file():
        if cfg.relax_host:
            mask = [True, True, False, False, False, True] if not unit.pbc.all() else None
            unit = relax(unit, calc, fmax=min(cfg.fmax, 0.01), max_steps=1000, relax_cell=True, cell_mask=mask).atoms
            unit.calc = None
        write_structure(unit_path, unit)
    unit = read_structure(unit_path)
    sup_path = folder / f"{name}_pristine_supercell.cif"
    if not sup_path.is_file():
        write_structure(sup_path, unit.repeat(tuple(int(s) for s in cfg.supercell)))
    return read_structure(sup_path)


def _place_defects(
    pristine: Any, subs: dict[str, list[str]], cfg: DefectPairsConfig, rng: np.random.Generator
) -> tuple[Any, list[str]]:
    """A copy of ``pristine`` with ``min_defects..max_defects`` vacancies/substitutions, and their tags."""
    from ase.data import atomic_numbers

    n_def = int(rng.integers(cfg.min_defects, cfg.max_defects + 1))
    sites = rng.choice(len(pristine), size=n_def, replace=False)
    atoms = pristine.copy()
    tags, vac = [], []
    for site in sites.tolist():
        el = atoms.get_chemical_symbols()[site]
        options = subs.get(el, [])
        if rng.random() < cfg.vacancy_prob or not options:
            vac.append(site)
            tags.append(f"vac_{el}")
        else:
            new = options[int(rng.integers(len(options)))]
            atoms.numbers[site] = atomic_numbers[new]
            tags.append(f"sub_{el}_{new}")
    for site in sorted(vac, reverse=True):
        del atoms[site]
    return atoms, tags


def describe_oracles() -> str:
    """One line per built-in oracle with whether it is importable here."""
    lines = []
    for name, what in ORACLES.items():
        mod = {"emt": "ase", "chgnet": "chgnet", "sevennet": "sevenn", "xtb": "tblite"}[name]
        ok = importlib.util.find_spec(mod) is not None
        lines.append(f"{name:<9} {'available' if ok else 'missing (extra: oracles)':<25} {what}")
    return "\n".join(lines)
