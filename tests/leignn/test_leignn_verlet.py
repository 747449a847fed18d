"""LEIGNN MD with the calculator's Verlet neighbour list (skin) follows the forces of fresh lists."""

from __future__ import annotations

import numpy as np
import torch
from ase.build import bulk


def test_leignn_md_with_a_skin_gives_the_forces_of_fresh_lists() -> None:
    from ase.md.verlet import VelocityVerlet

    from quintet.leignn.calc import LEIGNNCalculator
    from quintet.leignn.model import LEIGNN, LEIGNNModelConfig

    torch.manual_seed(0)
    model = LEIGNN(LEIGNNModelConfig(hidden=16, num_layers=2, cutoff=4.0, forces="conservative")).double()
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=1)
    atoms.set_velocities(np.random.default_rng(2).normal(0, 0.02, atoms.positions.shape))
    atoms.calc = LEIGNNCalculator(model, skin=1.0)
    ref = LEIGNNCalculator(model, skin=0.0)
    dyn = VelocityVerlet(atoms, timestep=2.0 * 0.09822694788464063)  # 2 fs in ASE units
    for _ in range(15):
        dyn.run(1)
        f_ref = ref.get_forces(atoms.copy())
        np.testing.assert_allclose(atoms.get_forces(), f_ref, rtol=1e-9, atol=1e-10)
    assert atoms.calc.neighbors.rebuilds < 15 and ref.neighbors.rebuilds == 15
