"""Datasets: unwrapping, defect labels, pair layouts, seeded fingerprinted splits, caches, trajectories."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule, mx2
from ase.calculators.emt import EMT
from torch.utils.data import DataLoader

from quintet.atomistic import datasets as D
from quintet.atomistic import keys as K
from quintet.atomistic.batch import collate
from quintet.atomistic.datasets import (
    RelaxPairDataset,
    TrajectoryDataset,
    load_or_make_splits,
    make_splits,
    pristine_supercell,
    unwrap_to_nearest,
)
from quintet.atomistic.defects import label_atoms
from quintet.atomistic.structures import write_structure

# ---- pure maths ---------------------------------------------------------------------------------


def test_unwrap_hand_computed() -> None:
    cell = np.diag([10.0, 10.0, 10.0])
    ref = np.array([[0.1, 5.0, 5.0], [9.9, 5.0, 0.2]])
    rel = np.array([[9.95, 5.0, 5.0], [0.05, 5.0, 9.9]])
    out = unwrap_to_nearest(ref, rel, cell, (True, True, False))
    # x wraps to the image next to the reference; z is not periodic, so it stays
    assert np.allclose(out, [[-0.05, 5.0, 5.0], [10.05, 5.0, 9.9]])
    # a cell that grew: the relaxed atom at fractional 0.0045 of an 11 Å cell sits next to 9.9 Å
    out2 = unwrap_to_nearest(
        np.array([[9.9, 0.0, 0.0]]), np.array([[0.05, 0.0, 0.0]]), np.diag([11.0, 10, 10]), ref_cell=cell
    )
    assert np.allclose(out2, [[11.05, 0.0, 0.0]])


def test_unwrap_triclinic_random_shifts_recovered() -> None:
    rng = np.random.default_rng(0)
    cell = np.array([[5.0, 0.0, 0.0], [2.5, 4.33, 0.0], [0.3, 0.2, 6.0]])
    ref = rng.uniform(0, 1, (20, 3)) @ cell
    small = rng.normal(0, 0.1, (20, 3))
    shifts = rng.integers(-2, 3, (20, 3))
    moved = ref + small + shifts @ cell
    assert np.allclose(unwrap_to_nearest(ref, moved, cell), ref + small)


def _mos2(rep: int = 3) -> Atoms:
    unit = mx2("MoS2", "2H", a=3.19, thickness=3.19, vacuum=7.0)
    return unit.repeat((rep, rep, 1))


def test_label_defects_vacancy_and_substitution() -> None:
    pristine = _mos2()
    s_idx = next(i for i, s in enumerate(pristine.get_chemical_symbols()) if s == "S")
    mo_idx = next(i for i, s in enumerate(pristine.get_chemical_symbols()) if s == "Mo")
    defect = pristine.copy()
    defect.numbers[mo_idx] = 74  # Mo -> W
    del defect[s_idx]
    lab = label_atoms(defect, pristine)
    w_new = mo_idx - (1 if mo_idx > s_idx else 0)
    n = lab.num_atoms
    assert lab.labels[:n].sum() == 1 and lab.labels[w_new] == 1
    assert lab.labels[n:].tolist() == [2]  # one vacancy placeholder, appended
    assert lab.numbers[n:].tolist() == [16]
    assert np.allclose(lab.positions[n], pristine.positions[s_idx])
    # a shuffled order changes nothing about which sites are defects
    perm = np.random.default_rng(1).permutation(len(defect))
    lab2 = label_atoms(defect[perm], pristine)
    assert lab2.labels[:n][np.argsort(perm)].tolist() == lab.labels[:n].tolist()


def test_label_defects_rejects_interstitial_and_other_cell() -> None:
    pristine = _mos2()
    extra = pristine.copy()
    extra += Atoms("S", positions=[pristine.positions[:3].mean(axis=0) + np.array([0, 0, 1.0])])
    with pytest.raises(ValueError, match="interstitials"):
        label_atoms(extra, pristine, name="x.cif")
    other = pristine.copy()
    other.set_cell(other.cell[:] * 1.05, scale_atoms=True)
    with pytest.raises(ValueError, match=r"x\.cif: the cell does not match the pristine host"):
        label_atoms(other, pristine, name="x.cif")


def test_pristine_supercell_from_unit_cell() -> None:
    unit = mx2("MoS2", "2H", a=3.19, thickness=3.19, vacuum=7.0)
    sup = pristine_supercell(unit, unit.cell[:] * np.array([[4], [4], [1]]))
    assert len(sup) == 48
    with pytest.raises(ValueError, match="not an integer multiple"):
        pristine_supercell(unit, unit.cell[:] * 2.5)


# ---- splits ------------------------------------------------------------------------------------


def test_make_splits_seeded_and_disjoint() -> None:
    ids = [f"s{i:03d}" for i in range(50)]
    a = make_splits(ids, (0.8, 0.1, 0.1), seed=3)
    b = make_splits(list(reversed(ids)), (0.8, 0.1, 0.1), seed=3)
    assert a == b
    assert [len(a[s]) for s in D.SPLITS] == [40, 5, 5]
    assert set(a["train"]) | set(a["val"]) | set(a["test"]) == set(ids)
    assert not set(a["train"]) & set(a["test"])
    assert make_splits(ids, seed=4) != a


def test_split_files_reused_and_regenerated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ids = [f"s{i}" for i in range(20)]
    s1 = load_or_make_splits(ids, tmp_path, "fp1", seed=0)
    assert "writing a seeded" in capsys.readouterr().err
    assert (tmp_path / "split.json").is_file()
    with open(tmp_path / "val.csv") as fh:
        assert [r["atoms_id"] for r in csv.DictReader(fh)] == s1["val"]
    # same fingerprint: reused silently, even if the files were edited by hand (they are the record)
    (tmp_path / "test.csv").write_text("atoms_id\ns0\n")
    s2 = load_or_make_splits(ids, tmp_path, "fp1", seed=0)
    assert s2["test"] == ["s0"] and capsys.readouterr().err == ""
    # another fingerprint: remade with a message
    s3 = load_or_make_splits([*ids, "s99"], tmp_path, "fp2", seed=0)
    assert "made for other data" in capsys.readouterr().err
    assert sum(len(v) for v in s3.values()) == 21


def test_shipped_split_files_used_as_is(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("atoms_id\na\nb\n")
    (tmp_path / "test.csv").write_text("atoms_id\nc\n")
    s = load_or_make_splits(["a", "b", "c"], tmp_path, "fp")
    assert s == {"train": ["a", "b"], "val": [], "test": ["c"]}
    assert not (tmp_path / "split.json").exists()
    with pytest.raises(ValueError, match=r"train\.csv: ids not found"):
        load_or_make_splits(["a", "c"], tmp_path, "fp")


# ---- relaxation pairs: DeepRelax custom layout ---------------------------------------------------


def _custom_pairs(root: Path, n: int = 6) -> list[tuple[Atoms, Atoms]]:
    """Cu/Ni cells: unrelaxed = strained + rattled, relaxed = a few EMT steps later, wrapped into the cell."""
    from ase.optimize import BFGS

    pairs = []
    rows = []
    for k in range(n):
        rng = np.random.default_rng(k)
        a = bulk("Cu", "fcc", a=3.6, cubic=True)
        a.numbers[rng.integers(0, 4)] = 28
        a.set_cell(a.cell[:] * (1 + 0.02 * k), scale_atoms=True)
        a.rattle(0.1, seed=k)
        a.positions[0] = [0.03, 0.03, 0.03]
        r = a.copy()
        r.calc = EMT()
        BFGS(r, logfile=None).run(fmax=0.2, steps=5)
        r.calc = None
        r.positions[0] = [-0.04, 0.02, 0.03]  # crosses the cell face: the CIF stores it wrapped to x ≈ a
        write_structure(root / "CIF" / f"p{k}_unrelaxed.cif", a)
        write_structure(root / "CIF" / f"p{k}_relaxed.cif", r)
        pairs.append((a, r))
        rows.append(f"p{k},{len(a)}")
    (root / "meta.csv").write_text("atoms_id,n_atoms\n" + "\n".join(rows) + "\n")
    return pairs


def test_custom_pairs_records_unwrapped(tmp_path: Path) -> None:
    pairs = _custom_pairs(tmp_path)
    ds = RelaxPairDataset(tmp_path, layout="custom", dtype=torch.float64)
    assert ds.ids == [f"p{k}" for k in range(6)] and len(ds) == 6
    rec = ds[2]
    assert set(rec) == {
        K.POSITIONS,
        K.ATOMIC_NUMBERS,
        K.CELL,
        K.PBC,
        K.RELAXED_POSITIONS,
        K.RELAXED_CELL,
        K.STRUCTURE_ID,
    }
    a, r = pairs[2]
    assert np.allclose(rec[K.POSITIONS].numpy(), a.get_positions(wrap=True), atol=1e-5)
    assert np.allclose(rec[K.RELAXED_CELL].numpy(), r.cell[:], atol=1e-5)
    # unwrapped: every atom moved less than the relaxation did (< 0.5 Å), although atom 0 was wrapped on disk
    disp = np.linalg.norm(rec[K.RELAXED_POSITIONS].numpy() - rec[K.POSITIONS].numpy(), axis=1)
    assert disp.max() < 0.5
    assert np.allclose(rec[K.RELAXED_POSITIONS][0].numpy(), [-0.04, 0.02, 0.03], atol=1e-5)
    assert int(rec[K.STRUCTURE_ID]) == 2 and ds.meta["p2"]["n_atoms"] == "4"


def test_custom_pairs_split_and_dataloader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUINTET_CACHE", str(tmp_path / "cache"))
    _custom_pairs(tmp_path, n=10)
    train = RelaxPairDataset(tmp_path, split="train", seed=1)
    val = RelaxPairDataset(tmp_path, split="val", seed=1)
    test = RelaxPairDataset(tmp_path, split="test", seed=1)
    assert (len(train), len(val), len(test)) == (8, 1, 1)
    assert not set(train.ids) & (set(val.ids) | set(test.ids))
    assert (D.split_cache_dir(tmp_path) / "split.json").is_file()  # splits go to the cache, never into the data
    assert not (tmp_path / "split.json").exists()
    loader = DataLoader(train, batch_size=4, collate_fn=collate, shuffle=False)
    batch = next(iter(loader))
    assert batch[K.POSITIONS].shape == (16, 3) and batch[K.RELAXED_CELL].shape == (4, 3, 3)
    assert batch[K.BATCH].tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4


def test_transform_applied(tmp_path: Path) -> None:
    _custom_pairs(tmp_path, n=2)

    def tf(rec: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        rec[K.POSITIONS] += 1.0  # in place, on purpose
        return rec

    plain = RelaxPairDataset(tmp_path)
    moved = RelaxPairDataset(tmp_path, transform=tf)
    assert torch.allclose(moved[0][K.POSITIONS], plain[0][K.POSITIONS] + 1.0)
    # the cached arrays are not modified by an in-place transform
    assert torch.allclose(moved[0][K.POSITIONS], plain[0][K.POSITIONS] + 1.0)
    frames = TrajectoryDataset(_write_frames(tmp_path / "t.extxyz"), transform=tf)
    first = frames[0][K.POSITIONS].clone()
    assert torch.equal(frames[0][K.POSITIONS], first)


def test_parsed_once_and_disk_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _custom_pairs(tmp_path / "data", n=3)
    calls = []
    real = D.read_pair
    monkeypatch.setattr(D, "read_pair", lambda u, r: calls.append(u) or real(u, r))
    ds = RelaxPairDataset(tmp_path / "data")
    for _ in range(3):  # three "epochs"
        for k in range(len(ds)):
            ds[k]
    assert len(calls) == 3
    ds2 = RelaxPairDataset(tmp_path / "data", cache_dir=tmp_path / "cache")
    assert len(calls) == 6 and len(list((tmp_path / "cache").glob("pairs-*.pt"))) == 1
    ds3 = RelaxPairDataset(tmp_path / "data", cache_dir=tmp_path / "cache")
    assert len(calls) == 6  # loaded from the disk cache, nothing parsed
    assert torch.equal(ds3[1][K.RELAXED_POSITIONS], ds2[1][K.RELAXED_POSITIONS])


def test_bad_pairs_named(tmp_path: Path) -> None:
    _custom_pairs(tmp_path, n=2)
    write_structure(
        tmp_path / "CIF" / "p1_relaxed.cif", bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    )
    ds = RelaxPairDataset(tmp_path)
    with pytest.raises(ValueError, match=r"p1_relaxed\.cif: 8 atoms, but .*p1_unrelaxed\.cif has 4"):
        ds[1]
    swapped = bulk("Cu", "fcc", a=3.6, cubic=True)
    swapped.numbers[:] = [28, 29, 29, 29]
    a = bulk("Cu", "fcc", a=3.6, cubic=True)
    a.numbers[:] = [29, 28, 29, 29]
    write_structure(tmp_path / "CIF" / "p0_unrelaxed.cif", a)
    write_structure(tmp_path / "CIF" / "p0_relaxed.cif", swapped)
    with pytest.raises(ValueError, match=r"p0_relaxed\.cif: species differ"):
        ds[0]
    (tmp_path / "CIF" / "p0_relaxed.cif").unlink()
    with pytest.raises(FileNotFoundError, match=r"p0_relaxed\.cif: relaxed partner"):
        RelaxPairDataset(tmp_path)
    inputs_only = RelaxPairDataset(tmp_path, require_relaxed=False)
    assert K.RELAXED_POSITIONS not in inputs_only[0]
    with pytest.raises(FileNotFoundError, match="no CIF/ folder"):
        RelaxPairDataset(tmp_path / "CIF")


# ---- relaxation pairs: 2DMD layout with defects -------------------------------------------------


def _twodmd(root: Path, n: int = 4) -> Atoms:
    unit = mx2("MoS2", "2H", a=3.19, thickness=3.19, vacuum=7.0)
    host = root / "MoS2"
    write_structure(host / "MoS2.cif", unit)
    pristine = unit.repeat((3, 3, 1))
    rows = []
    for k in range(n):
        d = pristine.copy()
        d.numbers[k * 3] = 74 if k % 2 else 41  # Mo -> W / Nb
        del d[3 * k + 1]  # an S vacancy
        r = d.copy()
        r.positions += np.random.default_rng(k).normal(0, 0.02, r.positions.shape)
        write_structure(host / "CIF" / f"MoS2_{k}_unrelaxed.cif", d)
        write_structure(host / "CIF" / f"MoS2_{k}_relaxed.cif", r)
        rows.append(f"MoS2_{k},{len(d)}")
    (host / "meta.csv").write_text("atoms_id,n_atoms\n" + "\n".join(rows) + "\n")
    return pristine


def test_2dmd_defect_records(tmp_path: Path) -> None:
    pristine = _twodmd(tmp_path)
    ds = RelaxPairDataset(tmp_path / "MoS2", layout="2dmd", dtype=torch.float64)
    rec = ds[1]
    n = len(pristine)
    assert rec[K.POSITIONS].shape == (n, 3)  # 26 atoms + 1 vacancy placeholder
    assert rec[K.DEFECT].tolist().count(2) == 1 and rec[K.DEFECT].tolist().count(1) == 1
    assert rec[K.DEFECT][-1] == 2 and int(rec[K.ATOMIC_NUMBERS][-1]) == 16
    # the placeholder sits on the missing pristine site in both structures
    assert torch.allclose(rec[K.POSITIONS][-1], torch.tensor(pristine.positions[4]), atol=1e-4)
    assert torch.equal(rec[K.RELAXED_POSITIONS][-1], rec[K.POSITIONS][-1])
    sub = int(torch.nonzero(rec[K.DEFECT] == 1)[0])
    assert int(rec[K.ATOMIC_NUMBERS][sub]) == 74
    # a folder of hosts: same records, groups recorded
    many = RelaxPairDataset(tmp_path, layout="2dmd", dtype=torch.float64)
    assert many.groups == ["MoS2"] * 4 and torch.equal(many[1][K.DEFECT], rec[K.DEFECT])


def test_2dmd_missing_pristine(tmp_path: Path) -> None:
    _twodmd(tmp_path)
    (tmp_path / "MoS2" / "MoS2.cif").unlink()
    with pytest.raises(FileNotFoundError, match="no pristine reference"):
        RelaxPairDataset(tmp_path / "MoS2", layout="2dmd")


# ---- trajectories --------------------------------------------------------------------------------


def _frames(n: int = 6) -> list[Atoms]:
    out = []
    for k in range(n):
        a = bulk("Cu", "fcc", a=3.6, cubic=True)
        a.rattle(0.05, seed=k)
        a.calc = EMT()
        a.get_potential_energy()
        out.append(a)
    return out


def _write_frames(path: Path) -> Path:
    write_structure(path, _frames(2))
    return path


def test_trajectory_formats_agree(tmp_path: Path) -> None:
    frames = _frames()
    write_structure(tmp_path / "t.extxyz", frames)
    write_structure(tmp_path / "t.db", frames)
    mol = [molecule("H2O") for _ in range(3)]
    for k, m in enumerate(mol):
        m.positions += 0.01 * k
    np.savez(
        tmp_path / "w.npz",
        R=np.stack([m.positions for m in mol]),
        z=mol[0].numbers,
        E=np.array([1.0, 2.0, 3.0]),
        F=np.ones((3, 3, 3)),
    )
    x = TrajectoryDataset(tmp_path / "t.extxyz", dtype=torch.float64)
    d = TrajectoryDataset(tmp_path / "t.db", dtype=torch.float64)
    assert len(x) == len(d) == 6
    for k in range(6):
        assert float(x[k][K.ENERGY]) == pytest.approx(frames[k].get_potential_energy())
        assert torch.allclose(x[k][K.FORCES], d[k][K.FORCES]) and torch.allclose(
            x[k][K.POSITIONS], d[k][K.POSITIONS]
        )
    kcal = 0.0433641
    w = TrajectoryDataset(tmp_path / "w.npz", energy_scale=kcal)
    assert len(w) == 3 and float(w[2][K.ENERGY]) == pytest.approx(3 * kcal)
    assert w[0][K.PBC].tolist() == [False] * 3 and torch.allclose(w[1][K.FORCES], torch.full((3, 3), kcal))
    both = TrajectoryDataset([tmp_path / "t.extxyz", tmp_path / "w.npz"])
    assert len(both) == 9 and both.ids[6] == "w:0"


def test_trajectory_split_and_bad_npz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUINTET_CACHE", str(tmp_path / "cache"))
    write_structure(tmp_path / "t.extxyz", _frames(10))
    tr = TrajectoryDataset(tmp_path / "t.extxyz", split="train")
    te = TrajectoryDataset(tmp_path / "t.extxyz", split="test")
    assert len(tr) == 8 and len(te) == 1 and (D.split_cache_dir(tmp_path / "t_splits") / "split.json").is_file()
    assert not (tmp_path / "t_splits").exists()
    np.savez(tmp_path / "bad.npz", R=np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match=r"bad\.npz: MD17-style npz needs keys R and z"):
        TrajectoryDataset(tmp_path / "bad.npz")
    np.savez(tmp_path / "nan.npz", R=np.full((1, 2, 3), np.nan), z=np.array([1, 1]))
    with pytest.raises(ValueError, match=r"nan\.npz \(frame 0\): non-finite"):
        TrajectoryDataset(tmp_path / "nan.npz")


# ---- integration: the generated data sets in ../shared/data/materials ----------------------------


@pytest.mark.integration
def test_shared_defects2d_labels_and_dummy_mae(shared_data: Path, tmp_path: Path) -> None:
    root = shared_data / "materials" / "defects2d"
    readme_mae = {"MoS2": 0.013, "MoSe2": 0.010, "WSe2": 0.014, "hBN": 0.011}
    for host, mae_ref in readme_mae.items():
        ds = RelaxPairDataset(root / host, layout="2dmd", split_dir=tmp_path / host, dtype=torch.float64)
        maes = []
        for k, pid in enumerate(ds.ids):
            rec = ds[k]
            tags = ds.meta[pid]["defects"].split(";")
            assert int((rec[K.DEFECT] == 2).sum()) == sum(t.startswith("vac_") for t in tags), pid
            assert int((rec[K.DEFECT] == 1).sum()) == sum(t.startswith("sub_") for t in tags), pid
            real = rec[K.DEFECT] != 2
            maes.append(float((rec[K.RELAXED_POSITIONS][real] - rec[K.POSITIONS][real]).abs().mean()))
        assert np.mean(maes) == pytest.approx(mae_ref, abs=0.003), host
    train = RelaxPairDataset(root, layout="2dmd", split="train", split_dir=tmp_path / "all")
    test = RelaxPairDataset(root, layout="2dmd", split="test", split_dir=tmp_path / "all")
    assert len(train) + len(test) < 836 and not set(train.ids) & set(test.ids)
    assert set(test.groups) == {"MoS2", "MoSe2", "WSe2", "hBN"}


@pytest.mark.integration
def test_shared_bulk_oxides_and_md(shared_data: Path, tmp_path: Path) -> None:
    ds = RelaxPairDataset(shared_data / "materials" / "bulk_oxides", split_dir=tmp_path, dtype=torch.float64)
    assert len(ds) == 50
    maes = []
    for k, pid in enumerate(ds.ids):
        rec = ds[k]
        vol = float(torch.linalg.det(rec[K.RELAXED_CELL]).abs())
        assert vol == pytest.approx(float(ds.meta[pid]["vol_relaxed"]), rel=1e-3)
        maes.append(float((rec[K.RELAXED_POSITIONS] - rec[K.POSITIONS]).abs().mean()))
    assert np.mean(maes) == pytest.approx(0.17, abs=0.03)
    md = TrajectoryDataset(
        shared_data / "materials" / "md_xtb" / "ethanol_500K.extxyz", split="val", split_dir=tmp_path / "md"
    )
    assert len(md) == 500 and md[0][K.FORCES].shape == (9, 3) and md[0][K.PBC].tolist() == [False] * 3


def test_read_only_data_is_never_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    _custom_pairs(data, n=4)
    monkeypatch.setenv("QUINTET_CACHE", str(tmp_path / "cache"))
    data.chmod(0o555)  # read-only, as ../shared/data is (root could still write: mode bits decide)
    try:
        assert D.writable_dir(data, "splits").parent == tmp_path / "cache" / "splits"
        ds = RelaxPairDataset(data, split="train")
        assert len(ds) == 2 and sorted(p.name for p in data.iterdir()) == ["CIF", "meta.csv"]
        assert len(list((tmp_path / "cache" / "splits").glob("data-*/split.json"))) == 1
    finally:
        data.chmod(0o755)


def test_datasets_pickle_for_worker_processes(tmp_path: Path) -> None:
    import pickle

    _custom_pairs(tmp_path, n=2)
    ds = RelaxPairDataset(tmp_path, preload=True)
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[1][K.RELAXED_POSITIONS], ds[1][K.RELAXED_POSITIONS])
    assert clone._cache.keys() == ds._cache.keys()  # parsed arrays travel with the dataset
