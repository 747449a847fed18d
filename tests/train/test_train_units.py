"""Unit tests of the trainer's pieces: config validation, EMA maths, samplers, model files, Trainer args."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from quintet.config import ConfigError, load_config
from quintet.train import (
    EpochBatchSampler,
    ExponentialMovingAverage,
    TrainConfig,
    ema_update_,
    load_model_file,
    save_model,
    to_plain,
    trainer_kwargs,
)
from quintet.train.ema import ema_decay_at
from quintet.train.sampler import ShardSampler, epoch_permutation

# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("lr=-1", "lr must be > 0"),
        ("batch_size=0", "batch_size must be >= 1"),
        ("ema_decay=1.0", "ema_decay must be in [0, 1)"),
        ("plateau_factor=1.5", "plateau_factor"),
        ("monitor=loss", "monitor must look like"),
        ("precision=fp8", "precision must be one of"),
        ("steps_per_epoch=0", "steps_per_epoch"),
        ("max_time_s=0", "max_time_s"),
        ("early_stop_patience=0", "early_stop_patience"),
        ("monitor_mode=up", "monitor_mode"),
        ("lr_schedule=step", "lr_schedule: 'step' is not one of"),
        ("lr_schedule=cosine", "needs a budget to anneal over"),
    ],
)
def test_bad_config_raises(override, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        load_config(TrainConfig, overrides=[override])


def test_unknown_key_lists_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) learning_rate.*valid keys:.*\blr\b"):
        load_config(TrainConfig, overrides=["learning_rate=1e-3"])
    p = tmp_path / "train.yaml"
    p.write_text("lr: 3e-4\nbatch_sise: 4\n")
    with pytest.raises(ConfigError, match=r"train\.yaml.*batch_sise"):
        load_config(TrainConfig, p)


def test_config_overrides_and_devices():
    cfg = load_config(TrainConfig, overrides=["lr=3e-4", "devices=2", "strategy=ddp", "max_time_s=60"])
    assert cfg.lr == 3e-4 and cfg.devices == 2 and cfg.strategy == "ddp" and cfg.max_time_s == 60.0
    assert load_config(TrainConfig, overrides=["devices=auto"]).devices == "auto"
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=-3)


# ------------------------------------------------------------------- EMA


def test_ema_update_hand_computed():
    shadow = [torch.tensor([1.0, 2.0]), torch.tensor(10.0)]
    ema_update_(shadow, [torch.tensor([3.0, 4.0]), torch.tensor(0.0)], 0.9)
    torch.testing.assert_close(shadow[0], torch.tensor([1.2, 2.2]))
    torch.testing.assert_close(shadow[1], torch.tensor(9.0))


def test_ema_warmup_rule_and_swap():
    assert ema_decay_at(0.999, 1, warmup=True) == pytest.approx(2 / 11)
    assert ema_decay_at(0.999, 10**6, warmup=True) == 0.999
    assert ema_decay_at(0.9, 1, warmup=False) == 0.9
    lin = nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.fill_(1.0)
        lin.bias.fill_(0.0)
    ema = ExponentialMovingAverage(lin, 0.5)
    with torch.no_grad():
        lin.weight.fill_(3.0)
    ema.update(lin)  # 0.5 * 1 + 0.5 * 3 = 2
    torch.testing.assert_close(ema.shadow["weight"], torch.full((1, 2), 2.0))
    ema.swap_in(lin)
    torch.testing.assert_close(lin.weight.detach(), torch.full((1, 2), 2.0))
    ema.swap_out(lin)
    torch.testing.assert_close(lin.weight.detach(), torch.full((1, 2), 3.0))
    state = ema.averaged_state_dict(lin)
    torch.testing.assert_close(state["weight"], torch.full((1, 2), 2.0))
    other = ExponentialMovingAverage(lin, 0.5)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 1 and torch.equal(other.shadow["weight"], ema.shadow["weight"])
    with pytest.raises(ValueError, match="does not match"):
        ExponentialMovingAverage(nn.Linear(3, 1, bias=False), 0.5).load_state_dict(ema.state_dict())


# --------------------------------------------------------------- samplers


def test_fixed_step_epochs_walk_one_stream_of_permutations():
    n, b, s = 10, 3, 4
    sampler = EpochBatchSampler(n, b, s, seed=5)
    seen = []
    for epoch in range(5):
        sampler.epoch = epoch
        batches = list(sampler)
        assert len(batches) == s == len(sampler) and all(len(x) == b for x in batches)
        seen += [i for x in batches for i in x]
    # 5 epochs x 4 steps x 3 = 60 samples = 6 full passes, each a permutation of range(10)
    for p in range(6):
        assert seen[p * n : (p + 1) * n] == epoch_permutation(n, 5, p).tolist()
    sampler.epoch = 2
    assert list(sampler) == list(sampler)  # same epoch, same order
    assert list(EpochBatchSampler(n, b, s, seed=6)) != list(EpochBatchSampler(n, b, s, seed=5))


def test_ddp_ranks_split_each_global_batch():
    n, b, s, w = 13, 2, 3, 3
    ranks = [EpochBatchSampler(n, b, s, seed=1, rank=r, world_size=w) for r in range(w)]
    single = EpochBatchSampler(n, b * w, s, seed=1)
    for e in (0, 1):
        for smp in [*ranks, single]:
            smp.epoch = e
        per_rank = [list(smp) for smp in ranks]
        for t, global_batch in enumerate(single):
            assert [i for r in range(w) for i in per_rank[r][t]] == global_batch


def test_one_pass_epochs_pad_for_ddp():
    n = 10
    one = EpochBatchSampler(n, 4, None, seed=0)
    assert len(one) == 3 and sorted(i for x in one for i in x) == list(range(n))
    ranks = [EpochBatchSampler(n, 2, None, seed=0, rank=r, world_size=3) for r in range(3)]
    assert {len(r) for r in ranks} == {2}
    covered = {i for r in ranks for x in r for i in x}
    assert covered == set(range(n))
    assert list(ShardSampler(7, 1, 3)) == [1, 4]
    with pytest.raises(ValueError, match="empty"):
        EpochBatchSampler(0, 2, None, seed=0)


# ------------------------------------------------------------ model files


def test_save_model_roundtrip_and_plain_types(tmp_path):
    net = nn.Linear(3, 2)
    path = save_model(
        tmp_path / "m.pt",
        net,
        TrainConfig(lr=1e-3),
        extra={"path": Path("/x"), "n": np.int64(3), "arr": np.arange(3), "t": (1, 2)},
        metrics={"val/loss": 0.5},
    )
    raw = torch.load(path, weights_only=True)
    assert raw["config"]["lr"] == 1e-3 and raw["extra"]["path"] == "/x" and raw["extra"]["n"] == 3
    assert torch.equal(raw["extra"]["arr"], torch.arange(3))
    d = load_model_file(path)
    fresh = nn.Linear(3, 2)
    fresh.load_state_dict(d["state_dict"])
    x = torch.randn(4, 3)
    assert torch.equal(fresh(x), net(x))
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temporary file


def test_model_file_errors(tmp_path):
    with pytest.raises(TypeError, match=r"extra\.bad.*object"):
        save_model(tmp_path / "m.pt", nn.Linear(1, 1), {}, extra={"bad": object()})
    assert not (tmp_path / "m.pt").exists()
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        load_model_file(tmp_path / "missing.pt")
    good = save_model(tmp_path / "g.pt", nn.Linear(4, 4), {})
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"cut\.pt"):
        load_model_file(tmp_path / "cut.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match=r"foreign\.pt.*not a quintet"):
        load_model_file(tmp_path / "foreign.pt")
    assert to_plain({"a": [1, (2.0, None)]}) == {"a": [1, (2.0, None)]}


# --------------------------------------------------------- Trainer (DDP)


def test_ddp_settings_reach_the_lightning_trainer(tmp_path):
    from lightning.pytorch import Trainer
    from lightning.pytorch.strategies import DDPStrategy

    cfg = TrainConfig(
        accelerator="cpu", devices=2, strategy="ddp", num_nodes=1, precision="bf16-mixed", grad_clip=50.0
    )
    kw = trainer_kwargs(cfg)
    assert kw["devices"] == 2 and kw["strategy"] == "ddp" and kw["use_distributed_sampler"] is False
    trainer = Trainer(**kw, logger=False, default_root_dir=str(tmp_path))
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.num_devices == 2 and trainer.num_nodes == 1
    assert trainer.gradient_clip_val == 50.0 and trainer.gradient_clip_algorithm == "norm"
    assert trainer.precision == "bf16-mixed"
    assert trainer.num_sanity_val_steps == 0
    assert trainer_kwargs(TrainConfig(grad_clip=0.0))["gradient_clip_val"] is None
    assert trainer_kwargs(TrainConfig(num_nodes=4))["num_nodes"] == 4


def test_epoch_means_are_weighted_per_metric():
    from quintet.train.loop import _Accumulator
    from quintet.train.task import StepOutput

    acc = _Accumulator()
    acc.add(StepOutput(torch.tensor(1.0), {"a": torch.tensor(10.0)}, batch_size=3))
    acc.add(StepOutput(torch.tensor(3.0), {}, batch_size=1))  # "a" only in the first batch
    means = acc.reduce(None, "val")
    assert means == {"val/loss": pytest.approx((1.0 * 3 + 3.0 * 1) / 4), "val/a": pytest.approx(10.0)}
    with pytest.raises(ValueError, match="'b' must be a scalar"):
        acc.add(StepOutput(torch.tensor(1.0), {"b": torch.ones(2)}, batch_size=1))
