"""LEIGNN on the real GFN2-xTB MD data in ../shared/data (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from quintet.atomistic import keys as K
from quintet.leignn.model import LEIGNNModelConfig
from quintet.leignn.run import DataConfig, EvalConfig, LEIGNNJob, evaluate, load_splits, train
from quintet.train import TrainConfig

pytestmark = pytest.mark.integration


def test_md17_protocol_split_on_ethanol(shared_data: Path, tmp_path: Path) -> None:
    data = DataConfig(path=str(shared_data / "materials/md_xtb/ethanol_500K.extxyz"), split_dir=str(tmp_path))
    splits = load_splits(data, 5.0, None, torch.float32)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [1000, 500, 3500]
    ids = [set(splits[s].indices) for s in ("train", "val", "test")]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    rec = splits["train"][0]
    assert rec[K.POSITIONS].shape == (9, 3) and rec[K.FORCES].shape == (9, 3)
    assert not bool(rec[K.PBC].any())
    # the same seed gives the same split (read back from disk)
    again = load_splits(data, 5.0, None, torch.float32)
    assert again["test"].indices == splits["test"].indices


def test_short_training_on_ethanol_beats_zero_forces(shared_data: Path, tmp_path: Path) -> None:
    data = DataConfig(
        path=str(shared_data / "materials/md_xtb/ethanol_500K.extxyz"),
        n_train=200,
        n_val=50,
        n_test=200,
        split_dir=str(tmp_path / "splits"),
    )
    job = LEIGNNJob(
        data=data,
        model=LEIGNNModelConfig(hidden=32, num_layers=2, num_rbf=16, forces="direct"),
        train=TrainConfig(
            max_epochs=15, batch_size=16, lr=2e-3, ema_decay=0.99, ema_warmup=True, progress=False
        ),
        out=str(tmp_path / "run"),
    )
    res = evaluate(EvalConfig(model=str(train(job)), data=data, split="test", out=str(tmp_path / "eval")))
    test = load_splits(data, 5.0, None, torch.float32)["test"]
    zero = 1000 * float(torch.cat([test[i][K.FORCES] for i in range(len(test))]).abs().mean())
    assert res.metrics["force_mae_meV_A"] < 0.6 * zero
