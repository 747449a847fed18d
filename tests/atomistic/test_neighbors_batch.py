"""Neighbour lists against ASE, edge vectors with autograd, collate/uncollate round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule, mx2
from ase.neighborlist import neighbor_list as ase_nl

from quintet.atomistic import keys as K
from quintet.atomistic.batch import collate, plan_batches, uncollate
from quintet.atomistic.neighbors import batch_neighbor_list, edge_vectors, neighbor_list, with_neighbors
from quintet.atomistic.testing import example_records


def _pairs(ei: np.ndarray, s: np.ndarray) -> set[tuple[int, int, int, int, int]]:
    return {(int(i), int(j), *map(int, np.round(sh))) for (i, j), sh in zip(ei.T, s, strict=True)}


@pytest.mark.parametrize(
    "atoms",
    [
        bulk("Cu", "fcc", a=3.6),  # 1 atom, cell much smaller than the cutoff
        bulk("Si", "diamond", a=5.43).repeat((2, 1, 1)),
        bulk("Ti", "hcp", a=2.95, c=4.68),  # non-orthogonal cell
        mx2("MoS2", size=(2, 2, 1), vacuum=None),  # pbc (T, T, F)
        molecule("CH3CH2OH"),  # no cell
    ],
)
def test_neighbor_list_matches_ase(atoms) -> None:
    if not atoms.pbc.any():
        atoms.cell = np.zeros((3, 3))
    if atoms.get_chemical_formula() == "Mo4S8":
        atoms.pbc = (True, True, False)
    ei, s = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, 5.0)
    i, j, S = ase_nl("ijS", atoms, 5.0)
    assert _pairs(ei, s) == _pairs(np.stack([i, j]), S)
    # edge vectors built in torch equal the distances ASE measures
    vec, d = edge_vectors(
        torch.tensor(atoms.positions),
        torch.tensor(atoms.cell.array),
        torch.from_numpy(ei),
        torch.from_numpy(s),
    )
    assert torch.allclose(d, torch.linalg.vector_norm(vec, dim=1))
    assert float(d.max()) <= 5.0 + 1e-9
    assert float(d.min()) > 0.5


def test_max_neighbors_keeps_nearest() -> None:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.05, seed=1)
    ei, s = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, 6.0)
    ei12, s12 = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, 6.0, max_neighbors=12)
    assert np.bincount(ei12[0]).max() == 12
    _, d_all = edge_vectors(
        torch.tensor(atoms.positions), torch.tensor(atoms.cell.array), torch.tensor(ei), torch.tensor(s)
    )
    _, d12 = edge_vectors(
        torch.tensor(atoms.positions), torch.tensor(atoms.cell.array), torch.tensor(ei12), torch.tensor(s12)
    )
    for c in range(len(atoms)):
        kept = np.sort(d12[ei12[0] == c].numpy())
        nearest = np.sort(d_all[ei[0] == c].numpy())[:12]
        assert np.allclose(kept, nearest)


def test_truncation_keeps_whole_shells_and_is_the_same_in_a_rotated_frame() -> None:
    """Cutting a perfect lattice's 12-atom first shell at 10 keeps all 12 (ties are not broken by
    float round-off), and a rotated copy gets the same edges in the same order."""
    from quintet.atomistic.testing import random_rotation

    atoms = bulk("Cu", "fcc", a=3.6).repeat((2, 1, 1))  # small triclinic cell: many tied images
    ei, s = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, 6.0, max_neighbors=10)
    assert (np.bincount(ei[0]) == 12).all()
    rot = random_rotation(3).numpy()
    ei_r, s_r = neighbor_list(
        atoms.positions @ rot.T, atoms.cell.array @ rot.T, atoms.pbc, 6.0, max_neighbors=10
    )
    assert np.array_equal(ei, ei_r) and np.array_equal(s, s_r)
    ei13, _ = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, 6.0, max_neighbors=13)
    assert (np.bincount(ei13[0]) == 18).all()  # 12 first-shell + the whole 6-atom second shell


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="NaN"):
        neighbor_list(np.array([[0.0, 0.0, np.nan]]), np.eye(3) * 5, True, 3.0)
    with pytest.raises(ValueError, match="singular"):
        neighbor_list(np.array([[0.0, 0, 0], [1, 1, 1]]), np.zeros((3, 3)), True, 3.0)
    with pytest.raises(ValueError, match="cutoff"):
        neighbor_list(np.zeros((1, 3)), np.eye(3), True, 0.0)


def test_edge_vectors_carry_gradients() -> None:
    rec = with_neighbors(example_records()["bulk"], 4.0)
    pos = rec[K.POSITIONS].clone().requires_grad_(True)
    _, d = edge_vectors(pos, rec[K.CELL], rec[K.EDGE_INDEX], rec[K.EDGE_SHIFT])
    (g,) = torch.autograd.grad(d.sum(), pos)
    # every atom has symmetric pairs: the total pull on the crystal is zero
    assert torch.allclose(g.sum(0), torch.zeros(3, dtype=g.dtype), atol=1e-10)
    assert g.abs().max() > 0


def test_collate_offsets_and_roundtrip() -> None:
    recs = [with_neighbors(r, 3.5) for r in example_records().values()]
    b = collate(recs)
    counts = [r[K.POSITIONS].shape[0] for r in recs]
    assert b[K.NUM_ATOMS].tolist() == counts
    assert b[K.CELL].shape == (len(recs), 3, 3)
    assert b[K.EDGE_INDEX].shape[1] == sum(r[K.EDGE_INDEX].shape[1] for r in recs)
    # every edge stays inside its own structure
    assert torch.equal(b[K.BATCH][b[K.EDGE_INDEX][0]], b[K.BATCH][b[K.EDGE_INDEX][1]])
    back = uncollate(b)
    for r, r2 in zip(recs, back, strict=True):
        for k, v in r.items():
            assert torch.equal(v, r2[k]), k
    # the batched neighbour list equals the per-structure lists
    ei, sh = batch_neighbor_list(b, 3.5)
    assert torch.equal(ei, b[K.EDGE_INDEX]) and torch.allclose(sh, b[K.EDGE_SHIFT])


def test_collate_rejects_mismatched_or_unknown_fields() -> None:
    recs = list(example_records().values())
    with pytest.raises(ValueError, match="different fields"):
        collate([recs[0], {**recs[1], K.ENERGY: torch.tensor(1.0)}])
    with pytest.raises(KeyError, match="register"):
        collate([{**recs[0], "mystery": torch.zeros(1)}])
    with pytest.raises(ValueError, match="empty"):
        collate([])


def test_plan_batches_bounds_structures_and_atoms_in_order() -> None:
    sizes = [8, 8, 8, 100, 8, 3000, 8, 8]
    plan = plan_batches(sizes, max_structures=2, max_atoms=120)
    # by hand: [8, 8] (two structures), [8, 100] (116 atoms), [8] (8 + 3000 > 120),
    # [3000] (too big, alone), [8, 8]
    assert [list(r) for r in plan] == [[0, 1], [2, 3], [4], [5], [6, 7]]
    assert [list(r) for r in plan_batches(sizes, 3)] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert [k for r in plan_batches(sizes, 64, 16) for k in r] == list(range(len(sizes)))
    assert plan_batches([], 4, 10) == []
    with pytest.raises(ValueError, match="max_structures"):
        plan_batches(sizes, 0)
    with pytest.raises(ValueError, match="max_atoms"):
        plan_batches(sizes, 4, 0)
