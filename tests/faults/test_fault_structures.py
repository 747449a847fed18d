"""Structures that parse but are not what the file says, or are not physical: refused with the file named.

Validation function: :func:`quintet.atomistic.structures.read_structures` (-> ``check_atoms`` and the CIF
cross-check), called by every verb that reads structures (``deeprelax predict``, ``definet predict``,
``data inspect``, pairs for ``deeprelax train``/``definet train``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from quintet.atomistic.structures import MIN_DISTANCE, check_atoms, read_structures, write_structure


def _nacl() -> Atoms:
    return bulk("NaCl", "rocksalt", a=5.64, cubic=True) * (1, 1, 2)


def _cif_text() -> str:
    import io

    import ase.io

    buf = io.BytesIO()
    ase.io.write(buf, _nacl(), format="cif")
    return buf.getvalue().decode()


def _cut_lines(text: str, drop: int) -> str:
    lines = text.splitlines(keepends=True)
    return "".join(lines[:-drop])


def _no_formula(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if "formula" not in line)


#: name -> (file name, file text, expected message)
BAD_FILES = {
    "cif cut at a line boundary": ("cut.cif", lambda: _cut_lines(_cif_text(), 3), "truncated or inconsistent CIF"),
    "cif cut inside a coordinate line": ("mid.cif", lambda: _cif_text()[:-20], "incomplete row"),
    "cif cut inside the last value": ("val.cif", lambda: _cif_text()[:-3], "truncated"),
    "cif without formula cut mid-line": ("nf.cif", lambda: _no_formula(_cif_text())[:-25], "incomplete row"),
    "cif without formula cut in the last value": ("nf2.cif", lambda: _no_formula(_cif_text())[:-2], "truncated CIF"),
    "empty file": ("empty.cif", lambda: "", "empty file"),
    "xyz with an unknown element": ("x.xyz", lambda: "2\n\nXq 0 0 0\nCu 0 0 2\n", "x.xyz"),
    "xyz with a NaN coordinate": ("nan.xyz", lambda: "2\n\nCu 0 0 nan\nCu 0 0 2.5\n", "non-finite"),
    "xyz with an inf coordinate": ("inf.xyz", lambda: "2\n\nCu 0 0 inf\nCu 0 0 2.5\n", "non-finite"),
    "extxyz with a NaN energy": (
        "e.extxyz",
        lambda: '2\nLattice="4 0 0 0 4 0 0 0 4" Properties=species:S:1:pos:R:3 energy=nan pbc="T T T"\n'
        "Cu 0 0 0\nCu 0 0 2.5\n",
        "non-finite (NaN/inf) energy",
    ),
    "extxyz with an inf force": (
        "f.extxyz",
        lambda: '2\nLattice="4 0 0 0 4 0 0 0 4" Properties=species:S:1:pos:R:3:forces:R:3 energy=1.0 pbc="T T T"\n'
        "Cu 0 0 0 0 0 inf\nCu 0 0 2.5 0 0 0\n",
        "non-finite (NaN/inf) forces",
    ),
    "extxyz with a NaN cell": (
        "c.extxyz",
        lambda: '2\nLattice="4 0 0 0 nan 0 0 0 4" Properties=species:S:1:pos:R:3 pbc="T T T"\nCu 0 0 0\nCu 0 0 2.5\n',
        "non-finite",
    ),
    "extxyz with a singular cell": (
        "s.extxyz",
        lambda: '2\nLattice="4 0 0 4 0 0 0 0 4" Properties=species:S:1:pos:R:3 pbc="T T T"\nCu 0 0 0\nCu 0 0 2.5\n',
        "singular cell",
    ),
    "xyz with two atoms 0.3 Å apart": ("close.xyz", lambda: "2\n\nCu 0 0 0\nCu 0 0 0.3\n", "atoms 0 (Cu) and 1 (Cu)"),
    "xyz with two atoms 0.45 Å apart": ("close2.xyz", lambda: "2\n\nO 0 0 0\nH 0 0 0.45\n", "0.4500 Å apart"),
    "xyz frame cut short": ("short.xyz", lambda: "3\n\nCu 0 0 0\nCu 0 0 2.5\n", "short.xyz"),
    "POSCAR with fewer coordinate lines than counts": (
        "POSCAR",
        lambda: "Cu\n1.0\n4 0 0\n0 4 0\n0 0 4\nCu\n3\nDirect\n0 0 0\n0.5 0.5 0\n",
        "POSCAR",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_structure_file_is_refused_naming_it(case: str, tmp_path: Path) -> None:
    name, text, message = BAD_FILES[case]
    path = tmp_path / name
    path.write_text(text())
    with pytest.raises(ValueError) as err:
        read_structures(path)
    assert str(path) in str(err.value) and message in str(err.value)


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_deeprelax_predict_refuses_bad_file_and_writes_nothing(
    case: str, model: Path, tmp_path: Path, cli_error
) -> None:
    name, text, message = BAD_FILES[case]
    (tmp_path / "in").mkdir()
    path = tmp_path / "in" / name
    path.write_text(text())
    err = cli_error(["deeprelax", "predict", "-m", str(model), str(path), "-o", str(tmp_path / "out")])
    assert name in err and message in err
    assert not (tmp_path / "out").exists()


def test_the_complete_cif_still_reads(tmp_path: Path) -> None:
    for name, text in (("full.cif", _cif_text()), ("nf.cif", _no_formula(_cif_text()))):
        (tmp_path / name).write_text(text)
        assert len(read_structures(tmp_path / name)[0]) == len(_nacl())


def test_min_distance_is_physical_named_and_overridable(tmp_path: Path) -> None:
    assert MIN_DISTANCE == 0.5
    atoms = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.3]])
    with pytest.raises(ValueError, match=r"atoms 0 \(H\) and 1 \(H\) are 0.3000 Å apart \(closer than 0.5 Å\)"):
        check_atoms(atoms, "h2")
    check_atoms(atoms, "h2", min_distance=0.2)  # overridden: accepted
    check_atoms(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]), "h2")  # the shortest real bond passes
    write_structure(tmp_path / "h2.xyz", atoms)
    assert len(read_structures(tmp_path / "h2.xyz", min_distance=0.2)) == 1


def test_predict_min_distance_key_overrides(model: Path, tmp_path: Path, cli_error) -> None:
    from quintet.cli import main

    cu = bulk("Cu", "fcc", a=3.62, cubic=True)
    cu.positions[1] = cu.positions[0] + [0.0, 0.0, 0.45]
    (tmp_path / "in").mkdir()
    write_structure(tmp_path / "in" / "c.cif", cu)
    argv = ["deeprelax", "predict", "-m", str(model), str(tmp_path / "in" / "c.cif"), "-o", str(tmp_path / "o")]
    assert "closer than 0.5 Å" in cli_error(argv)
    assert main([*argv, "min_distance=0.4"]) == 0


def test_periodic_images_count_for_the_distance() -> None:
    one = Atoms("Cu", positions=[[0, 0, 0]], cell=np.eye(3) * 0.4, pbc=True)
    with pytest.raises(ValueError, match="atoms 0 \\(Cu\\) and 0 \\(Cu\\)"):
        check_atoms(one, "tiny cell")
