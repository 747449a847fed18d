"""The two DeepRelax edge sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk, mx2

from quintet.atomistic import keys as K
from quintet.deeprelax import graph as G
from quintet.deeprelax.data import DeepRelaxTransform, check_record


def test_displace_edges_are_the_nearest_same_cell_atoms() -> None:
    rng = np.random.default_rng(0)
    pos = rng.uniform(0, 10, size=(30, 3))
    ei = G.displace_edges(pos, 5)
    assert ei.shape == (2, 150)
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    for i in range(30):
        js = ei[1, ei[0] == i]
        assert set(js) == set(np.argsort(d[i])[:5])
        assert i not in js


def test_displace_edges_blocked_path_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    pos = rng.uniform(0, 10, size=(40, 3))
    ref = G.displace_edges(pos, 7)
    monkeypatch.setattr(G, "_BLOCK", 6)
    assert np.array_equal(G.displace_edges(pos, 7), ref)
    # fewer atoms than max_displace: every other atom
    assert G.displace_edges(pos[:4], 20).shape == (2, 12)


def test_image_edges_cross_cells_only_and_small_cells_get_large_offsets() -> None:
    atoms = bulk("Cu", "fcc", a=3.6)  # one atom, cell much smaller than the cutoff
    from ase.neighborlist import neighbor_list

    _ei, sh, mask = G.build_edges(atoms.positions, atoms.cell[:], atoms.pbc, cutoff=8.0, max_neighbors=None)
    assert not mask.any()  # one atom: no displace edges
    assert (np.abs(sh).sum(1) > 0).all()
    assert np.abs(sh).max() >= 3  # beyond the [-2, 2] the published encoding supports
    ref = neighbor_list("S", atoms, 8.0)
    assert sorted(map(tuple, sh.astype(int))) == sorted(map(tuple, ref))


def test_slab_has_no_offsets_along_the_vacuum() -> None:
    slab = mx2("MoS2", size=(3, 3, 1), vacuum=8.0)
    slab.pbc = (True, True, False)
    _ei, sh, mask = G.build_edges(slab.positions, slab.cell[:], slab.pbc, cutoff=6.0)
    assert (sh[:, 2] == 0).all()
    assert mask.sum() == len(slab) * 20


def test_transform_drops_vacancy_placeholders_and_checks_input() -> None:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    rec = {
        K.POSITIONS: torch.tensor(atoms.positions, dtype=torch.float32),
        K.ATOMIC_NUMBERS: torch.tensor(atoms.numbers),
        K.CELL: torch.tensor(atoms.cell[:], dtype=torch.float32),
        K.PBC: torch.tensor([True, True, True]),
        K.DEFECT: torch.tensor([0, 0, 0, 2]),
    }
    out = DeepRelaxTransform()(rec)
    assert out[K.POSITIONS].shape == (3, 3) and K.DEFECT not in out
    assert int(out[G.DISPLACE].sum()) == 6
    with pytest.raises(ValueError, match="not periodic"):
        check_record({**rec, K.PBC: torch.tensor([False] * 3)})
    with pytest.raises(ValueError, match="degenerate"):
        check_record({**rec, K.CELL: torch.zeros(3, 3)})
    with pytest.raises(ValueError, match="no atoms"):
        check_record({**rec, K.POSITIONS: torch.zeros(0, 3)})
    with pytest.raises(ValueError, match="more than"):
        check_record({**rec, K.POSITIONS: torch.zeros(20001, 3)})
