"""DeepRelax end to end: tiny training, reload, eval, predict (CLI), bad inputs."""

from __future__ import annotations

import csv
from pathlib import Path

import ase.db
import ase.io
import numpy as np
import pytest
import torch

from quintet.atomistic import keys as K
from quintet.atomistic.batch import collate
from quintet.atomistic.structures import write_structure
from quintet.cli import main
from quintet.deeprelax.data import pairs_to_records
from quintet.deeprelax.inference import relax_batch
from quintet.deeprelax.jobs import (
    DataConfig,
    EvalJob,
    PredictJob,
    TrainJob,
    evaluate,
    load_dataset,
    load_deeprelax,
    predict,
    read_db_pairs,
    train,
)
from quintet.deeprelax.model import ModelConfig
from quintet.train import TrainConfig


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text().splitlines()))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> list:
    """Eight Cu cells (strained, rattled) and their EMT minima, made with the data layer's oracle."""
    import ase.io

    from quintet.atomistic.oracle import RelaxPairsConfig, make_relax_pairs

    out = tmp_path_factory.mktemp("emt") / "pairs"
    make_relax_pairs(
        RelaxPairsConfig(
            out=out, n=8, prototypes=["Cu:fcc:3.61"], elements=[], substitute_fraction=0.0, strain=0.04,
            rattle=0.08, cell_filter="unitcell", oracle="emt", seed=3,
        ),
        progress=False,
    )  # fmt: skip
    ids = sorted(p.name[: -len("_unrelaxed.cif")] for p in (out / "CIF").glob("*_unrelaxed.cif"))
    return [
        (ase.io.read(out / "CIF" / f"{i}_unrelaxed.cif"), ase.io.read(out / "CIF" / f"{i}_relaxed.cif"))
        for i in ids
    ]


@pytest.fixture(scope="module")
def pair_db(pairs, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("db") / "pairs.db"
    with ase.db.connect(str(path)) as db:
        for k, (u, r) in enumerate(pairs):
            db.write(u, pair_id=f"p{k}", relaxed=0)
            db.write(r, pair_id=f"p{k}", relaxed=1)
    return path


@pytest.fixture(scope="module")
def trained(pair_db, tmp_path_factory) -> tuple[Path, TrainJob]:
    out = tmp_path_factory.mktemp("run")
    job = TrainJob(
        data=DataConfig(root=str(pair_db), layout="db", fractions=(1.0, 0.0, 0.0)),
        model=ModelConfig(hidden=32, num_layers=1, num_rbf=16),
        train=TrainConfig(
            max_epochs=100, batch_size=8, lr=5e-3, ema_decay=0.0, progress=False, early_stop_patience=None,
            accelerator="cpu", monitor="train/loss", plateau_patience=1000,
        ),
        out=str(out),
    )  # fmt: skip
    job.loss.solve_in_val = False
    torch.manual_seed(0)
    return train(job), job


def test_tiny_training_beats_the_dummy_and_reload_is_identical(trained, tmp_path: Path) -> None:
    path, job = trained
    assert (Path(job.out) / "config.yaml").is_file()
    ev = EvalJob(model=str(path), data=job.data, split="train", out=str(tmp_path / "ev"))
    summary = evaluate(ev)
    assert summary["coord_mae_A"] < 0.8 * summary["dummy_coord_mae_A"]
    assert summary["guess_coord_mae_A"] < summary["dummy_coord_mae_A"]  # the supervised first guess moved too
    assert summary["distance_mae_A"] < summary["dummy_distance_mae_A"]
    assert (tmp_path / "ev" / "metrics.json").is_file() and (tmp_path / "ev" / "per_structure.csv").is_file()
    m1, _ = load_deeprelax(path)
    m2, _ = load_deeprelax(path)
    ds = load_dataset(job.data, "train", m1.cfg)
    batch = collate([ds[0], ds[1]])
    r1, r2 = relax_batch(m1, batch), relax_batch(m2, batch)
    assert torch.equal(r1["positions"], r2["positions"]) and torch.equal(r1["cell"], r2["cell"])
    # shift_A: the mean distance the prediction moves the atoms of a structure (the σ-free error proxy)
    n0 = len(ds[0][K.POSITIONS])
    shift0 = float((r1["positions"][:n0] - ds[0][K.POSITIONS]).norm(dim=-1).mean())
    assert float(_rows(tmp_path / "ev" / "per_structure.csv")[0]["shift_A"]) == pytest.approx(shift0, rel=1e-4)
    assert -1.0 <= summary["shift_spearman"] <= 1.0


def test_model_files_from_before_the_cell_scale_still_load(trained, tmp_path: Path) -> None:
    """A file written before ``cell_uncertainty`` and ``detach_base_cell`` existed (no such keys, no
    ``cell_scale`` weights) loads without the head, with the base cell attached, and relaxes exactly like
    the model it came from; only the cell's share is gone."""
    from quintet.train.checkpoint import load_model_file, save_model

    path, job = trained
    d = load_model_file(path)
    cfg = dict(d["extra"]["model"])  # written today: extra = {"system": "deeprelax", "model": ...}
    assert cfg.pop("cell_uncertainty") is True
    assert cfg.pop("detach_base_cell") is True  # nor the detached base cell (kept as they were trained)
    state = {k: v for k, v in d["state_dict"].items() if not k.startswith("cell_scale")}
    old = save_model(tmp_path / "old.pt", state, d["config"], extra={"deeprelax_model": cfg})
    m_old, _ = load_deeprelax(old)
    m_new, _ = load_deeprelax(path)
    assert not m_old.cfg.cell_uncertainty and m_old.cell_scale is None and m_new.cell_scale is not None
    assert not m_old.cfg.detach_base_cell and m_new.cfg.detach_base_cell
    ds = load_dataset(job.data, "train", m_new.cfg)
    batch = collate([ds[0], ds[1]])
    r_old, r_new = relax_batch(m_old, batch), relax_batch(m_new, batch)
    assert torch.equal(r_old["positions"], r_new["positions"]) and torch.equal(r_old["cell"], r_new["cell"])
    assert bool((r_new["cell_uncertainty"] > 0).all()) and bool((r_old["cell_uncertainty"] == 0).all())
    assert bool((r_new["uncertainty"] > r_old["uncertainty"]).all())


def test_predict_cli_writes_cifs_and_csv_resumes_and_never_overwrites(trained, pairs, tmp_path: Path) -> None:
    path, _ = trained
    inp = tmp_path / "in"
    for k, (u, _) in enumerate(pairs[:3]):
        write_structure(inp / f"s{k}.cif", u)
    out = tmp_path / "out"
    assert (
        main(
            [
                "deeprelax",
                "predict",
                "-m",
                str(path),
                str(inp),
                "-o",
                str(out),
                "--finish-with",
                "emt",
                "finish_filter=unitcell",
            ]
        )
        == 0
    )
    rows = _rows(out / "predictions.csv")
    assert sorted(r["id"] for r in rows) == ["s0", "s1", "s2"]
    assert all((out / r["output"]).is_file() for r in rows)
    assert all(int(r["finish_steps"]) >= 0 and float(r["finish_fmax"]) <= 0.05 for r in rows)
    assert all(float(r["uncertainty_A"]) > 0 and float(r["cell_uncertainty_A"]) > 0 for r in rows)
    # resume: a half-done folder only gets the missing structure
    (out / "s1.cif").unlink()
    before = (out / "s0.cif").stat().st_mtime_ns
    same = dict(model=str(path), inputs=[str(inp / "*.cif")], out=str(out), finish_with="emt", finish_filter="unitcell")
    predict(PredictJob(**same))
    assert (out / "s1.cif").is_file() and (out / "s0.cif").stat().st_mtime_ns == before
    assert len(_rows(out / "predictions.csv")) == 3
    # resuming with another model or other output settings would mix predictions: refused, nothing touched
    other = tmp_path / "other.pt"
    other.write_bytes(path.read_bytes() + b"\0")  # another file (bytes differ); the check runs before loading
    (out / "s1.cif").unlink()
    csv_before = (out / "predictions.csv").read_bytes()
    for change, what in (({"model": str(other)}, "models"), ({"finish_with": "none"}, "finish_with")):
        with pytest.raises(ValueError, match=f"other {what}.*resume=false"):
            predict(PredictJob(**{**same, **change}))
    assert (out / "predictions.csv").read_bytes() == csv_before and not (out / "s1.cif").exists()
    predict(PredictJob(**{**same, "finish_with": "none", "resume": False}))  # starts over: every structure again
    rows = _rows(out / "predictions.csv")
    assert len(rows) == 3 and all("finish_steps" not in r for r in rows)
    assert (out / "s0.cif").stat().st_mtime_ns != before
    with pytest.raises(ValueError, match="never overwritten"):
        predict(PredictJob(model=str(path), inputs=[str(inp)], out=str(inp)))
    with pytest.raises(FileNotFoundError):
        predict(PredictJob(model=str(path), inputs=[str(tmp_path / "nothing*.cif")], out=str(out)))
    # the finishing relaxation can be quasi-Newton (BFGS) instead of FIRE
    bf = tmp_path / "bfgs"
    argv = ["deeprelax", "predict", "-m", str(path), str(inp / "s0.cif"), "-o", str(bf)]
    assert main([*argv, "--finish-with", "emt", "--finish-optimizer", "bfgs", "finish_filter=unitcell"]) == 0
    (row,) = _rows(bf / "predictions.csv")
    assert int(row["finish_steps"]) >= 0 and float(row["finish_fmax"]) <= 0.05
    assert "finish_optimizer: bfgs" in (bf / "config.yaml").read_text()
    # -m twice: an ensemble (here of one model with itself: no spread, the same uncertainty)
    ens = tmp_path / "ens"
    assert main(["deeprelax", "predict", "-m", str(path), "-m", str(path), str(inp / "s0.cif"), "-o", str(ens)]) == 0
    (row,) = _rows(ens / "predictions.csv")
    single = next(r for r in rows if r["id"] == "s0")
    assert float(row["spread_A"]) == 0.0
    assert float(row["uncertainty_A"]) == pytest.approx(float(single["uncertainty_A"]), abs=2e-6)
    assert str(path) in (ens / "config.yaml").read_text().split("ensemble:")[1]
    # extxyz output carries the per-atom uncertainty (and the ensemble's spread)
    assert main([*argv[:-1], str(tmp_path / "xyz"), "-m", str(path), "--format", "extxyz"]) == 0
    (row,) = _rows(tmp_path / "xyz" / "predictions.csv")
    got = ase.io.read(tmp_path / "xyz" / row["output"])
    assert row["output"] == "s0.extxyz" and len(got) == len(pairs[0][0])
    assert got.arrays["uncertainty_A"].max() == pytest.approx(float(row["max_atom_uncertainty_A"]), abs=2e-6)
    assert np.all(got.arrays["spread_A"] == 0.0)


def test_bad_pairs_give_clear_errors(pairs, tmp_path: Path) -> None:
    u, r = pairs[0]
    # species differ
    r2 = r.copy()
    r2.numbers[0] = 28
    with pytest.raises(ValueError, match="species differ"):
        pairs_to_records([(u, r2)])
    # atom count differs
    with pytest.raises(ValueError, match="atoms"):
        pairs_to_records([(u, r[:-1])])
    # an atom that moved half a cell: ambiguous label
    from quintet.deeprelax.data import DeepRelaxTransform

    rec = pairs_to_records([(u, r)])[0]
    rec[K.RELAXED_POSITIONS] = rec[K.RELAXED_POSITIONS].clone()
    rec[K.RELAXED_POSITIONS][0] += rec[K.RELAXED_CELL][0] * 0.6
    with pytest.raises(ValueError, match="ambiguous"):
        DeepRelaxTransform()(rec)
    # a db pair missing its relaxed row
    path = tmp_path / "bad.db"
    with ase.db.connect(str(path)) as db:
        db.write(u, pair_id="x", relaxed=0)
    with pytest.raises(ValueError, match="relaxed=1"):
        read_db_pairs(path)


def test_one_atom_cell_and_2d_slab_are_handled(trained) -> None:
    from ase.build import bulk, mx2

    path, _ = trained
    model, _ = load_deeprelax(path)
    one = bulk("Cu", "fcc", a=3.7)
    slab = mx2("MoS2", size=(2, 2, 1), vacuum=8.0)
    slab.pbc = (True, True, False)
    recs = []
    for a in (one, slab):
        recs.append(
            {
                K.POSITIONS: torch.tensor(a.positions, dtype=torch.float32),
                K.ATOMIC_NUMBERS: torch.tensor(a.numbers),
                K.CELL: torch.tensor(a.cell[:], dtype=torch.float32),
                K.PBC: torch.tensor(a.pbc),
            }
        )
    res = relax_batch(model, collate(recs))
    # nothing places a lone atom: it stays at the network's first guess (fractional coordinates carried)
    assert torch.allclose(res["positions"][0], res["init_positions"][0])
    assert torch.equal(res["cell"][1, 2], recs[1][K.CELL][2])  # vacuum vector kept
    assert np.isfinite(res["positions"].numpy()).all()


def test_train_and_eval_verbs_and_clear_config_errors(pair_db: Path, tmp_path: Path, capsys) -> None:
    common = [f"data.root={pair_db}", "data.layout=db", "data.fractions=[0.75,0.0,0.25]"]
    argv = [
        "deeprelax", "train", *common, "model.hidden=16", "model.num_layers=1", "model.num_rbf=8",
        "train.max_epochs=1", "train.progress=false", "train.accelerator=cpu", f"out={tmp_path / 'run'}",
    ]  # fmt: skip
    assert main(argv) == 0
    best = tmp_path / "run" / "best.pt"
    assert best.is_file() and (tmp_path / "run" / "config.yaml").is_file()
    assert main(["deeprelax", "eval", "-m", str(best), *common, f"out={tmp_path / 'ev'}"]) == 0
    assert "coord_mae_ratio_vs_dummy" in capsys.readouterr().out
    # "predict, then finish" from the CLI: oracle steps from the prediction next to those from the input
    fin = ["--finish-with", "emt", "--finish-limit", "2", "finish_filter=unitcell", "-o", str(tmp_path / "evf")]
    assert main(["deeprelax", "eval", "-m", str(best), *common, *fin]) == 0
    rows = [r for r in _rows(tmp_path / "evf" / "per_structure.csv") if r.get("finish_steps")]
    assert len(rows) == 2 and all(r["unrelaxed_steps_from"] == "oracle" for r in rows)  # an ASE db records none
    assert '"median_unrelaxed_steps"' in capsys.readouterr().out
    assert main(["deeprelax", "train", "model.hiden=3"]) == 1
    assert "unknown config key" in capsys.readouterr().err
    assert main(["deeprelax", "eval", "-m", str(tmp_path / "missing.pt"), *common]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_extra_train_folders_join_the_training_split_without_eval_compositions(tmp_path: Path) -> None:
    import shutil

    from quintet.atomistic.datasets import RelaxPairDataset
    from quintet.atomistic.oracle import RelaxPairsConfig, make_relax_pairs

    common = dict(prototypes=["Cu:fcc:3.7"], strain=0.0, rattle=0.02, cell_filter="unitcell", max_steps=50)
    main_dir = make_relax_pairs(
        RelaxPairsConfig(out=tmp_path / "main", n=10, elements=["Cu", "Ni", "Pd", "Au"], seed=5, **common),
        progress=False,
    )
    extra = make_relax_pairs(
        RelaxPairsConfig(out=tmp_path / "extra", n=4, sublattices=["Cu:Ag,Pt/2"], seed=6, **common),
        progress=False,
    )
    # a copy of a test pair under another id: same composition, so it must stay out of training
    test_id = RelaxPairDataset(main_dir, split="test", fractions=(0.6, 0.2, 0.2)).ids[0]
    for kind in ("unrelaxed", "relaxed"):
        shutil.copy(main_dir / "CIF" / f"{test_id}_{kind}.cif", extra / "CIF" / f"dup_{kind}.cif")
    rows = _rows(extra / "meta.csv")
    rows[3]["converged"] = "0"  # the oracle hit its step limit: not a training target
    rows.append({"atoms_id": "dup"})  # no formula: read from the CIF
    with open(extra / "meta.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    from quintet.io import write_dataset_manifest

    write_dataset_manifest(extra)  # a deliberate edit of a generated folder: hash it again

    cfg = ModelConfig(hidden=16, num_layers=1, num_rbf=8)
    data = DataConfig(root=str(main_dir), fractions=(0.6, 0.2, 0.2), extra_train=[str(extra)])
    base = load_dataset(DataConfig(root=str(main_dir), fractions=(0.6, 0.2, 0.2)), "train", cfg)
    tr = load_dataset(data, "train", cfg)
    assert len(tr) == len(base) + 3  # three Ag/Pt pairs: not the unconverged one, not the duplicate
    assert tr.datasets[1].ids == ["emt_s6_00000", "emt_s6_00001", "emt_s6_00002"]
    assert np.allclose(tr[len(base)][K.POSITIONS], tr.datasets[1][0][K.POSITIONS])
    assert load_dataset(data, "test", cfg).ids == RelaxPairDataset(main_dir, split="test", fractions=(0.6, 0.2, 0.2)).ids
    keep_all = DataConfig(**{**data.__dict__, "exclude_eval_formulas": False})
    assert len(load_dataset(keep_all, "train", cfg)) == len(base) + 4  # the duplicate is back
    with pytest.raises(ValueError, match="extra_train needs the custom or 2dmd layout"):
        load_dataset(DataConfig(root=str(main_dir), layout="db", extra_train=[str(extra)]), "train", cfg)


def test_train_seed_sets_the_initial_weights(pair_db: Path, tmp_path: Path) -> None:
    """Same ``train.seed``: identical model files, whatever ran before in the process; another seed
    (an ensemble member): other weights."""

    def run(seed: int, name: str) -> dict[str, torch.Tensor]:
        job = TrainJob(
            data=DataConfig(root=str(pair_db), layout="db", fractions=(1.0, 0.0, 0.0)),
            model=ModelConfig(hidden=8, num_layers=1, num_rbf=8),
            train=TrainConfig(
                max_epochs=1, batch_size=4, progress=False, seed=seed, early_stop_patience=None,
                accelerator="cpu", monitor="train/loss",
            ),
            out=str(tmp_path / name),
        )  # fmt: skip
        job.loss.solve_in_val = False
        return load_deeprelax(train(job))[0].state_dict()

    a, b, c = run(0, "a"), run(0, "b"), run(1, "c")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_calibrate_rescales_the_reported_sigma_only(trained, tmp_path: Path, capsys) -> None:
    """``deeprelax calibrate`` stores the σ factor: the coverage on the same pairs becomes nominal, the
    uncertainty scales by the factor, the relaxed positions stay bit-equal; a bad stored factor is refused."""
    from quintet.deeprelax.maths import LAPLACE_LEVEL
    from quintet.train.checkpoint import load_model_file, save_model

    path, job = trained
    out = tmp_path / "cal" / "calibrated.pt"
    assert main(["deeprelax", "calibrate", "-m", str(path), "--data", job.data.root, "data.layout=db",
                 "data.fractions=[1.0,0.0,0.0]", "--split", "train", "-o", str(out)]) == 0  # fmt: skip
    assert "calibrated model" in capsys.readouterr().out and (out.parent / "calibration.json").is_file()
    before = evaluate(EvalJob(model=str(path), data=job.data, split="train", out=str(tmp_path / "e0")))
    after = evaluate(EvalJob(model=str(out), data=job.data, split="train", out=str(tmp_path / "e1")))
    assert abs(before["coverage"] - LAPLACE_LEVEL) > 0.05  # the tiny model's raw bands are off
    assert abs(after["coverage"] - LAPLACE_LEVEL) < 0.02 and abs(after["calibration_factor"] - 1.0) < 0.05
    assert after["coord_mae_A"] == before["coord_mae_A"] and after["cell_mae_A"] == before["cell_mae_A"]
    assert after["coverage_uncalibrated"] == pytest.approx(before["coverage"], abs=1e-9)
    m0, m1 = load_deeprelax(path)[0], load_deeprelax(out)[0]
    assert m0.uncertainty_scale == 1.0 and m1.uncertainty_scale == pytest.approx(before["calibration_factor"])
    ds = load_dataset(job.data, "train", m0.cfg)
    r0, r1 = relax_batch(m0, collate([ds[0]])), relax_batch(m1, collate([ds[0]]))
    assert torch.equal(r0["positions"], r1["positions"])
    assert torch.allclose(r1["uncertainty"], r0["uncertainty"] * m1.uncertainty_scale)
    d = load_model_file(out)
    bad = save_model(tmp_path / "bad.pt", d["state_dict"], d["config"], {**d["extra"], "uncertainty_scale": -1.0})
    with pytest.raises(ValueError, match=r"bad\.pt: uncertainty_scale must be a positive number"):
        load_deeprelax(bad)


def test_train_calibrates_the_saved_model_on_its_validation_split(pair_db: Path, tmp_path: Path) -> None:
    from quintet.deeprelax.maths import LAPLACE_LEVEL
    from quintet.train.checkpoint import load_model_file

    data = DataConfig(root=str(pair_db), layout="db", fractions=(0.5, 0.25, 0.25))
    job = TrainJob(
        data=data, model=ModelConfig(hidden=8, num_layers=1, num_rbf=8), out=str(tmp_path / "run"),
        train=TrainConfig(max_epochs=2, batch_size=4, progress=False, accelerator="cpu", monitor="val/loss"),
    )  # fmt: skip
    best = train(job)
    extra = load_model_file(best)["extra"]
    assert extra["calibration_pairs"] == 2 and extra["uncertainty_scale"] > 0
    ev = evaluate(EvalJob(model=str(best), data=data, split="val", out=str(tmp_path / "ev")))
    assert abs(ev["coverage"] - LAPLACE_LEVEL) < 0.05


def test_a_crystal_written_in_another_cell_setting_gets_the_same_relaxation(trained) -> None:
    """Predictions are made in the Niggli basis and mapped back: the same (triclinic) crystal written with
    cell rows a1, a2, a1 + a3 gets the same relaxed structure, expressed in the basis the user gave."""
    from quintet.deeprelax import relax
    from quintet.deeprelax.data import canonical_record, from_canonical

    path, _ = trained
    rng = np.random.default_rng(4)
    plain = ase.Atoms("Cu4", cell=np.array([[3.7, 0.1, 0.05], [0.2, 3.6, 0.1], [0.15, 0.3, 3.65]]), pbc=True)
    plain.set_scaled_positions(np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]) + rng.normal(0, 0.01, (4, 3)))
    t = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1]])
    skew = plain.copy()
    skew.set_cell(t @ plain.cell[:], scale_atoms=False)
    skew.wrap()
    a, b = relax([plain, skew], model=str(path))
    np.testing.assert_allclose(b.cell[:], t @ a.cell[:], atol=1e-4)  # the same lattice, in the user's basis
    d = b.cell.scaled_positions(b.positions) - b.cell.scaled_positions(a.positions)
    np.testing.assert_allclose(d - np.round(d), 0, atol=1e-4)  # the same atoms, up to lattice translations
    assert a.info["uncertainty_A"] == pytest.approx(b.info["uncertainty_A"], rel=1e-4)
    # the mapping itself is exact: canonical -> back gives the input
    rec = {K.POSITIONS: torch.tensor(skew.positions), K.CELL: torch.tensor(skew.cell[:]), K.PBC: torch.ones(3, dtype=torch.bool)}
    can, m, n = canonical_record(rec)
    pos, cell = from_canonical(can[K.POSITIONS], can[K.CELL], m, n)
    assert torch.allclose(pos, rec[K.POSITIONS]) and torch.allclose(cell, rec[K.CELL])
    assert not torch.allclose(can[K.CELL], rec[K.CELL])  # the skewed cell was reduced
