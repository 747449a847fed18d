"""MD defaults practitioners expect: velocities from the structure, the NVE drift check, NPT with stress,
and a saved run config that names the model, structure and frame."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from quintet.atomistic.calculator import ModelCalculator
from quintet.atomistic.md import MDConfig, _drift, run_md
from quintet.leignn.model import LEIGNN, LEIGNNModelConfig


def cu(repeat: int = 2):
    return bulk("Cu", "fcc", a=3.61, cubic=True).repeat((repeat, repeat, repeat))


def test_drift_is_the_slope_of_the_total_energy_per_atom() -> None:
    rows = [{"time_fs": t, "E_tot_eV": -10.0 + 0.004 * t} for t in (0.0, 100.0, 200.0, 300.0)]
    assert _drift(rows, n=2) == pytest.approx(2000.0)  # 4 meV/fs / 2 atoms = 2000 meV/atom/ps


class PushedEMT(EMT):
    """EMT plus a constant 0.05 eV/Å force along x that the energy leaves out: not conservative,
    so the total energy grows (the centre of mass accelerates)."""

    def calculate(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().calculate(*args, **kwargs)
        self.results["forces"] = self.results["forces"] + np.array([0.05, 0.0, 0.0])


def test_nve_drift_above_the_threshold_warns(tmp_path: Path) -> None:
    """The threshold is 1 meV/atom/ps: the pushed run drifts far above it, plain EMT (conservative) stays below."""
    cfg = MDConfig(
        ensemble="nve", temperature_K=300, timestep_fs=5.0, steps=60, write_every=5, out=str(tmp_path / "md")
    )
    atoms = cu()
    with pytest.warns(
        RuntimeWarning, match=r"NVE total-energy drift .* exceeds md\.drift_warn_meV_atom_ps=1\.0"
    ):
        res = run_md(atoms, PushedEMT(), cfg, progress=False)
    summary = json.loads((tmp_path / "md" / "summary.json").read_text())
    assert res.drift_warning and summary["drift_warning"] and summary["energy_drift_meV_atom_ps"] > 10.0
    plain = run_md(cu(), EMT(), replace(cfg, out=str(tmp_path / "plain")), progress=False)
    assert not plain.drift_warning and abs(plain.energy_drift_meV_atom_ps) < 1.0


@pytest.mark.parametrize(
    ("velocities", "expected"), [("auto", "structure"), ("maxwell_boltzmann", "maxwell_boltzmann")]
)
def test_start_velocities_come_from_the_structure(velocities: str, expected: str, tmp_path: Path) -> None:
    atoms = cu()
    MaxwellBoltzmannDistribution(atoms, temperature_K=900, rng=np.random.default_rng(4))
    t0 = atoms.get_temperature()
    cfg = MDConfig(
        ensemble="nve", temperature_K=100, steps=0, out=str(tmp_path / velocities), velocities=velocities
    )
    res = run_md(atoms, EMT(), cfg, progress=False)
    first_t = float(res.thermo_csv.read_text().splitlines()[1].split(",")[2])
    assert res.velocities_from == expected
    assert (first_t == pytest.approx(t0)) == (expected == "structure")


@pytest.mark.parametrize("ensemble", ["npt_berendsen", "npt_berendsen_aniso", "npt_nose_hoover"])
def test_npt_compresses_a_cell_under_high_pressure(ensemble: str, tmp_path: Path) -> None:
    """10 GPa on fcc Cu (bulk modulus ~140 GPa): the cell shrinks by a few per cent within 80 fs."""
    atoms = cu()
    v0 = atoms.get_volume()
    cfg = MDConfig(ensemble=ensemble, temperature_K=300, timestep_fs=2.0, steps=40, write_every=20,
                   pressure_bar=1e5, pdamp_fs=100.0, compressibility_per_bar=7e-7, bulk_modulus_GPa=140.0,
                   out=str(tmp_path / ensemble))  # fmt: skip
    res = run_md(atoms, EMT(), cfg, progress=False)
    assert res.steps_done == 40 and not res.stopped_early
    assert 0.9 * v0 < atoms.get_volume() < 0.98 * v0


def test_npt_needs_stress_and_a_periodic_cell(tmp_path: Path) -> None:
    torch.manual_seed(0)
    direct = ModelCalculator(LEIGNN(LEIGNNModelConfig(hidden=8, num_layers=1, num_rbf=4)), stress=False)
    with pytest.raises(ValueError, match="needs stress: use a model trained with forces='conservative'"):
        run_md(cu(), direct, MDConfig(ensemble="npt_berendsen", out=str(tmp_path / "a")), progress=False)
    with pytest.raises(ValueError, match="needs a fully periodic cell"):
        run_md(
            molecule("H2O"),
            EMT(),
            MDConfig(ensemble="npt_berendsen", out=str(tmp_path / "b")),
            progress=False,
        )


def test_leignn_md_saves_a_repeatable_run_config_and_runs_npt(emt_file: Path, tmp_path: Path) -> None:
    """``index=-1`` is saved as the last frame's number with the model and structure paths; a
    conservative model drives an NPT run (its stress goes to the barostat)."""
    import yaml

    from quintet.atomistic.structures import from_ase, read_structures
    from quintet.config import config_to_dict
    from quintet.leignn.md import LEIGNNMDJob, md
    from quintet.train import save_model

    torch.manual_seed(0)
    model = LEIGNN(LEIGNNModelConfig(hidden=8, num_layers=1, num_rbf=8, cutoff=4.0, forces="conservative"))
    model.fit_normalisation(from_ase(a, dtype=torch.float32) for a in read_structures(emt_file, index=":5"))
    path = save_model(
        tmp_path / "best.pt", model, {}, {"system": "leignn", "model": config_to_dict(model.config)}
    )
    out = tmp_path / "md"
    cfg = MDConfig(
        ensemble="npt_berendsen", steps=4, write_every=2, compressibility_per_bar=7e-7, out=str(out)
    )
    res = md(LEIGNNMDJob(model=str(path), structure=str(emt_file), index=-1, md=cfg))
    assert res.steps_done == 4 and not res.stopped_early
    saved = yaml.safe_load((out / "run_config.yaml").read_text())
    assert saved["index"] == 89 and saved["model"] == str(path) and saved["structure"] == str(emt_file)
    assert saved["md"]["ensemble"] == "npt_berendsen"
    with pytest.raises(ValueError, match=r"cu_vac\.extxyz: index=90 but the file has 90 frames"):
        md(LEIGNNMDJob(model=str(path), structure=str(emt_file), index=90, md=cfg))
