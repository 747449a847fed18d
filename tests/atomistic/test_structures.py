"""Structures: conversions round-trip, files are validated with clear errors, writes are atomic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms

from quintet.atomistic import keys as K
from quintet.atomistic.structures import (
    check_atoms,
    from_ase,
    from_pymatgen,
    read_structure,
    read_structures,
    to_ase,
    to_pymatgen,
    write_structure,
)


def _cu_emt() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.05, seed=1)
    atoms.calc = EMT()
    atoms.get_potential_energy()
    return atoms


def test_from_ase_carries_results_and_cell() -> None:
    atoms = _cu_emt()
    rec = from_ase(atoms, dtype=torch.float64)
    assert rec[K.POSITIONS].shape == (8, 3) and rec[K.POSITIONS].dtype == torch.float64
    assert rec[K.ATOMIC_NUMBERS].tolist() == [29] * 8
    assert torch.allclose(rec[K.CELL], torch.tensor(atoms.cell[:]))
    assert rec[K.PBC].tolist() == [True, True, True]
    assert float(rec[K.ENERGY]) == pytest.approx(atoms.get_potential_energy())
    assert np.allclose(rec[K.FORCES].numpy(), atoms.get_forces())
    # ASE Voigt (xx, yy, zz, yz, xz, xy) -> full symmetric 3x3
    s = atoms.get_stress()
    st = rec[K.STRESS].numpy()
    assert (
        np.allclose(np.diag(st), s[:3])
        and st[1, 2] == pytest.approx(s[3])
        and st[0, 1] == pytest.approx(s[5])
    )
    assert np.allclose(st, st.T)


def test_round_trip_ase_and_pymatgen() -> None:
    atoms = _cu_emt()
    atoms.set_constraint(FixAtoms(indices=[0, 3]))
    rec = from_ase(atoms, dtype=torch.float64)
    assert rec[K.FIXED].tolist() == [True, False, False, True, False, False, False, False]
    back = from_ase(to_ase(rec), dtype=torch.float64)
    for key in rec:
        assert torch.equal(rec[key], back[key]), key
    pmg = to_pymatgen(rec)
    assert len(pmg) == 8 and pmg.lattice.volume == pytest.approx(atoms.get_volume())
    rec2 = from_pymatgen(pmg, dtype=torch.float64)
    assert torch.allclose(rec2[K.POSITIONS], rec[K.POSITIONS], atol=1e-10)
    mol = molecule("H2O")
    recm = from_ase(mol)
    assert recm[K.PBC].tolist() == [False] * 3 and torch.count_nonzero(recm[K.CELL]) == 0
    m = to_pymatgen(recm)
    assert type(m).__name__ == "Molecule" and len(m) == 3


@pytest.mark.parametrize("suffix", [".cif", ".extxyz", ".vasp", ".db", ".json"])
def test_write_then_read_every_format(tmp_path: Path, suffix: str) -> None:
    atoms = _cu_emt()
    path = tmp_path / f"s{suffix}"
    write_structure(path, atoms)
    got = read_structure(path)
    assert np.allclose(got.get_scaled_positions(wrap=True), atoms.get_scaled_positions(wrap=True), atol=1e-5)
    assert np.allclose(got.cell[:], atoms.cell[:], atol=1e-5)
    if suffix in (".extxyz", ".db", ".json"):
        assert got.get_potential_energy() == pytest.approx(atoms.get_potential_energy())
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary leftovers


def test_poscar_name_and_multiframe_extxyz(tmp_path: Path) -> None:
    frames = []
    for k in range(3):
        a = _cu_emt()
        a.positions += 0.01 * k
        frames.append(a)
    write_structure(tmp_path / "traj.extxyz", frames)
    got = read_structures(tmp_path / "traj.extxyz")
    assert len(got) == 3
    assert [g.get_potential_energy() for g in got] == pytest.approx(
        [f.get_potential_energy() for f in frames]
    )
    write_structure(tmp_path / "POSCAR", frames[0])
    assert len(read_structure(tmp_path / "POSCAR")) == 8
    with pytest.raises(ValueError, match="expected one structure, found 3"):
        read_structure(tmp_path / "traj.extxyz")


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="holds one structure"):
        write_structure(tmp_path / "two.cif", [_cu_emt(), _cu_emt()])
    assert list(tmp_path.iterdir()) == []


# ---- bad input: each a clear error naming the file and the problem ------------------------------


def _write_cif(tmp_path: Path) -> Path:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    path = tmp_path / "good.cif"
    write_structure(path, atoms)
    return path


def test_truncated_cif_at_line_boundary(tmp_path: Path) -> None:
    good = _write_cif(tmp_path)
    lines = good.read_text().splitlines(keepends=True)
    bad = tmp_path / "cut.cif"
    bad.write_text("".join(lines[:-10]))  # loses 10 atoms silently in ASE
    with pytest.raises(ValueError, match=r"cut\.cif.*truncated"):
        read_structures(bad)


def test_truncated_cif_mid_row(tmp_path: Path) -> None:
    good = _write_cif(tmp_path)
    text = good.read_text()
    bad = tmp_path / "cut.cif"
    bad.write_text(text[: len(text) - 30])
    with pytest.raises(ValueError, match=r"cut\.cif"):
        read_structures(bad)


def test_truncated_extxyz(tmp_path: Path) -> None:
    write_structure(tmp_path / "t.extxyz", [_cu_emt(), _cu_emt()])
    lines = (tmp_path / "t.extxyz").read_text().splitlines(keepends=True)
    (tmp_path / "cut.extxyz").write_text("".join(lines[:-3]))
    with pytest.raises(ValueError, match=r"cut\.extxyz: cannot read"):
        read_structures(tmp_path / "cut.extxyz")


def test_unknown_element_in_cif(tmp_path: Path) -> None:
    path = tmp_path / "xx.cif"
    path.write_text(
        "data_x\n_cell_length_a 3\n_cell_length_b 3\n_cell_length_c 3\n_cell_angle_alpha 90\n"
        "_cell_angle_beta 90\n_cell_angle_gamma 90\nloop_\n_atom_site_type_symbol\n_atom_site_fract_x\n"
        "_atom_site_fract_y\n_atom_site_fract_z\nXx 0 0 0\n"
    )
    with pytest.raises(ValueError, match=r"xx\.cif.*unknown element"):
        read_structures(path)


def test_nan_close_atoms_singular_cell_empty(tmp_path: Path) -> None:
    nan = Atoms("H2", positions=[[0, 0, 0], [np.nan, 0, 0]])
    with pytest.raises(ValueError, match="NaN"):
        check_atoms(nan, "nan.xyz")
    close = Atoms("Cu2", positions=[[0, 0, 0], [0.05, 0, 0]], cell=[4, 4, 4], pbc=True)
    with pytest.raises(ValueError, match=r"close\.cif: atoms 0 \(Cu\) and 1 \(Cu\) are 0\.0500 Å apart"):
        check_atoms(close, "close.cif")
    # an atom close to its own periodic image (tiny cell vector) is caught too
    with pytest.raises(ValueError, match=r"singular|apart"):
        check_atoms(Atoms("Cu", cell=[0.05, 4, 4], pbc=True), "tiny.cif")
    flat = Atoms("Cu", cell=[[4, 0, 0], [8, 0, 0], [0, 0, 4]], pbc=True)
    with pytest.raises(ValueError, match="singular cell"):
        check_atoms(flat, "flat.cif")
    with pytest.raises(ValueError, match="empty structure"):
        check_atoms(Atoms(), "empty.xyz")
    # 2D slab: zero c vector is fine when z is not periodic
    slab = Atoms("Cu", cell=[[3, 0, 0], [0, 3, 0], [0, 0, 0]], pbc=[True, True, False])
    check_atoms(slab, "slab")
    # the same problems found in files name the file and frame
    write_structure(tmp_path / "f.extxyz", [molecule("H2O"), close])
    with pytest.raises(ValueError, match=r"f\.extxyz \(frame 1\): atoms 0 \(Cu\) and 1"):
        read_structures(tmp_path / "f.extxyz")


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.cif"):
        read_structures(tmp_path / "nope.cif")
    (tmp_path / "empty.cif").write_text("")
    with pytest.raises(ValueError, match=r"empty\.cif: empty file"):
        read_structures(tmp_path / "empty.cif")
    (tmp_path / "x.weird").write_text("1")
    with pytest.raises(ValueError, match="cannot tell the structure format"):
        read_structures(tmp_path / "x.weird")


def test_truncated_poscar(tmp_path: Path) -> None:
    write_structure(tmp_path / "POSCAR", bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1)))
    lines = (tmp_path / "POSCAR").read_text().splitlines(keepends=True)
    (tmp_path / "POSCAR_cut").write_text("".join(lines[:-2]))
    with pytest.raises(ValueError, match=r"POSCAR_cut: cannot read as vasp"):
        read_structures(tmp_path / "POSCAR_cut")
