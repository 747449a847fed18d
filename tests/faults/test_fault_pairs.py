"""Relaxation pairs whose atoms do not correspond: refused with the atoms named.

Validation function: :func:`quintet.atomistic.datasets.check_pair_order` (called by ``pair_record``, so by
``RelaxPairDataset``, ``deeprelax train/eval``, ``definet train/eval`` and ``data inspect``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from quintet.atomistic import keys as K
from quintet.atomistic.datasets import MAX_PAIR_DISPLACEMENT, RelaxPairDataset, check_pair_order, pair_record
from quintet.atomistic.structures import write_structure


def _pair(strain: float = 0.0, rattle: float = 0.05):
    u = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    u.rattle(rattle, seed=1)
    r = u.copy()
    r.set_cell(r.cell[:] * (1 + strain), scale_atoms=True)
    r.rattle(0.1, seed=2)
    return u, r


def _swap(atoms, i: int, j: int):
    out = atoms.copy()
    pos = out.positions.copy()
    pos[[i, j]] = pos[[j, i]]
    out.positions = pos
    return out


@pytest.mark.parametrize("i,j", [(0, 1), (0, 31), (5, 6), (10, 20)])
def test_swapped_same_species_atoms_are_refused_naming_the_atom(i: int, j: int) -> None:
    u, r = _pair()
    with pytest.raises(ValueError, match=rf"pair x: atom ({i}|{j}) \(Cu\) moves .* Å .*not list the atoms in the same order"):
        check_pair_order(u, _swap(r, i, j), "pair x")


@pytest.mark.parametrize("strain", [-0.05, 0.0, 0.05])
def test_a_real_relaxation_with_cell_change_is_accepted(strain: float) -> None:
    u, r = _pair(strain=strain)
    check_pair_order(u, r, "pair")  # an 8 Å cell strained 5%: atoms far from the origin move 0.4 Å by strain alone
    rec = pair_record(u, r)
    assert rec[K.RELAXED_POSITIONS].shape == (32, 3)


def test_the_bound_is_documented_and_overridable() -> None:
    assert MAX_PAIR_DISPLACEMENT == 2.0
    u, r = _pair()
    bad = _swap(r, 0, 1)
    pair_record(u, bad, max_displacement=5.0)  # overridden: accepted
    with pytest.raises(ValueError, match=r"more than 2\.0 Å"):
        pair_record(u, bad)


def test_species_order_and_count_mismatch_are_refused() -> None:
    u = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    r = u.copy()
    r.numbers = np.where(u.numbers == 11, 17, 11)
    with pytest.raises(ValueError, match="must list the same atoms in the same order"):
        check_pair_order(u, r, "nacl")
    with pytest.raises(ValueError, match="must list the same atoms in the same order"):
        check_pair_order(u, u[:-1], "nacl")


def test_a_nan_relaxed_position_is_refused() -> None:
    u, r = _pair()
    r.positions[3, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        check_pair_order(u, r, "nan pair")


def test_dataset_and_train_verb_refuse_a_shuffled_pair_file(cu_pairs: Path, tmp_path: Path, cli_error) -> None:
    data = tmp_path / "data"
    shutil.copytree(cu_pairs, data)
    data.chmod(0o755)
    import ase.io

    first = sorted((data / "CIF").glob("*_relaxed.cif"))[0]
    first.chmod(0o644)
    write_structure(first, _swap(ase.io.read(first), 0, 3))
    (data / "dataset.sha256.json").unlink()  # as data users bring (a generated folder's hash check fires first)
    ds = RelaxPairDataset(data)
    bad = ds.ids.index(first.name[: -len("_relaxed.cif")])
    with pytest.raises(ValueError, match=rf"{first.name[:-12]}_unrelaxed.cif: atom (0|3) \(Cu\) moves"):
        ds[bad]
    err = cli_error(["deeprelax", "train", "--data", str(data), "-o", str(tmp_path / "run"), "train.max_epochs=1"])
    assert "moves" in err and "same order" in err
