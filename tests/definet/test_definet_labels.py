"""Defect labelling on hand-built MoS2 supercells: vacancies, substitutions, tolerance, rejections."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import mx2

from quintet.atomistic.datasets import pair_record, unwrap_to_nearest
from quintet.atomistic.defects import (
    PRISTINE,
    SUBSTITUTION,
    VACANCY,
    label_defects,
    minimum_image_distances,
    repeat_unit_cell,
)


def _host(n: int = 3):
    unit = mx2("MoS2", size=(1, 1, 1), vacuum=8.0)
    unit.pbc = True
    return unit, repeat_unit_cell(unit, (n, n, 1))


def _label(atoms, host, **kw):
    return label_defects(
        atoms.numbers,
        atoms.positions,
        atoms.cell[:],
        atoms.pbc,
        host.numbers,
        host.positions,
        host.cell[:],
        **kw,
    )


def test_one_vacancy_appends_a_placeholder_with_the_missing_element():
    _, host = _host()
    atoms = host.copy()
    missing = host[4]
    del atoms[4]
    lab = _label(atoms, host)
    assert lab.labels.tolist() == [PRISTINE] * (len(host) - 1) + [VACANCY]
    assert lab.numbers[-1] == missing.number == 16
    np.testing.assert_allclose(lab.positions[-1], missing.position)
    assert lab.vacancy_sites.tolist() == [4]
    # the other atoms are matched to their own sites (indices shift by one after the deletion)
    assert lab.site_of_atom.tolist() == [*range(4), *range(5, len(host))]


def test_one_substitution_is_labelled_one():
    _, host = _host()
    atoms = host.copy()
    atoms.numbers[3] = 74  # Mo -> W
    lab = _label(atoms, host)
    expected = np.zeros(len(host), dtype=int)
    expected[3] = SUBSTITUTION
    assert lab.labels.tolist() == expected.tolist()
    assert lab.num_vacancies == 0


def test_vacancy_and_substitution_together_and_shuffled_order():
    _, host = _host()
    atoms = host.copy()
    atoms.numbers[0] = 41  # Mo -> Nb
    del atoms[[2, 7]]
    perm = np.random.default_rng(0).permutation(len(atoms))
    atoms = atoms[perm]
    lab = _label(atoms, host)
    assert int((lab.labels == SUBSTITUTION).sum()) == 1
    assert lab.labels[: len(atoms)][np.flatnonzero(atoms.numbers == 41)].tolist() == [SUBSTITUTION]
    assert sorted(lab.vacancy_sites.tolist()) == [2, 7]
    assert lab.labels[-2:].tolist() == [VACANCY, VACANCY]
    assert lab.summary() == "1 substitution(s), 2 vacancy(ies)"


def test_rattled_and_wrapped_structure_within_tolerance():
    _, host = _host()
    atoms = host.copy()
    del atoms[5]
    rng = np.random.default_rng(1)
    atoms.positions += rng.uniform(-0.12, 0.12, size=atoms.positions.shape)  # |d| <= 0.21 Å < 0.3
    atoms.positions[0] += atoms.cell[0]  # another periodic image of the same site
    lab = _label(atoms, host)
    assert lab.labels[:-1].tolist() == [PRISTINE] * len(atoms)
    assert lab.vacancy_sites.tolist() == [5]
    assert lab.match_distance.max() < 0.25
    with pytest.raises(ValueError, match=r"match no pristine site within 0\.05"):
        _label(atoms, host, tol=0.05)


def test_interstitial_is_rejected_naming_the_atom():
    _, host = _host()
    atoms = host.copy()
    centre = atoms.cell[0] * 0.5 + atoms.cell[1] * 0.25 + np.array([0, 0, atoms.positions[:, 2].mean() + 2.5])
    atoms.append("Li")
    atoms.positions[-1] = centre
    with pytest.raises(ValueError, match=r"interstitials/adatoms are not supported: atom 27 \(Li"):
        _label(atoms, host)


def test_two_atoms_on_one_site_are_rejected():
    _, host = _host()
    atoms = host.copy()
    atoms.append("S")
    atoms.positions[-1] = atoms.positions[1] + [0.05, 0, 0]
    with pytest.raises(ValueError, match="sit on pristine site 1"):
        _label(atoms, host)


def test_mismatched_host_cell_and_supercell_size_are_rejected():
    unit, host = _host(3)
    bigger = repeat_unit_cell(unit, (4, 4, 1))
    with pytest.raises(ValueError, match="cell does not match the pristine host"):
        _label(host, bigger)
    other = mx2("WSe2", size=(3, 3, 1), vacuum=8.0)
    other.set_cell(host.cell, scale_atoms=False)
    other.pbc = True
    other.positions += [0.9, 0.5, 0.0]  # a different lattice in the same cell
    with pytest.raises(ValueError, match="host does not match"):
        _label(other, host)
    with pytest.raises(ValueError, match="three positive integers"):
        repeat_unit_cell(unit, (0, 1, 1))
    with pytest.raises(ValueError, match="no atoms"):
        _label(host[:0], host)


def test_minimum_image_distance_by_hand():
    cell = np.diag([10.0, 10.0, 10.0])
    a = np.array([[0.5, 0.5, 0.5]])
    b = np.array([[9.5, 0.5, 0.5], [5.5, 0.5, 0.5]])
    d = minimum_image_distances(a, b, cell, np.array([True, True, True]))
    np.testing.assert_allclose(d, [[1.0, 5.0]])
    d_open = minimum_image_distances(a, b, cell, np.array([False, True, True]))
    np.testing.assert_allclose(d_open, [[9.0, 5.0]])


def test_record_targets_are_unwrapped_and_placeholders_keep_their_site():
    _, host = _host()
    atoms = host.copy()
    del atoms[6]
    relaxed = atoms.copy()
    relaxed.positions[0] += [0.05, -0.02, 0.01]
    relaxed.positions[1] -= relaxed.cell[1]  # wrapped differently
    rec = pair_record(atoms, relaxed, host, 0.3)
    disp = (rec["relaxed_pos"] - rec["pos"]).numpy()
    np.testing.assert_allclose(disp[0], [0.05, -0.02, 0.01], atol=1e-5)
    np.testing.assert_allclose(disp[1:], 0.0, atol=1e-5)
    assert rec["defect"][-1].item() == VACANCY and rec["pos"].shape[0] == len(host)
    with pytest.raises(ValueError, match="same atoms in the same order"):
        pair_record(atoms, relaxed[:-1], host, 0.3)
    np.testing.assert_allclose(
        unwrap_to_nearest(
            np.array([[0.1, 0, 0]]), np.array([[9.9, 0, 0]]), np.eye(3) * 10, np.ones(3, bool)
        ),
        [[-0.1, 0, 0]],
        atol=1e-12,
    )
