"""The NequIP wrapper used by the benchmark (MACE needs its own install, see benchmarks/leignn.py):
forces are −∂E/∂r of the wrapped energy, and the energy carries the fitted per-element reference."""

from __future__ import annotations

import pytest
import torch
from ase.build import molecule

from quintet.atomistic import keys as K
from quintet.atomistic.batch import collate
from quintet.atomistic.structures import from_ase

pytest.importorskip("nequip")


def test_nequip_wrapper_forces_are_the_energy_gradient() -> None:
    from leignn_peers import E3PeerConfig, E3PeerPotential

    default = torch.get_default_dtype()
    torch.manual_seed(0)
    model = E3PeerPotential(E3PeerConfig(kind="nequip", elements=(1, 6, 8), avg_num_neighbors=8.0))
    assert torch.get_default_dtype() == default  # nequip's global state change is undone
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.1, seed=1)
    rec = from_ase(atoms, dtype=torch.float32, with_results=False)
    rec[K.ENERGY] = torch.tensor(-5.0)
    rec[K.FORCES] = 0.5 * torch.ones(len(atoms), 3)  # energy scale = force RMS = 0.5
    model.fit_normalisation([rec])
    for p in model.parameters():  # a non-trivial energy surface
        p.data.add_(0.05 * torch.randn_like(p))
    model.eval()

    def energy(shift: float, k: int) -> float:
        r = {**rec, K.POSITIONS: rec[K.POSITIONS].clone()}
        r[K.POSITIONS][0, k] += shift
        return float(model(collate([r]))[K.ENERGY].double())

    out = model(collate([rec]))
    fd = torch.tensor([-(energy(2e-3, k) - energy(-2e-3, k)) / 4e-3 for k in range(3)])
    assert torch.allclose(out[K.FORCES][0].double(), fd.double(), atol=2e-3)
    assert float(out[K.FORCES].abs().max()) > 0.01
    zero = E3PeerPotential(E3PeerConfig(kind="nequip", elements=(1, 6, 8), avg_num_neighbors=8.0))
    zero.fit_normalisation([rec])
    with torch.no_grad():
        for p in zero.net.parameters():
            p.zero_()
    assert float(zero.eval()(collate([rec]))[K.ENERGY]) == pytest.approx(-5.0, abs=1e-5)
