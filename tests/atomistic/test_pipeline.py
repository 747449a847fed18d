"""The shared inference pipeline: discovery, ids, batches, the one output rule, the table, oracle names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from quintet.atomistic.pipeline import (
    Finisher,
    Item,
    PredictionTable,
    batches,
    check_inputs,
    discover,
    iter_structures,
    oracle_name,
    output_name,
    run_predictions,
)
from quintet.atomistic.structures import read_structure, write_structure


def _cu(n: int = 1):
    return bulk("Cu", "fcc", a=3.61, cubic=True).repeat((n, 1, 1))


def _folder(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    write_structure(d / "a_unrelaxed.cif", _cu())
    write_structure(d / "a_relaxed.cif", _cu())  # the relaxed half of a pair: skipped in folders
    write_structure(d / "POSCAR_001", _cu(), format="vasp")
    write_structure(d / "CONTCAR", _cu(2), format="vasp")
    write_structure(d / "b.vasp", _cu())
    write_structure(d / "traj.traj", [_cu(), _cu(2)])
    (d / "notes.txt").write_text("not a structure")
    return d


def test_discovery_finds_every_structure_kind_once_and_names_them(tmp_path: Path) -> None:
    d = _folder(tmp_path)
    files = list(discover([d, d / "b.vasp", str(d / "*.vasp")]))
    assert [f.name for f in files] == ["CONTCAR", "POSCAR_001", "a_unrelaxed.cif", "b.vasp", "traj.traj"]
    items = list(iter_structures(files))
    assert [i.id for i in items] == ["CONTCAR", "POSCAR_001", "a", "b", "traj_0", "traj_1"]
    assert [len(i.atoms) for i in items] == [8, 4, 4, 4, 4, 8]
    assert items[-1].source.endswith("traj.traj@1")
    # already-done ids are not read again
    assert [i.id for i in iter_structures(files, skip={"a", "traj_0"})] == ["CONTCAR", "POSCAR_001", "b", "traj_1"]


def test_discovery_errors_name_the_input(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing"):
        list(discover([tmp_path / "nothing*.cif"]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no structure files"):
        list(discover([tmp_path / "empty"]))
    write_structure(tmp_path / "x" / "s.cif", _cu())
    write_structure(tmp_path / "y" / "s.vasp", _cu())
    with pytest.raises(ValueError, match="both give the structure id 's'"):
        list(iter_structures(discover([tmp_path / "x", tmp_path / "y"])))


def test_batches_are_bounded_by_structures_and_atoms() -> None:
    items = [Item(str(k), "", _cu(n)) for k, n in enumerate([1, 1, 3, 1, 1, 1])]  # 4, 4, 12, 4, 4, 4 atoms
    sizes = [[len(i.atoms) for i in b] for b in batches(items, max_structures=3, max_atoms=10)]
    assert sizes == [[4, 4], [12], [4, 4], [4]]  # a structure above max_atoms runs alone
    assert [len(b) for b in batches(items, 4, None)] == [4, 2]
    with pytest.raises(ValueError, match="batch_size"):
        list(batches(items, 0, None))


def test_one_output_rule_and_one_oracle_map() -> None:
    assert output_name("MoS2_0001", "cif") == "MoS2_0001.cif"
    assert output_name("x", "poscar") == "x.vasp" and output_name("x", "extxyz") == "x.extxyz"
    with pytest.raises(ValueError, match="output format"):
        output_name("x", "pdb")
    assert oracle_name("none") is None and oracle_name("SevenN") == "sevennet" and oracle_name("chgnet") == "chgnet"
    assert oracle_name("ase.calculators.emt:EMT") == "ase.calculators.emt:EMT"
    with pytest.raises(ValueError, match="unknown oracle 'vasp'"):
        oracle_name("vasp")
    with pytest.raises(ValueError, match="not an ASE calculator"):
        Finisher("collections:OrderedDict")


def test_inputs_are_checked_before_anything_is_written(tmp_path: Path) -> None:
    d = _folder(tmp_path)
    for inputs in ([str(d)], [str(d / "b.vasp")], [str(d / "*.cif")]):
        with pytest.raises(ValueError, match="never overwritten"):
            check_inputs(inputs, d)
    with pytest.raises(FileNotFoundError, match="missing"):
        check_inputs([str(tmp_path / "missing.cif")], tmp_path / "out")
    with pytest.raises(ValueError, match="no inputs"):
        check_inputs([], tmp_path / "out")
    check_inputs([str(d)], tmp_path / "out")


def _shift(chunk: list[Item]) -> list[tuple[object, dict[str, float]]]:
    out = []
    for it in chunk:
        a = it.atoms.copy()
        a.positions += 0.01
        out.append((a, {"moved_A": 0.01}))
    return out


def test_run_predictions_writes_id_files_a_table_and_resumes(tmp_path: Path) -> None:
    d = _folder(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    table = PredictionTable(out, {"model": "m1"})
    path = run_predictions([str(d)], out, _shift, table, fmt="extxyz", batch_size=2, progress=False)
    table2 = PredictionTable(out, {"model": "m1"})
    assert sorted(table2.done) == ["CONTCAR", "POSCAR_001", "a", "b", "traj_0", "traj_1"]
    rows = {r["id"]: r for r in table2.rows}
    assert rows["a"]["output"] == "a.extxyz" and rows["traj_1"]["n_atoms"] == "8"
    got = read_structure(out / "a.extxyz")
    np.testing.assert_allclose(got.positions, _cu().positions + 0.01, atol=1e-6)
    # a lost output is redone on resume, the others are kept
    (out / "b.extxyz").unlink()
    before = (out / "a.extxyz").stat().st_mtime_ns
    run_predictions([str(d)], out, _shift, PredictionTable(out, {"model": "m1"}), fmt="extxyz", progress=False)
    assert (out / "b.extxyz").is_file() and (out / "a.extxyz").stat().st_mtime_ns == before
    assert len(PredictionTable(out, {"model": "m1"}).rows) == 6 and path == out / "predictions.csv"
    with pytest.raises(ValueError, match="other model"):
        PredictionTable(out, {"model": "m2"})


def test_finishing_writes_a_second_file_with_the_oracle_columns(tmp_path: Path) -> None:
    from ase.calculators.emt import EMT

    d = tmp_path / "in"
    a = _cu(2)
    a.rattle(0.05, seed=1)
    write_structure(d / "cu.cif", a)
    out = tmp_path / "out"
    out.mkdir()
    fin = Finisher("emt", fmax=0.05, steps=200, calc=EMT())
    run_predictions([str(d)], out, _shift, PredictionTable(out, {}), finisher=fin, progress=False)
    (row,) = PredictionTable(out, {}).rows
    assert row["finished_output"] == "finished/cu.cif" and int(row["finish_steps"]) >= 1
    done = read_structure(out / row["finished_output"])
    done.calc = EMT()
    assert np.linalg.norm(done.get_forces(), axis=1).max() <= 0.05 + 1e-6
