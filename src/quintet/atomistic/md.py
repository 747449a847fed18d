"""Molecular dynamics through ASE with any calculator: NVE, Langevin, Nosé–Hoover chain, Berendsen,
and NPT (Berendsen isotropic / anisotropic barostat, Nosé–Hoover + Parrinello–Rahman).

The run starts from the velocities stored in the structure (extxyz ``momenta``) when it has any,
otherwise from a Maxwell–Boltzmann draw at ``temperature_K`` (``velocities`` chooses). After an NVE
run the total-energy drift (a straight-line fit, meV/atom/ps) is checked against
``drift_warn_meV_atom_ps`` (1 by default, the usual bar for a conservative potential): above it a
warning says so and ``summary.json`` records ``drift_warning: true``.

Frames are appended to an extxyz file and thermodynamics to a CSV as the run goes (flushed every
write), so a run that is stopped — by the user, or by the blow-up guards below — keeps
everything written so far. Guards: temperature outside ``[t_min_K, t_max_K]``, two atoms closer
than ``min_distance`` Å, or a non-finite energy stop the run cleanly with a message.
"""

from __future__ import annotations

import csv
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from quintet.io import atomic_save_json

__all__ = ["MDConfig", "MDResult", "run_md", "thermo_plot"]

Ensemble = Literal[
    "nve", "langevin", "nose_hoover", "berendsen", "npt_berendsen", "npt_berendsen_aniso", "npt_nose_hoover"
]
NPT_ENSEMBLES = ("npt_berendsen", "npt_berendsen_aniso", "npt_nose_hoover")


@dataclass
class MDConfig:
    """An MD run.

    Args:
        ensemble: ``nve`` (velocity Verlet), ``langevin``, ``nose_hoover`` (NVT chain), ``berendsen`` (NVT),
            ``npt_berendsen`` (isotropic barostat), ``npt_berendsen_aniso`` (each cell axis on its own) or
            ``npt_nose_hoover`` (ASE's ``MelchionnaNPT``: Nosé–Hoover + Parrinello–Rahman; upper-triangular cells).
            NPT needs a calculator with stress and a fully periodic cell.
        temperature_K: initial (Maxwell–Boltzmann) and thermostat temperature.
        velocities: ``auto`` (the structure's own velocities when it has non-zero ones, else
            Maxwell–Boltzmann) or ``maxwell_boltzmann`` (always draw new ones).
        pressure_bar: NPT target pressure (bar).
        pdamp_fs: NPT barostat time constant (fs).
        compressibility_per_bar: Berendsen barostat compressibility (water: 4.57e-5 /bar).
        bulk_modulus_GPa: sets the Parrinello–Rahman barostat mass of ``npt_nose_hoover``
            (``pfactor = pdamp² · B``).
        drift_warn_meV_atom_ps: after NVE, warn when |drift| exceeds this.
        timestep_fs: time step in fs.
        steps: number of steps.
        friction_per_fs: Langevin friction (1/fs).
        tdamp_fs: Nosé–Hoover / Berendsen time constant (fs).
        write_every: write a frame and a thermo line every this many steps.
        seed: velocity initialisation and Langevin noise.
        t_min_K, t_max_K: stop when the temperature leaves this range.
        min_distance: stop when two atoms come closer than this (Å).
        out: output folder (``trajectory.extxyz``, ``thermo.csv``, ``thermo.png``, ``summary.json``).
    """

    ensemble: Ensemble = "langevin"
    temperature_K: float = 300.0
    timestep_fs: float = 0.5
    steps: int = 1000
    friction_per_fs: float = 0.01
    tdamp_fs: float = 50.0
    write_every: int = 10
    seed: int = 0
    t_min_K: float = 0.1
    t_max_K: float = 1e5
    min_distance: float = 0.5
    out: str = "runs/md"
    velocities: Literal["auto", "maxwell_boltzmann"] = "auto"
    pressure_bar: float = 1.01325
    pdamp_fs: float = 500.0
    compressibility_per_bar: float = 4.57e-5
    bulk_modulus_GPa: float = 100.0
    drift_warn_meV_atom_ps: float = 1.0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.timestep_fs <= 0 or self.write_every < 1:
            raise ValueError("steps >= 0, timestep_fs > 0 and write_every >= 1 are required")
        if min(self.pdamp_fs, self.compressibility_per_bar, self.bulk_modulus_GPa) <= 0:
            raise ValueError("md.pdamp_fs, md.compressibility_per_bar and md.bulk_modulus_GPa must be > 0")


@dataclass
class MDResult:
    """What happened: steps done, why it stopped, timing, and the files written."""

    steps_done: int
    stopped_early: bool
    reason: str
    steps_per_second: float
    trajectory: Path
    thermo_csv: Path
    thermo_png: Path | None
    energy_drift_meV_atom_ps: float | None
    drift_warning: bool = False
    velocities_from: str = "maxwell_boltzmann"


def _min_distance(atoms: Any) -> float:
    from quintet.atomistic.neighbors import neighbor_list

    if len(atoms) < 2:
        return math.inf
    ei, sh = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, 1.0)
    if ei.shape[1] == 0:
        return math.inf
    d = atoms.positions[ei[1]] - atoms.positions[ei[0]] + sh @ atoms.cell.array
    return float(np.linalg.norm(d, axis=1).min())


def _integrator(atoms: Any, cfg: MDConfig) -> Any:
    from ase import units

    dt = cfg.timestep_fs * units.fs
    if cfg.ensemble == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, timestep=dt)
    if cfg.ensemble == "langevin":
        from ase.md.langevin import Langevin

        return Langevin(
            atoms,
            timestep=dt,
            temperature_K=cfg.temperature_K,
            friction=cfg.friction_per_fs / units.fs,
            fixcm=False,
            rng=np.random.default_rng(cfg.seed),
        )
    if cfg.ensemble == "nose_hoover":
        from ase.md.nose_hoover_chain import NoseHooverChainNVT

        return NoseHooverChainNVT(
            atoms, timestep=dt, temperature_K=cfg.temperature_K, tdamp=cfg.tdamp_fs * units.fs
        )
    if cfg.ensemble == "berendsen":
        from ase.md.nvtberendsen import NVTBerendsen

        return NVTBerendsen(atoms, timestep=dt, temperature_K=cfg.temperature_K, taut=cfg.tdamp_fs * units.fs)
    if cfg.ensemble in NPT_ENSEMBLES:
        return _npt_integrator(atoms, cfg)
    raise ValueError(f"unknown ensemble {cfg.ensemble!r}; choose one of {', '.join(get_args(Ensemble))}")


def _npt_integrator(atoms: Any, cfg: MDConfig) -> Any:
    from ase import units

    dt = cfg.timestep_fs * units.fs
    if cfg.ensemble == "npt_nose_hoover":
        from ase.md.melchionna import MelchionnaNPT

        pfactor = (cfg.pdamp_fs * units.fs) ** 2 * cfg.bulk_modulus_GPa * units.GPa
        return MelchionnaNPT(
            atoms, timestep=dt, temperature_K=cfg.temperature_K, externalstress=cfg.pressure_bar * units.bar,
            ttime=cfg.tdamp_fs * units.fs, pfactor=pfactor,
        )  # fmt: skip
    from ase.md.nptberendsen import Inhomogeneous_NPTBerendsen, NPTBerendsen

    cls = NPTBerendsen if cfg.ensemble == "npt_berendsen" else Inhomogeneous_NPTBerendsen
    return cls(
        atoms, timestep=dt, temperature_K=cfg.temperature_K, pressure_au=cfg.pressure_bar * units.bar,
        taut=cfg.tdamp_fs * units.fs, taup=cfg.pdamp_fs * units.fs,
        compressibility_au=cfg.compressibility_per_bar / units.bar,
    )  # fmt: skip


def _check_npt(atoms: Any, calculator: Any, cfg: MDConfig) -> None:
    if cfg.ensemble not in NPT_ENSEMBLES:
        return
    if not atoms.pbc.all():
        raise ValueError(f"md.ensemble={cfg.ensemble} needs a fully periodic cell (pbc={atoms.pbc.tolist()})")
    if (
        getattr(calculator, "supports_stress", True) is False
        or "stress" not in calculator.implemented_properties
    ):
        raise ValueError(
            f"md.ensemble={cfg.ensemble} needs stress: use a model trained with forces='conservative'"
        )


def _start_velocities(atoms: Any, cfg: MDConfig) -> str:
    """Keep the structure's velocities (``auto`` and non-zero) or draw Maxwell–Boltzmann ones; says which."""
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation

    if cfg.velocities == "auto" and np.abs(atoms.get_momenta()).max(initial=0.0) > 0:
        return "structure"
    MaxwellBoltzmannDistribution(atoms, temperature_K=cfg.temperature_K, rng=np.random.default_rng(cfg.seed))
    Stationary(atoms)
    if not atoms.pbc.any():
        ZeroRotation(atoms)
    return "maxwell_boltzmann"


def _drift(rows: list[dict[str, float]], n: int) -> float | None:
    """Slope of the total energy per atom against time (meV/atom/ps), from a straight-line fit."""
    if len(rows) < 3:
        return None
    t_ps = np.array([r["time_fs"] for r in rows]) / 1000.0
    e = np.array([r["E_tot_eV"] for r in rows]) * 1000.0 / n
    return float(np.polyfit(t_ps, e, 1)[0]) if t_ps[-1] > t_ps[0] else None


def _drift_warning(cfg: MDConfig, drift: float | None) -> bool:
    if cfg.ensemble != "nve" or drift is None or abs(drift) <= cfg.drift_warn_meV_atom_ps:
        return False
    warnings.warn(
        f"NVE total-energy drift {drift:.2f} meV/atom/ps exceeds md.drift_warn_meV_atom_ps="
        f"{cfg.drift_warn_meV_atom_ps}: use a conservative model (forces='conservative'), a smaller "
        "md.timestep_fs, or float64",
        RuntimeWarning,
        stacklevel=3,
    )
    return True


class _Recorder:
    """Writes a thermo row and a trajectory frame, and applies the blow-up guards."""

    FIELDS = ("step", "time_fs", "T_K", "E_pot_eV", "E_kin_eV", "E_tot_eV")

    def __init__(self, atoms: Any, cfg: MDConfig, fcsv: Any, traj_path: Path) -> None:
        self.atoms, self.cfg, self.fcsv, self.traj_path = atoms, cfg, fcsv, traj_path
        self.writer = csv.DictWriter(fcsv, fieldnames=list(self.FIELDS))
        self.writer.writeheader()
        self.rows: list[dict[str, float]] = []

    def __call__(self, step: int) -> str | None:
        """Record ``step``; the reason to stop, or ``None``."""
        import ase.io

        atoms, cfg = self.atoms, self.cfg
        epot = float(atoms.get_potential_energy())
        ekin = float(atoms.get_kinetic_energy())
        temp = float(atoms.get_temperature())
        row = dict(
            zip(self.FIELDS, (step, step * cfg.timestep_fs, temp, epot, ekin, epot + ekin), strict=True)
        )
        self.rows.append(row)
        self.writer.writerow(row)
        self.fcsv.flush()
        ase.io.write(self.traj_path, atoms, format="extxyz", append=True)
        if not math.isfinite(epot) or not math.isfinite(temp):
            return f"non-finite energy or temperature at step {step}"
        if step > 0 and not cfg.t_min_K <= temp <= cfg.t_max_K:
            return f"temperature {temp:.1f} K left [{cfg.t_min_K}, {cfg.t_max_K}] K at step {step}"
        dmin = _min_distance(atoms)
        if dmin < cfg.min_distance:
            return f"two atoms came {dmin:.3f} Å apart (< {cfg.min_distance} Å) at step {step}"
        return None


def _loop(atoms: Any, dyn: Any, cfg: MDConfig, record: _Recorder, progress: bool) -> tuple[int, str | None]:
    from tqdm.auto import tqdm

    done = 0
    bad = record(0)
    bar = tqdm(total=cfg.steps, desc=f"MD {cfg.ensemble}", unit="step", disable=not progress)
    while bad is None and done < cfg.steps:
        k = min(cfg.write_every, cfg.steps - done)
        dyn.run(k)
        done += k
        bar.update(k)
        bar.set_postfix(T=f"{atoms.get_temperature():.0f}K")
        bad = record(done)
    bar.close()
    return done, bad


def run_md(atoms: Any, calculator: Any, cfg: MDConfig, progress: bool = True) -> MDResult:
    """Run MD on ``atoms`` (modified in place) with ``calculator``; see :class:`MDConfig`."""
    from quintet.config import save_config

    if len(atoms) == 0:
        raise ValueError("empty structure: no atoms to simulate")
    _check_npt(atoms, calculator, cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "md_config.yaml")
    traj_path, csv_path = out / "trajectory.extxyz", out / "thermo.csv"
    for p in (traj_path, csv_path):
        p.unlink(missing_ok=True)
    atoms.calc = calculator
    velocities_from = _start_velocities(atoms, cfg)
    dyn = _integrator(atoms, cfg)
    n = len(atoms)
    t0 = time.perf_counter()
    with open(csv_path, "w", newline="", encoding="utf-8") as fcsv:
        record = _Recorder(atoms, cfg, fcsv, traj_path)
        done, bad = _loop(atoms, dyn, cfg, record, progress)
    elapsed = time.perf_counter() - t0
    reason, stopped = ("completed", False) if bad is None else (bad, True)
    if stopped:
        print(f"MD stopped early: {bad}. Everything up to here is in {out}.")
    drift = _drift(record.rows, n)
    warn = _drift_warning(cfg, drift)
    png = thermo_plot(record.rows, out / "thermo.png", title=f"{cfg.ensemble}, {n} atoms")
    result = MDResult(
        done,
        stopped,
        reason,
        done / max(elapsed, 1e-9),
        traj_path,
        csv_path,
        png,
        drift,
        warn,
        velocities_from,
    )
    summary = {
        "steps_done": done, "stopped_early": stopped, "reason": reason, "steps_per_second": result.steps_per_second,
        "energy_drift_meV_atom_ps": drift, "drift_warning": warn, "velocities_from": velocities_from, "n_atoms": n,
    }  # fmt: skip
    atomic_save_json(out / "summary.json", summary)
    return result


def thermo_plot(rows: list[dict[str, float]], path: Path, title: str = "") -> Path | None:
    """Temperature and energies against time (PNG, written atomically)."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from quintet.io import atomic_open

    t = [r["time_fs"] / 1000 for r in rows]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    a1.plot(t, [r["T_K"] for r in rows], color="tab:red")
    a1.set_ylabel("T (K)")
    a1.set_title(title)
    e0 = rows[0]["E_tot_eV"]
    a2.plot(t, [r["E_pot_eV"] - e0 for r in rows], label="E_pot − E_tot(0)")
    a2.plot(t, [r["E_tot_eV"] - e0 for r in rows], label="E_tot − E_tot(0)")
    a2.set_xlabel("time (ps)")
    a2.set_ylabel("eV")
    a2.legend()
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return path
