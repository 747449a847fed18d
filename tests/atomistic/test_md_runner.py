"""The guarded MD runner: each ensemble runs, a blow-up stops cleanly and keeps what was written."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT

from quintet.atomistic.md import MDConfig, run_md


class Exploding(Calculator):
    """EMT until step k, then forces that throw atoms apart (a model gone wrong)."""

    implemented_properties = ["energy", "forces"]  # noqa: RUF012

    def __init__(self, after: int) -> None:
        super().__init__()
        self.calls = 0
        self.after = after
        self.emt = EMT()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):  # type: ignore[no-untyped-def]
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        a = self.atoms.copy()
        a.calc = self.emt
        self.results["energy"] = a.get_potential_energy()
        f = a.get_forces()
        if self.calls > self.after:
            f = f + 50.0 * np.sign(self.atoms.positions - self.atoms.positions.mean(0))
        self.results["forces"] = f


@pytest.mark.parametrize("ensemble", ["nve", "langevin", "nose_hoover", "berendsen"])
def test_each_ensemble_runs(ensemble: str, tmp_path: Path) -> None:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    res = run_md(
        atoms, EMT(), MDConfig(ensemble=ensemble, steps=40, write_every=10, out=str(tmp_path)), progress=False
    )  # type: ignore[arg-type]
    assert res.steps_done == 40 and not res.stopped_early
    assert len(ase.io.read(res.trajectory, index=":")) == 5
    assert res.thermo_csv.read_text().count("\n") == 6  # header + 5 rows
    if ensemble == "nve":
        assert res.energy_drift_meV_atom_ps is not None and abs(res.energy_drift_meV_atom_ps) < 5.0


def test_blow_up_stops_cleanly_and_keeps_outputs(tmp_path: Path) -> None:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    cfg = MDConfig(ensemble="nve", steps=2000, write_every=5, t_max_K=5000.0, out=str(tmp_path))
    res = run_md(atoms, Exploding(after=20), cfg, progress=False)
    assert res.stopped_early
    assert "temperature" in res.reason or "apart" in res.reason
    assert res.steps_done < 2000
    frames = ase.io.read(res.trajectory, index=":")
    assert len(frames) == res.steps_done // 5 + 1
    assert res.thermo_png is not None and res.thermo_png.is_file()
    assert (tmp_path / "summary.json").is_file()


def test_atoms_too_close_stop(tmp_path: Path) -> None:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.positions[1] = atoms.positions[0] + [0.3, 0.0, 0.0]
    res = run_md(atoms, EMT(), MDConfig(steps=10, write_every=5, out=str(tmp_path)), progress=False)
    assert res.stopped_early and "apart" in res.reason and res.steps_done == 0
