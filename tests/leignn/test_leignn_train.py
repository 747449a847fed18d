"""End-to-end: a short training on EMT data beats the predict-zero force baseline by 2x, the
model file reloads into identical predictions, eval writes metrics + a parity plot, and the
calculator drives a short MD run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from quintet.atomistic import keys as K
from quintet.atomistic.md import MDConfig
from quintet.leignn.calc import LEIGNNCalculator
from quintet.leignn.md import LEIGNNMDJob, md
from quintet.leignn.model import LEIGNNModelConfig
from quintet.leignn.run import DataConfig, EvalConfig, LEIGNNJob, evaluate, load_model, train
from quintet.train import TrainConfig


@pytest.fixture(scope="module")
def trained(emt_file: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LEIGNNJob]:
    out = tmp_path_factory.mktemp("run")
    job = LEIGNNJob(
        data=DataConfig(path=str(emt_file), n_train=60, n_val=10, n_test=20, split_dir=str(out / "splits")),
        model=LEIGNNModelConfig(hidden=32, num_layers=2, num_rbf=16, cutoff=4.5, forces="conservative"),
        train=TrainConfig(
            max_epochs=12,
            batch_size=8,
            lr=3e-3,
            ema_decay=0.9,
            early_stop_patience=None,
            progress=False,
            seed=0,
        ),
        out=str(out / "leignn"),
    )
    return train(job), job


def test_training_beats_zero_baseline(trained: tuple[Path, LEIGNNJob], tmp_path: Path) -> None:
    path, job = trained
    res = evaluate(EvalConfig(model=str(path), data=job.data, split="test", out=str(tmp_path / "eval")))
    from quintet.leignn.run import load_splits

    test = load_splits(job.data, 4.5, None, torch.float32)["test"]
    zero_mae = 1000 * float(torch.cat([test[i][K.FORCES] for i in range(len(test))]).abs().mean())
    assert res.metrics["force_mae_meV_A"] < 0.5 * zero_mae, (res.metrics, zero_mae)
    assert res.parity_png is not None and res.parity_png.stat().st_size > 1000
    assert (tmp_path / "eval" / "config.yaml").is_file()
    # split=all scores the whole file: every frame, train + val + test
    whole = evaluate(EvalConfig(model=str(path), data=job.data, split="all", out=str(tmp_path / "all")))
    sizes = {s: len(d) for s, d in load_splits(job.data, 4.5, None, torch.float32).items()}
    assert whole.metrics["n_structures"] >= sum(sizes.values()) > res.metrics["n_structures"]


def test_reload_gives_identical_predictions(trained: tuple[Path, LEIGNNJob], emt_file: Path) -> None:
    from quintet.atomistic.batch import collate
    from quintet.atomistic.structures import from_ase, read_structures

    path, _ = trained
    frames = read_structures(emt_file, index=":3")
    batch = collate([from_ase(a, dtype=torch.float32, with_results=False) for a in frames])
    a, b = load_model(path), load_model(path)
    out_a, out_b = a(batch), b(batch)
    assert torch.equal(out_a[K.ENERGY], out_b[K.ENERGY])
    assert torch.equal(out_a[K.FORCES], out_b[K.FORCES])


def test_calculator_matches_model_and_runs_md(
    trained: tuple[Path, LEIGNNJob], emt_file: Path, tmp_path: Path
) -> None:
    from quintet.atomistic.batch import collate
    from quintet.atomistic.structures import from_ase, read_structures

    path, _ = trained
    atoms = read_structures(emt_file, index="0")[0]
    calc = LEIGNNCalculator.from_checkpoint(path)
    atoms.calc = calc
    out = calc.model(collate([from_ase(atoms, dtype=torch.float32, with_results=False)]))
    assert atoms.get_potential_energy() == pytest.approx(float(out[K.ENERGY]), rel=1e-6)
    assert np.allclose(atoms.get_forces(), out[K.FORCES].numpy(), atol=1e-6)
    assert atoms.get_stress().shape == (6,)
    res = md(
        LEIGNNMDJob(
            model=str(path),
            structure=str(emt_file),
            index=0,
            md=MDConfig(ensemble="langevin", steps=50, write_every=10, out=str(tmp_path / "md")),
        )
    )
    assert res.steps_done == 50 and not res.stopped_early
    import ase.io

    assert len(ase.io.read(res.trajectory, index=":")) == 6
    assert res.thermo_png is not None and res.thermo_png.is_file()


def test_unknown_element_and_empty_structure_raise(trained: tuple[Path, LEIGNNJob]) -> None:
    from ase import Atoms
    from ase.build import bulk

    calc = LEIGNNCalculator.from_checkpoint(trained[0])
    au = bulk("Au", "fcc", a=4.08, cubic=True)
    au.calc = calc
    with pytest.raises(ValueError, match="Au were not in this model's training data"):
        au.get_potential_energy()
    empty = Atoms(cell=np.eye(3) * 5, pbc=True)
    empty.calc = calc
    with pytest.raises(ValueError, match="empty"):
        empty.get_potential_energy()


def test_bad_model_file_raises(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"bad\.pt"):
        load_model(bad)


def test_train_seed_sets_the_initial_weights(emt_file: Path, tmp_path: Path) -> None:
    """Same ``train.seed``: identical model files, whatever ran before in the process; another seed
    (a committee member): other weights."""

    def run(seed: int, name: str) -> dict[str, torch.Tensor]:
        job = LEIGNNJob(
            data=DataConfig(path=str(emt_file), n_train=8, n_val=4, n_test=4, split_dir=str(tmp_path / "splits")),
            model=LEIGNNModelConfig(hidden=8, num_layers=1, num_rbf=8, cutoff=4.5),
            train=TrainConfig(max_epochs=1, batch_size=4, progress=False, seed=seed, early_stop_patience=None),
            out=str(tmp_path / name),
        )
        return load_model(train(job)).state_dict()

    a, b, c = run(0, "a"), run(0, "b"), run(1, "c")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.integration
def test_compiled_md_matches_eager_forces_and_stress(
    trained: tuple[Path, LEIGNNJob], emt_file: Path, tmp_path: Path
) -> None:
    """``compile=true``: the compiled calculator (conservative forces through autograd, and the stress)
    agrees with the eager one to float32 round-off, and ``quintet leignn md`` runs with it."""
    import warnings

    from quintet.atomistic.structures import read_structures

    path, _ = trained
    eager = read_structures(emt_file, index="0")[0]
    fast = eager.copy()
    eager.calc = LEIGNNCalculator.from_checkpoint(path)
    fast.calc = LEIGNNCalculator.from_checkpoint(path, compile=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fall-back to eager fails the test
        for k in range(2):  # a second geometry reuses the compiled graph
            for a in (eager, fast):
                a.rattle(0.02, seed=k)
            assert fast.get_potential_energy() == pytest.approx(eager.get_potential_energy(), abs=1e-4)
            assert np.abs(fast.get_forces() - eager.get_forces()).max() < 1e-4
            assert np.abs(fast.get_stress() - eager.get_stress()).max() < 1e-5
    assert fast.calc.model.compiled
    res = md(
        LEIGNNMDJob(
            model=str(path), structure=str(emt_file), index=0, compile=True,
            md=MDConfig(ensemble="nve", steps=20, write_every=10, out=str(tmp_path / "md")),
        )
    )  # fmt: skip
    assert res.steps_done == 20 and not res.stopped_early


def test_predict_verb_writes_energy_forces_and_stress_to_extxyz(
    trained: tuple[Path, LEIGNNJob], emt_file: Path, tmp_path: Path
) -> None:
    """``quintet leignn predict`` through the shared pipeline: one ``<id>_<k>.extxyz`` per frame with the
    model's energy, forces and stress, equal to the ASE calculator's; a rerun resumes."""
    import ase.io

    from quintet.cli import main
    from quintet.io import read_csv

    path, _ = trained
    frames = ase.io.read(emt_file, index=":3")
    ase.io.write(tmp_path / "three.extxyz", frames)
    assert main(["leignn", "predict", str(tmp_path / "three.extxyz"), "-m", str(path), "-o", str(tmp_path / "p")]) == 0
    rows = read_csv(tmp_path / "p" / "predictions.csv")
    assert [r["id"] for r in rows] == ["three_0", "three_1", "three_2"]
    calc = LEIGNNCalculator.from_checkpoint(path)
    for row, atoms in zip(rows, frames, strict=True):
        got = ase.io.read(tmp_path / "p" / row["output"])
        atoms.calc = calc
        assert got.get_potential_energy() == pytest.approx(atoms.get_potential_energy(), abs=1e-5)
        np.testing.assert_allclose(got.get_forces(), atoms.get_forces(), atol=1e-5)
        np.testing.assert_allclose(got.get_stress(), atoms.get_stress(), atol=1e-6)
        assert float(row["energy_eV"]) == pytest.approx(atoms.get_potential_energy(), abs=1e-5)
    assert main(["leignn", "predict", str(tmp_path / "three.extxyz"), "-m", str(path), "-o", str(tmp_path / "p")]) == 0
    assert len(read_csv(tmp_path / "p" / "predictions.csv")) == 3
