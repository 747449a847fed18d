"""End to end on synthetic defect pairs: a tiny training beats the dummy, reload, CLI, bad inputs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from quintet.atomistic.datasets import pair_record, unwrap_to_nearest
from quintet.atomistic.pipeline import Finisher
from quintet.atomistic.structures import read_structure, write_structure
from quintet.cli import main
from quintet.definet.model import DefiNetConfig
from quintet.definet.predict import EvalJob, evaluate_model, predict_batches
from quintet.definet.run import DataConfig, TrainJob, host_folders, load_definet, load_pairs, train
from quintet.definet.synthetic import write_2dmd
from quintet.train import TrainConfig, save_model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("defects")
    write_2dmd(root, "MoS2", 40, seed=0)
    job = TrainJob(
        data=DataConfig(root=str(root)),
        model=DefiNetConfig(hidden=16, num_layers=2, num_rbf=8, cutoff=4.5, max_neighbors=None),
        train=TrainConfig(
            max_epochs=10,
            steps_per_epoch=8,
            batch_size=4,
            lr=3e-3,
            ema_decay=0.0,
            early_stop_patience=None,
            monitor="val/coord_mae",
            progress=False,
        ),
        out=str(root / "run"),
    )
    torch.manual_seed(0)
    res = train(job)
    return root, job, res


def test_tiny_training_beats_the_dummy(trained):
    _, _, res = trained
    hist = res.history
    assert hist[-1]["train/loss"] < hist[0]["train/loss"]
    best = min(r["val/coord_mae"] for r in hist)
    assert best < 0.8 * hist[0]["val/dummy_coord_mae"], (best, hist[0]["val/dummy_coord_mae"])


def test_reload_reproduces_outputs_and_eval_agrees(trained, tmp_path):
    _, job, res = trained
    model, d = load_definet(res.best_path)
    assert d["extra"]["system"] == "definet"
    ds = load_pairs(job.data, "test", model.cfg)
    recs = [ds[i] for i in range(len(ds))]
    p1, _ = predict_batches(model, recs, batch_size=3)
    save_model(tmp_path / "copy.pt", model, {}, d["extra"])
    again, _ = load_definet(tmp_path / "copy.pt")
    p2, _ = predict_batches(again, recs, batch_size=2)
    # an atom budget below one structure runs each structure alone: same predictions, same order
    p3, _ = predict_batches(again, recs, batch_size=3, max_atoms=1)
    for a, b, c in zip(p1, p2, p3, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
        np.testing.assert_allclose(a, c, atol=1e-6)
    summary = evaluate_model(
        EvalJob(model=str(res.best_path), data=job.data, out=str(tmp_path / "ev")), progress=False
    )
    assert summary["structures"] == len(recs)
    assert summary["coord_mae_ratio_vs_dummy"] < 1.0
    assert set(summary["local_mae_A"]) == {"3", "4", "5", "6"}
    assert (tmp_path / "ev" / "eval.json").is_file() and (tmp_path / "ev" / "per_structure.csv").is_file()


def test_cli_predict_writes_cifs_and_resumes(trained, tmp_path, capsys):
    root, _, res = trained
    host = root / "MoS2" / "MoS2_pristine_supercell.cif"
    inputs = sorted((root / "MoS2" / "CIF").glob("*_unrelaxed.cif"))[:5]
    folder = tmp_path / "in"
    folder.mkdir()
    for f in inputs:
        (folder / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "pred"
    argv = [
        "definet",
        "predict",
        str(folder),
        "batch_size=2",
        "--model",
        str(res.best_path),
        "--pristine",
        str(host),
    ]
    assert main([*argv, "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "predictions.csv").read_text().splitlines()))
    assert [r["id"] for r in rows] == [f.name[: -len("_unrelaxed.cif")] for f in inputs]
    model, _ = load_definet(res.best_path)
    atoms = read_structure(inputs[0])
    rec = pair_record(atoms, None, read_structure(host), 0.3)
    pred, _ = predict_batches(model, [rec])
    written = read_structure(out / rows[0]["output"])
    assert len(written) == len(atoms) == rec["defect"].ne(2).sum().item()
    expected = pred[0][: len(atoms)]
    # CIF stores fractional coordinates wrapped into the cell: compare the nearest images
    unwrapped = unwrap_to_nearest(expected, written.positions, np.asarray(atoms.cell), atoms.pbc)
    np.testing.assert_allclose(unwrapped, expected, atol=1e-4)
    assert (out / "config.yaml").is_file()
    # a second run finds everything done
    assert main([*argv, "--out", str(out)]) == 0
    assert "resuming: 5 structures already in" in capsys.readouterr().out
    assert len(list(csv.DictReader((out / "predictions.csv").read_text().splitlines()))) == 5
    # resuming with other output settings (or another model) would mix two runs: refused, nothing written
    csv_before = (out / "predictions.csv").read_bytes()
    from quintet.definet.predict import PredictJob, predict

    with pytest.raises(ValueError, match=r"other tol.*resume=false"):
        predict(PredictJob(model=str(res.best_path), inputs=[str(folder)], pristine=str(host), out=str(out), tol=0.2))
    assert (out / "predictions.csv").read_bytes() == csv_before
    assert '"tol": 0.3' in (out / "predict_run.json").read_text()


def test_cli_label_rejects_an_interstitial_cleanly(trained, tmp_path, capsys):
    root, _, _ = trained
    host = read_structure(root / "MoS2" / "MoS2_pristine_supercell.cif")
    bad = host.copy()
    bad.append("Li")
    bad.positions[-1] = bad.cell[0] * 0.5 + bad.cell[1] * 0.2 + [0, 0, bad.positions[:, 2].max() + 2.0]
    write_structure(tmp_path / "bad.cif", bad)
    code = main(
        [
            "definet",
            "label",
            str(tmp_path / "bad.cif"),
            "--pristine",
            str(root / "MoS2" / "MoS2_pristine_supercell.cif"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "interstitials/adatoms are not supported" in err and "(Li" in err and "bad.cif" in err
    good = host.copy()
    del good[3]
    write_structure(tmp_path / "good.cif", good)
    assert (
        main(
            [
                "definet",
                "label",
                str(tmp_path / "good.cif"),
                "--pristine",
                str(root / "MoS2" / "MoS2_pristine_supercell.cif"),
                "--out",
                str(tmp_path / "lab"),
            ]
        )
        == 0
    )
    row = next(csv.DictReader((tmp_path / "lab" / "labels.csv").read_text().splitlines()))
    assert row["n_vacancies"] == "1" and row["vacancies"] == f"{host.get_chemical_symbols()[3]}3"
    labelled = read_structure(tmp_path / "lab" / "good_labelled.extxyz")
    assert labelled.arrays["defect"].tolist() == [0] * (len(host) - 1) + [2]


def test_bad_inputs_raise_clear_errors(trained, tmp_path):
    root, _, _ = trained
    save_model(tmp_path / "other.pt", torch.nn.Linear(2, 2), {}, {"system": "leignn"})
    with pytest.raises(ValueError, match="a leignn model file, but a definet model is needed"):
        load_definet(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        load_definet(tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match="no host folder"):
        host_folders(root, ["WSe2"])
    with pytest.raises(FileNotFoundError, match="every host was excluded"):
        host_folders(root, exclude=["MoS2"])
    code = main(
        [
            "definet",
            "predict",
            str(tmp_path),
            "--model",
            str(tmp_path / "missing.pt"),
            "--pristine",
            "x.cif",
            "--out",
            str(tmp_path / "never"),
        ]
    )
    assert code == 1 and not (tmp_path / "never").exists()  # nothing is written when the inputs are unusable
    assert main(["definet", "train", "model.hidden=abc", "--out", str(tmp_path / "r")]) == 1
    mos2 = read_structure(root / "MoS2" / "MoS2_pristine_supercell.cif")
    with pytest.raises(RuntimeError, match=r"oracle 'emt' failed on .*No EMT-potential"):
        Finisher("emt")(mos2)
    with pytest.raises(ValueError, match="needs an oracle"):
        Finisher("none")
    with pytest.raises(ValueError, match="unknown oracle 'vasp'"):
        Finisher("vasp")


def test_record_dtype_follows_the_model(trained):
    root, _, res = trained
    model, _ = load_definet(res.best_path)
    atoms = read_structure(next((root / "MoS2" / "CIF").glob("*_unrelaxed.cif")))
    rec = pair_record(atoms, None, read_structure(root / "MoS2" / "MoS2_pristine_supercell.cif"), 0.3, dtype=torch.float64)
    pred, _ = predict_batches(model, [rec])
    assert pred[0].shape == (rec["pos"].shape[0], 3) and np.isfinite(pred[0]).all()
    assert Path(res.best_path).name == "best.pt"


def test_predict_finish_with_emt_records_steps_and_converges(trained, tmp_path):
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from quintet.definet.predict import PredictJob, predict

    _, _, res = trained
    host = bulk("Cu", "fcc", a=3.6).repeat((3, 3, 3))
    write_structure(tmp_path / "host.cif", host)
    vac = host.copy()
    del vac[13]
    vac.numbers[0] = 28  # a Ni substitution too
    write_structure(tmp_path / "in" / "cu_vac.cif", vac)
    csv_path = predict(
        PredictJob(
            model=str(res.best_path),
            inputs=[str(tmp_path / "in")],
            pristine=str(tmp_path / "host.cif"),
            out=str(tmp_path / "out"),
            finish_with="emt",
            progress=False,
        )
    )
    row = next(csv.DictReader(csv_path.read_text().splitlines()))
    assert row["n_vacancies"] == "1" and row["n_substitutions"] == "1"
    assert int(row["finish_steps"]) >= 1 and float(row["finish_fmax"]) <= 0.05
    finished = read_structure(tmp_path / "out" / row["finished_output"])
    finished.calc = EMT()
    assert np.linalg.norm(finished.get_forces(), axis=1).max() <= 0.05 + 1e-6


def test_finish_optimizer_bfgs_converges_in_fewer_steps_than_fire_and_bad_names_raise():
    """A Cu vacancy near its EMT minimum: quasi-Newton needs fewer steps than FIRE's velocity ramp-up."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    vac = bulk("Cu", "fcc", a=3.6).repeat((3, 3, 3))
    del vac[13]
    vac.positions += np.random.default_rng(0).normal(scale=0.01, size=vac.positions.shape)
    fire = Finisher("emt", fmax=0.05, calc=EMT())(vac)
    bfgs = Finisher("emt", fmax=0.05, calc=EMT(), optimizer="bfgs")(vac)
    assert fire.converged and bfgs.converged and bfgs.fmax_final <= 0.05
    assert 1 <= bfgs.steps < fire.steps
    with pytest.raises(ValueError, match="finish_optimizer must be"):
        Finisher("emt", optimizer="newton")


@pytest.mark.integration
def test_compiled_definet_evaluates_and_predicts_like_the_eager_one(trained, tmp_path):
    """``compile=true`` (torch.compile through CompiledModel) gives the eager predictions to float32
    round-off, in ``eval`` (CLI) and in ``predict_batches`` on batches of two sizes."""
    import json
    import warnings

    from quintet.atomistic.nn import CompiledModel

    _, job, res = trained
    model, _ = load_definet(res.best_path)
    ds = load_pairs(job.data, "val", model.cfg)
    recs = [ds[i] for i in range(min(5, len(ds)))]
    fast = CompiledModel(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fall-back to eager fails the test
        for bs in (4, 2):
            eager, _ = predict_batches(model, recs, batch_size=bs)
            got, _ = predict_batches(fast, recs, batch_size=bs)
            for a, b in zip(got, eager, strict=True):
                np.testing.assert_allclose(a, b, atol=2e-4, rtol=0)
    assert fast.compiled
    summaries = {}
    for flag in ([], ["--compile"]):
        out = tmp_path / f"ev{len(flag)}"
        argv = ["definet", "eval", "--model", str(res.best_path), "--data", job.data.root, "--out", str(out)]
        assert main([*argv, "--split", "val", *flag]) == 0
        summaries[len(flag)] = json.loads((out / "eval.json").read_text())
    assert "compile: true" in (tmp_path / "ev1" / "config.yaml").read_text()
    assert summaries[1]["coord_mae_ratio_vs_dummy"] == pytest.approx(summaries[0]["coord_mae_ratio_vs_dummy"], rel=1e-4)


def test_uncertainty_is_a_seeded_jitter_spread_independent_of_batching(trained, tmp_path):
    """``uncertainty_A``: the spread of the predicted displacement over jittered inputs; the same for a
    structure alone or in a batch, growing with the jitter, absent with ``uncertainty_samples=0``."""
    from quintet.definet.predict import PredictJob, jitter_spread, predict

    root, _, res = trained
    model, _ = load_definet(res.best_path)
    host = read_structure(root / "MoS2" / "MoS2_pristine_supercell.cif")
    files = sorted((root / "MoS2" / "CIF").glob("*_unrelaxed.cif"))[:3]
    recs = [pair_record(read_structure(f), None, host, 0.3) for f in files]
    together = jitter_spread(model, recs, samples=4, jitter=0.02)
    alone = jitter_spread(model, recs[2:], samples=4, jitter=0.02)
    np.testing.assert_allclose(alone[0], together[2], rtol=1e-5, atol=1e-9)
    assert all(s.shape == (len(r["defect"]),) and np.all(s > 0) for s, r in zip(together, recs, strict=True))
    wider = jitter_spread(model, recs, samples=4, jitter=0.1)
    assert np.mean([w.mean() for w in wider]) > 1.2 * np.mean([t.mean() for t in together])
    with pytest.raises(ValueError, match="uncertainty_samples=1"):
        PredictJob(uncertainty_samples=1)
    folder = tmp_path / "in"
    folder.mkdir()
    for f in files:
        (folder / f.name).write_bytes(f.read_bytes())
    host_file = str(root / "MoS2" / "MoS2_pristine_supercell.cif")
    for samples, out in ((4, tmp_path / "u"), (0, tmp_path / "n")):
        job = PredictJob(model=str(res.best_path), inputs=[str(folder)], pristine=host_file, out=str(out))
        job.uncertainty_samples, job.progress = samples, False
        rows = list(csv.DictReader(predict(job).read_text().splitlines()))
        if samples:
            real = [s[: len(read_structure(f))].mean() for s, f in zip(together, files, strict=True)]
            np.testing.assert_allclose([float(r["uncertainty_A"]) for r in rows], real, rtol=1e-3)
        else:
            assert "uncertainty_A" not in rows[0]
