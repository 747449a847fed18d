"""EMT-labelled periodic frames for LEIGNN tests (made on the fly, milliseconds each)."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator


def emt_frames(n: int, seed: int = 0, rattle: float = 0.12) -> list:
    """Rattled 2x2x2 Cu (32 atoms) with one vacancy and one Ni, labelled with EMT."""
    rng = np.random.default_rng(seed)
    base = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    del base[0]
    base.numbers[5] = 28
    frames = []
    for _ in range(n):
        a = base.copy()
        a.positions += rng.normal(scale=rattle, size=a.positions.shape)
        a.calc = EMT()
        e, f = a.get_potential_energy(), a.get_forces()
        a.calc = SinglePointCalculator(a, energy=e, forces=f)
        frames.append(a)
    return frames


@pytest.fixture(scope="session")
def emt_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("emt") / "cu_vac.extxyz"
    ase.io.write(path, emt_frames(90), format="extxyz")
    return path
