"""Bad inputs at the LEIGNN boundary: impossible splits, unlabelled frames, stress on a slab, bad MD settings."""

from __future__ import annotations

from pathlib import Path

import ase.io
import pytest
import torch
from ase.build import bulk, mx2

from quintet.atomistic.calculator import ModelCalculator
from quintet.atomistic.md import MDConfig
from quintet.leignn.model import LEIGNN, LEIGNNModelConfig
from quintet.leignn.run import DataConfig, load_splits


def test_split_larger_than_the_data_raises(emt_file: Path, tmp_path: Path) -> None:
    data = DataConfig(path=str(emt_file), n_train=80, n_val=20, split_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"cannot be split into 80 train / 20 val"):
        load_splits(data, 4.0, None, torch.float32)


def test_frames_without_labels_raise(tmp_path: Path) -> None:
    path = tmp_path / "unlabelled.extxyz"
    ase.io.write(path, [bulk("Cu", "fcc", a=3.61, cubic=True)] * 5, format="extxyz")
    data = DataConfig(path=str(path), n_train=2, n_val=1, split_dir=str(tmp_path / "s"))
    with pytest.raises(ValueError, match=r"unlabelled\.extxyz \(frame 0\): no energy under key 'energy'"):
        load_splits(data, 4.0, None, torch.float32)


def test_stress_on_a_slab_is_refused() -> None:
    torch.manual_seed(0)
    model = LEIGNN(LEIGNNModelConfig(hidden=8, num_layers=1, num_rbf=4, forces="conservative"))
    slab = mx2("MoS2", size=(2, 2, 1), vacuum=5.0)
    slab.pbc = (True, True, False)
    slab.calc = ModelCalculator(model)
    with pytest.raises(ValueError, match="fully periodic"):
        slab.get_stress()


@pytest.mark.parametrize("kwargs", [{"steps": -1}, {"timestep_fs": 0.0}, {"write_every": 0}])
def test_bad_md_settings_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="steps >= 0"):
        MDConfig(**kwargs)
