"""Training data as MACE/NequIP users bring it: separate train/valid/test files, ``REF_*`` keys,
per-frame weights, stress labels; bad labels refused with the file, frame and key named; the loss
terms for stress and weights checked against hand-computed values; fine-tuning with ``init_from``."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT

from quintet.atomistic import keys as K
from quintet.atomistic.batch import collate
from quintet.leignn.data import WEIGHT, DataConfig, load_splits
from quintet.leignn.model import LEIGNN, LEIGNNModelConfig
from quintet.leignn.run import LEIGNNJob, load_model, train
from quintet.leignn.task import LossConfig, PotentialTask
from quintet.train import TrainConfig


def mace_style_frames(n: int, seed: int, symbols: tuple[str, ...] = ("Cu", "Ni")) -> list:
    """Rattled 2x2x2 fcc cells labelled by EMT under MACE's keys (no calculator attached)."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        a = bulk(symbols[0], "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
        a.numbers[3] = ase.data.atomic_numbers[symbols[-1]]
        a.positions += rng.normal(scale=0.1, size=a.positions.shape)
        a.calc = EMT()
        e, f, s = a.get_potential_energy(), a.get_forces(), a.get_stress()
        a.calc = None
        a.info.update(REF_energy=e, REF_stress=s, config_weight=1.0 + k % 2)
        a.arrays["REF_forces"] = f
        frames.append(a)
    return frames


@pytest.fixture(scope="module")
def mace_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mace")
    out = {}
    for name, n, seed in (("train", 12, 0), ("valid", 4, 1), ("test", 4, 2)):
        out[name] = root / f"{name}.extxyz"
        ase.io.write(out[name], mace_style_frames(n, seed), format="extxyz")
    return out


def mace_data(files: dict[str, Path], **kw: object) -> DataConfig:
    keys = {"energy_key": "REF_energy", "forces_key": "REF_forces", "stress_key": "REF_stress", **kw}
    return DataConfig(
        train_file=str(files["train"]), valid_file=str(files["valid"]), test_file=str(files["test"]), **keys
    )  # type: ignore[arg-type]


def test_separate_files_and_mace_keys_are_read(mace_files: dict[str, Path]) -> None:
    splits = load_splits(mace_data(mace_files), 4.5, None, torch.float64, stress=True)
    assert {k: len(v) for k, v in splits.items()} == {"train": 12, "val": 4, "test": 4}
    ref = ase.io.read(mace_files["valid"], index="1")
    rec = splits["val"][1]
    assert float(rec[K.ENERGY]) == pytest.approx(ref.info["REF_energy"], abs=1e-9)
    assert np.allclose(rec[K.FORCES].numpy(), ref.arrays["REF_forces"])
    s = ref.info["REF_stress"]  # Voigt xx yy zz yz xz xy
    assert rec[K.STRESS][0, 0] == pytest.approx(s[0]) and rec[K.STRESS][1, 2] == pytest.approx(s[3])
    assert rec[K.STRESS][0, 1] == pytest.approx(s[5]) and rec[K.STRESS][2, 1] == pytest.approx(s[3])
    assert [float(splits["train"][i][WEIGHT]) for i in range(3)] == [1.0, 2.0, 1.0]
    assert K.EDGE_INDEX in rec


def test_missing_key_names_the_key_and_the_file(mace_files: dict[str, Path]) -> None:
    data = mace_data(mace_files, energy_key="DFT_energy")
    with pytest.raises(
        ValueError, match=r"train\.extxyz \(frame 0\): no energy under key 'DFT_energy'.*REF_energy"
    ):
        load_splits(data, 4.5, None, torch.float32)
    with pytest.raises(ValueError, match=r"no stress under key 'stress'.*data\.stress_key"):
        load_splits(mace_data(mace_files, stress_key="stress"), 4.5, None, torch.float32, stress=True)


def test_nan_forces_name_the_frame_and_the_file(tmp_path: Path) -> None:
    frames = mace_style_frames(4, 0)
    frames[2].arrays["REF_forces"][1, 0] = np.nan
    bad = tmp_path / "bad.extxyz"
    ase.io.write(bad, frames, format="extxyz")
    data = DataConfig(path=str(bad), n_train=2, n_val=1, energy_key="REF_energy", forces_key="REF_forces",
                      split_dir=str(tmp_path / "s"))  # fmt: skip
    with pytest.raises(ValueError, match=r"bad\.extxyz \(frame 2\): forces \('REF_forces'\) contain NaN"):
        load_splits(data, 4.5, None, torch.float32)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"path": "a.xyz", "train_file": "b.xyz", "valid_file": "c.xyz"}, "not both"),
     ({"train_file": "b.xyz"}, "go together")],
)  # fmt: skip
def test_ambiguous_data_settings_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DataConfig(**kwargs)


def _batch_and_task(mace_files: dict[str, Path], stress_weight: float) -> tuple[dict, PotentialTask]:
    torch.manual_seed(0)
    model = LEIGNN(LEIGNNModelConfig(hidden=8, num_layers=1, num_rbf=8, cutoff=4.5, forces="conservative"))
    model = model.double()
    ds = load_splits(mace_data(mace_files), 4.5, None, torch.float64, stress=True)["train"]
    model.fit_normalisation(ds[i] for i in range(len(ds)))
    task = PotentialTask(model, LossConfig(energy_weight=1.0, force_weight=10.0, stress_weight=stress_weight))
    return collate([ds[i] for i in range(4)]), task


def test_stress_term_adds_the_weighted_stress_error(mace_files: dict[str, Path]) -> None:
    batch, task = _batch_and_task(mace_files, stress_weight=100.0)
    with_stress = task.step(batch, "train")
    task.loss_cfg = LossConfig(energy_weight=1.0, force_weight=10.0, stress_weight=0.0)
    without = task.step(batch, "train")
    pred = task.model(batch, compute_stress=True)[K.STRESS].detach()
    w = batch[WEIGHT].view(-1, 1, 1)
    expected = 100.0 * float((w * (pred - batch[K.STRESS]).abs()).mean())
    assert float((with_stress.loss - without.loss).detach()) == pytest.approx(expected, rel=1e-9)
    assert expected > 0 and "stress_mae_meV_A3" in with_stress.metrics


def test_zero_weight_frame_does_not_enter_the_loss(mace_files: dict[str, Path]) -> None:
    batch, task = _batch_and_task(mace_files, stress_weight=1.0)
    batch[WEIGHT] = torch.tensor([0.0, 1.0, 1.0, 3.0], dtype=torch.float64)
    base = float(task.step(batch, "train").loss.detach())
    first = batch[K.BATCH] == 0
    batch[K.ENERGY][0] += 5.0
    batch[K.FORCES][first] += 1.0
    batch[K.STRESS][0] += 0.1
    assert float(task.step(batch, "train").loss.detach()) == pytest.approx(base, rel=1e-12)
    e3 = float(task.model(batch)[K.ENERGY][3])
    old = abs(e3 - float(batch[K.ENERGY][3]))
    batch[K.ENERGY][3] += 5.0  # weight 3, energy weight 1, mean over 4 frames
    new = abs(e3 - float(batch[K.ENERGY][3]))
    assert float(task.step(batch, "train").loss.detach()) == pytest.approx(
        base + 3 * (new - old) / 4, rel=1e-9
    )


def test_stress_weight_needs_conservative_forces() -> None:
    model = LEIGNN(LEIGNNModelConfig(hidden=8, num_layers=1, num_rbf=4))
    with pytest.raises(ValueError, match=r"model\.forces=conservative"):
        PotentialTask(model, LossConfig(stress_weight=1.0))


def _job(data: DataConfig, out: Path, **kw: object) -> LEIGNNJob:
    cfg = TrainConfig(max_epochs=1, batch_size=4, progress=False, early_stop_patience=None)
    return LEIGNNJob(data=data, train=cfg, out=str(out), **kw)  # type: ignore[arg-type]


def test_fine_tuning_starts_from_the_model_file_and_checks_elements(
    mace_files: dict[str, Path], tmp_path: Path
) -> None:
    small = LEIGNNModelConfig(hidden=8, num_layers=1, num_rbf=8, cutoff=4.5, forces="conservative")
    base = train(
        _job(mace_data(mace_files), tmp_path / "base", model=small, loss=LossConfig(stress_weight=10.0))
    )
    tuned = train(_job(mace_data(mace_files), tmp_path / "tuned", init_from=str(base)))
    a, b = load_model(base), load_model(tuned)
    assert a.config == b.config and torch.equal(a.normalisation.energy_shift, b.normalisation.energy_shift)
    assert not all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    au = tmp_path / "au.extxyz"
    ase.io.write(au, mace_style_frames(4, 3, symbols=("Cu", "Au")), format="extxyz")
    data = DataConfig(
        train_file=str(au), valid_file=str(au), energy_key="REF_energy", forces_key="REF_forces"
    )
    with pytest.raises(
        ValueError,
        match=r"au\.extxyz.* holds element\(s\) Au that the base model .*best\.pt was not trained on \(it knows Ni, Cu\)",
    ):
        train(_job(data, tmp_path / "au", init_from=str(base)))
    with pytest.raises(ValueError, match=r"model\.\* keys differ from the model file.*'hidden': \(16, 8\)"):
        train(
            _job(
                mace_data(mace_files),
                tmp_path / "bad",
                init_from=str(base),
                model=LEIGNNModelConfig(hidden=16),
            )
        )


def test_label_keys_on_an_npz_file_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "md17.npz"
    np.savez(path, R=np.random.default_rng(0).normal(size=(4, 3, 3)) * 2, z=np.array([8, 1, 1]),
             E=np.zeros(4), F=np.zeros((4, 3, 3)))  # fmt: skip
    data = DataConfig(
        path=str(path), n_train=2, n_val=1, energy_key="REF_energy", split_dir=str(tmp_path / "s")
    )
    with pytest.raises(ValueError, match=r"md17\.npz: npz files are read by their arrays R, z, E, F"):
        load_splits(data, 4.0, None, torch.float32)
    ok = DataConfig(path=str(path), n_train=2, n_val=1, split_dir=str(tmp_path / "s"))
    assert len(load_splits(ok, 4.0, None, torch.float32)["train"]) == 2
