"""The Verlet neighbour list (skin) gives, at every step, exactly the pairs a fresh list gives, rebuilding
only when an atom has moved more than half the skin; an MD calculator using it gives the same forces."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk, molecule

from quintet.atomistic.neighbors import VerletList, neighbor_list


def _pairs(ei: np.ndarray, sh: np.ndarray) -> set[tuple[int, int, int, int, int]]:
    return {(int(i), int(j), *map(int, np.rint(s))) for i, j, s in zip(ei[0], ei[1], sh, strict=True)}


@pytest.mark.parametrize("atoms", [bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2), molecule("CH3CH2OH")])
def test_skin_list_equals_a_fresh_list_at_every_step_and_rebuilds_rarely(atoms) -> None:
    rng = np.random.default_rng(0)
    cell, pbc = np.asarray(atoms.cell.array), atoms.pbc
    vl = VerletList(cutoff=4.0, skin=1.0)
    pos = atoms.positions.copy()
    for _ in range(40):
        pos = pos + rng.normal(0, 0.03, pos.shape)  # a random walk: ~0.05 Å per step per atom
        assert _pairs(*vl(pos, cell, pbc)) == _pairs(*neighbor_list(pos, cell, pbc, 4.0))
    assert 2 <= vl.rebuilds <= 20


def test_a_changed_cell_or_a_skin_of_zero_rebuilds_every_time() -> None:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    vl = VerletList(cutoff=4.0, skin=1.0)
    for k in range(3):
        cell = np.asarray(atoms.cell.array) * (1 + 0.01 * k)  # NPT: the cell moves every step
        pos = atoms.positions * (1 + 0.01 * k)
        assert _pairs(*vl(pos, cell, atoms.pbc)) == _pairs(*neighbor_list(pos, cell, atoms.pbc, 4.0))
    assert vl.rebuilds == 3
    fresh = VerletList(cutoff=4.0, skin=0.0)
    for _ in range(3):
        fresh(atoms.positions, np.asarray(atoms.cell.array), atoms.pbc)
    assert fresh.rebuilds == 3
    with pytest.raises(ValueError, match="skin must be >= 0"):
        VerletList(4.0, -0.1)
