"""A tiny regression task (an MLP on synthetic data) shared by the trainer tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from quintet.train import StepOutput, Task, TrainConfig

WEIGHTS = torch.tensor([1.0, -2.0, 0.5, 3.0])


class RegressionData(torch.utils.data.Dataset):
    """y = x·w + 0.3 sin(3 x0) with x ~ N(0, 1), fixed by ``seed``."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=g)
        self.y = (self.x @ WEIGHTS + 0.3 * torch.sin(3 * self.x[:, 0])).unsqueeze(1)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


class RegressionTask(Task):
    """MSE loss, MAE metric. Knobs for the tests: constant validation loss, a sleep per step, a crash
    at a given training step, a hook that sees every training batch."""

    def __init__(
        self,
        model: nn.Module,
        const_val: bool = False,
        sleep_s: float = 0.0,
        crash_at: int | None = None,
        on_train_step: Callable[[Task, int], None] | None = None,
    ) -> None:
        super().__init__(model)
        self.const_val = const_val
        self.sleep_s = sleep_s
        self.crash_at = crash_at
        self.on_train_step = on_train_step
        self.train_calls = 0

    def step(self, batch: Any, split: str) -> StepOutput:
        if split == "train":
            self.train_calls += 1
            if self.on_train_step is not None:
                self.on_train_step(self, self.train_calls)
            if self.crash_at is not None and self.train_calls == self.crash_at:
                raise RuntimeError("simulated crash")
            if self.sleep_s:
                time.sleep(self.sleep_s)
        pred = self.model(batch["x"])
        loss = ((pred - batch["y"]) ** 2).mean()
        if split == "val" and self.const_val:
            loss = loss.detach() * 0 + 1.0
        return StepOutput(loss, {"mae": (pred - batch["y"]).abs().mean().detach()}, batch_size=len(pred))


def make_net(seed: int = 0, dropout: float = 0.1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 32), nn.SiLU(), nn.Dropout(dropout), nn.Linear(32, 1))


def tiny_config(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        max_epochs=4,
        steps_per_epoch=5,
        batch_size=8,
        lr=1e-2,
        accelerator="cpu",
        progress=False,
        ema_decay=0.9,
        early_stop_patience=None,
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture
def data() -> tuple[RegressionData, RegressionData]:
    return RegressionData(64, seed=1), RegressionData(32, seed=2)


@pytest.fixture
def tiny() -> Any:
    """The helpers above, for test modules (conftest is not importable by name)."""
    import types

    return types.SimpleNamespace(
        RegressionData=RegressionData, RegressionTask=RegressionTask, make_net=make_net, config=tiny_config
    )
