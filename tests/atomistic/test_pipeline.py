"""The shared inference pipeline: discovery, ids, batches, the one output rule, the table, oracle names."""

from __future__ import annotations

from dataclasses import dataclass
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
from quintet.io import read_csv


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
    rows = {r["id"]: r for r in read_csv(path)}
    assert rows["a"]["output"] == "a.extxyz" and rows["traj_1"]["n_atoms"] == "8"
    got = read_structure(out / "a.extxyz")
    np.testing.assert_allclose(got.positions, _cu().positions + 0.01, atol=1e-6)
    # a lost output is redone on resume, the others are kept
    (out / "b.extxyz").unlink()
    before = (out / "a.extxyz").stat().st_mtime_ns
    run_predictions([str(d)], out, _shift, PredictionTable(out, {"model": "m1"}), fmt="extxyz", progress=False)
    assert (out / "b.extxyz").is_file() and (out / "a.extxyz").stat().st_mtime_ns == before
    assert len(read_csv(path)) == 6 and path == out / "predictions.csv"
    # a line cut short by a kill is dropped on resume (and its structure predicted again)
    text = path.read_text()
    path.write_text(text + "zz,partial")
    assert "zz" not in PredictionTable(out, {"model": "m1"}).done and "zz" not in path.read_text()
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
    (row,) = read_csv(out / "predictions.csv")
    assert row["finished_output"] == "finished/cu.cif" and int(row["finish_steps"]) >= 1
    done = read_structure(out / row["finished_output"])
    done.calc = EMT()
    assert np.linalg.norm(done.get_forces(), axis=1).max() <= 0.05 + 1e-6


@dataclass
class _Job:
    out: str
    resume: bool
    shard: str | None


def test_shards_split_the_inputs_deterministically_and_merge_back(tmp_path: Path) -> None:
    from quintet.atomistic.pipeline import in_shard, merge_tables, open_table, parse_shard

    d = tmp_path / "many"
    for k in range(12):
        write_structure(d / f"s{k:02d}.cif", _cu())
    files = list(discover([d]))
    parts = [[f.name for f in discover([d], (k, 3))] for k in (1, 2, 3)]
    assert sorted(n for p in parts for n in p) == sorted(f.name for f in files) and all(parts)  # a partition, no part empty
    assert parts[0] == [f.name for f in files if in_shard(f, (1, 3))]
    out = tmp_path / "out"

    for k in (1, 2, 3):
        table, shard = open_table(_Job(str(out), True, f"{k}/3"), {"model": "m"})
        run_predictions([str(d)], out, _shift, table, shard=shard, progress=False)
    with pytest.raises(ValueError, match="K/N"):
        parse_shard("2of3")
    with pytest.raises(ValueError, match=r"1\.\.N"):
        parse_shard("4/3")
    merged = read_csv(merge_tables(out))
    assert sorted(r["id"] for r in merged) == [f"s{k:02d}" for k in range(12)]
    (out / "predictions.shard2of3.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"shards \[2\] of 3"):
        merge_tables(out)


def test_an_index_file_lists_inputs(tmp_path: Path) -> None:
    d = _folder(tmp_path)
    (tmp_path / "todo.txt").write_text("# screening batch 1\nin/b.vasp\nin/POSCAR_001  # the relaxed one\n")
    assert [f.name for f in discover([tmp_path / "todo.txt"])] == ["b.vasp", "POSCAR_001"]
    (tmp_path / "bad.txt").write_text("in/missing.cif\n")
    with pytest.raises(FileNotFoundError, match=r"bad\.txt: lists in/missing\.cif"):
        list(discover([tmp_path / "bad.txt"]))
    assert d.is_dir()


def test_finish_steps_reuse_the_steps_the_data_records_for_the_same_oracle() -> None:
    from ase.calculators.emt import EMT

    from quintet.atomistic.pipeline import finish_steps, steps_summary

    a = _cu(2)
    a.rattle(0.05, seed=2)
    fin = Finisher("emt", fmax=0.05, steps=200, calc=EMT())
    rows = [{"id": "x"}, {"id": "y"}, {"id": "z"}]
    meta = {"x": {"oracle": "emt", "steps": "7"}, "y": {"oracle": "chgnet", "steps": "9"}}
    finish_steps(rows, [(a, a), (a, a), (a, a)], fin, meta, progress=False)
    assert rows[0]["unrelaxed_steps"] == 7 and rows[0]["unrelaxed_steps_from"] == "meta.csv"
    assert rows[1]["unrelaxed_steps_from"] == "oracle" and rows[1]["unrelaxed_steps"] == rows[1]["finish_steps"] > 0
    assert rows[2]["unrelaxed_steps_from"] == "oracle"
    summary = steps_summary(rows)
    assert summary["median_unrelaxed_steps"] == rows[1]["finish_steps"] and summary["oracle_structures"] == 3


def test_plausibility_flags_blown_up_cells_far_moves_and_overlaps() -> None:
    """A uniform 10 % strain is plausible (no atom moves in fractional coordinates); a 40 % cell, an atom
    moved 3 Å, two atoms on top of each other and NaNs are not, each with its reason."""
    from quintet.atomistic.structures import plausibility

    before = _cu(2)
    ok = before.copy()
    ok.set_cell(before.cell[:] * 1.1, scale_atoms=True)
    assert plausibility(before, ok) == {"plausible": True, "plausibility_reason": ""}
    big = before.copy()
    big.set_cell(before.cell[:] * np.diag([1.4, 1.0, 1.0]), scale_atoms=True)
    res = plausibility(before, big)
    assert not res["plausible"] and res["plausibility_reason"] == "cell strain 40% > 25%"
    assert plausibility(before, big, {"max_strain": 0.5})["plausible"]
    far = before.copy()
    far.positions[3] += [0.0, 0.0, 1.5]  # 1.5 Å along z of a 3.61 Å cell: 1.5 Å, not wrapped
    assert plausibility(before, far)["plausible"]
    far.positions[3] += [0.0, 0.0, -3.0]  # -1.5 Å in total: still fine (nearest image counts)
    assert plausibility(before, far)["plausible"]
    far.positions[5] += [2.5, 1.0, 0.0]  # along the 7.22 Å axis: no nearer image
    assert plausibility(before, far)["plausibility_reason"] == "atom 5 moved 2.69 Å > 2.0 Å"
    overlap = before.copy()
    overlap.positions[1] = overlap.positions[0] + 0.2
    assert "atoms closer than 0.5 Å" in plausibility(before, overlap)["plausibility_reason"]
    nan = before.copy()
    nan.positions[0, 0] = np.nan
    assert plausibility(before, nan)["plausibility_reason"] == "non-finite positions or cell"


def test_run_predictions_flags_and_warns_about_implausible_predictions(tmp_path: Path, capsys) -> None:
    d = tmp_path / "in"
    write_structure(d / "fine.cif", _cu())
    write_structure(d / "blown.cif", _cu(2))

    def predict(chunk: list[Item]) -> list[tuple[object, dict[str, float]]]:
        out = []
        for it in chunk:
            a = it.atoms.copy()
            if it.id == "blown":  # a 362 Å cell, as a badly extrapolating model predicted
                a.set_cell(a.cell[:] * 362.0 / a.cell.lengths().max(), scale_atoms=True)
            out.append((a, {}))
        return out

    path = run_predictions([str(d)], tmp_path / "out", predict, PredictionTable(tmp_path / "out", {}), progress=False)
    rows = {r["id"]: r for r in read_csv(path)}
    assert rows["fine"]["plausible"] == "True" and rows["fine"]["plausibility_reason"] == ""
    assert rows["blown"]["plausible"] == "False" and rows["blown"]["plausibility_reason"].startswith("cell strain")
    assert (tmp_path / "out" / "blown.cif").is_file()  # written, flagged and warned about: never silent
    assert "1 prediction(s) outside the plausible range" in capsys.readouterr().err
