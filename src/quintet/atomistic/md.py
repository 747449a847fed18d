"""Molecular dynamics through ASE with any calculator: NVE, Langevin, Nosé–Hoover chain, Berendsen.

Frames are appended to an extxyz file and thermodynamics to a CSV as the run goes (flushed every
write), so a run that is stopped — by the user, or by the blow-up guards below — keeps
everything written so far. Guards: temperature outside ``[t_min_K, t_max_K]``, two atoms closer
than ``min_distance`` Å, or a non-finite energy stop the run cleanly with a message.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from quintet.io import atomic_save_json

__all__ = ["MDConfig", "MDResult", "run_md", "thermo_plot"]

Ensemble = Literal["nve", "langevin", "nose_hoover", "berendsen"]


@dataclass
class MDConfig:
    """An MD run.

    Args:
        ensemble: ``nve`` (velocity Verlet), ``langevin``, ``nose_hoover`` (NVT chain) or ``berendsen`` (NVT).
        temperature_K: initial (Maxwell–Boltzmann) and thermostat temperature.
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

    def __post_init__(self) -> None:
        if self.steps < 0 or self.timestep_fs <= 0 or self.write_every < 1:
            raise ValueError("steps >= 0, timestep_fs > 0 and write_every >= 1 are required")


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
    raise ValueError(f"unknown ensemble {cfg.ensemble!r}; choose nve, langevin, nose_hoover or berendsen")


def run_md(atoms: Any, calculator: Any, cfg: MDConfig, progress: bool = True) -> MDResult:
    """Run MD on ``atoms`` (modified in place) with ``calculator``; see :class:`MDConfig`."""
    import ase.io
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
    from tqdm.auto import tqdm

    from quintet.config import save_config

    if len(atoms) == 0:
        raise ValueError("empty structure: no atoms to simulate")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "md_config.yaml")
    traj_path, csv_path = out / "trajectory.extxyz", out / "thermo.csv"
    for p in (traj_path, csv_path):
        p.unlink(missing_ok=True)
    atoms.calc = calculator
    MaxwellBoltzmannDistribution(atoms, temperature_K=cfg.temperature_K, rng=np.random.default_rng(cfg.seed))
    Stationary(atoms)
    if not atoms.pbc.any():
        ZeroRotation(atoms)
    dyn = _integrator(atoms, cfg)
    n = len(atoms)
    rows: list[dict[str, float]] = []
    reason, stopped = "completed", False
    t0 = time.perf_counter()
    done = 0
    with open(csv_path, "w", newline="", encoding="utf-8") as fcsv:
        writer = csv.DictWriter(
            fcsv, fieldnames=["step", "time_fs", "T_K", "E_pot_eV", "E_kin_eV", "E_tot_eV"]
        )
        writer.writeheader()

        def record(step: int) -> str | None:
            epot = float(atoms.get_potential_energy())
            ekin = float(atoms.get_kinetic_energy())
            temp = float(atoms.get_temperature())
            row = {
                "step": step,
                "time_fs": step * cfg.timestep_fs,
                "T_K": temp,
                "E_pot_eV": epot,
                "E_kin_eV": ekin,
                "E_tot_eV": epot + ekin,
            }
            rows.append(row)
            writer.writerow(row)
            fcsv.flush()
            ase.io.write(traj_path, atoms, format="extxyz", append=True)
            if not math.isfinite(epot) or not math.isfinite(temp):
                return f"non-finite energy or temperature at step {step}"
            if step > 0 and not cfg.t_min_K <= temp <= cfg.t_max_K:
                return f"temperature {temp:.1f} K left [{cfg.t_min_K}, {cfg.t_max_K}] K at step {step}"
            dmin = _min_distance(atoms)
            if dmin < cfg.min_distance:
                return f"two atoms came {dmin:.3f} Å apart (< {cfg.min_distance} Å) at step {step}"
            return None

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
    elapsed = time.perf_counter() - t0
    if bad is not None:
        reason, stopped = bad, True
        print(f"MD stopped early: {bad}. Everything up to here is in {out}.")
    drift = None
    if len(rows) >= 3:
        t_ps = np.array([r["time_fs"] for r in rows]) / 1000.0
        e = np.array([r["E_tot_eV"] for r in rows]) * 1000.0 / n
        if t_ps[-1] > t_ps[0]:
            drift = float(np.polyfit(t_ps, e, 1)[0])
    png = thermo_plot(rows, out / "thermo.png", title=f"{cfg.ensemble}, {n} atoms")
    result = MDResult(done, stopped, reason, done / max(elapsed, 1e-9), traj_path, csv_path, png, drift)
    atomic_save_json(
        out / "summary.json",
        {
            "steps_done": done,
            "stopped_early": stopped,
            "reason": reason,
            "steps_per_second": result.steps_per_second,
            "energy_drift_meV_atom_ps": drift,
            "n_atoms": n,
        },
    )
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
