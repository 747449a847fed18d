"""``TrainConfig``: every knob of the shared trainer, validated on construction.

Defaults follow the training set-ups of the materials papers (``specs/materials.md`` §3): AdamW with
amsgrad, ReduceLROnPlateau (factor 0.8, patience 5), EMA 0.999 of the weights (validated and saved),
gradient clipping by norm and early stopping on the monitored validation metric. ``lr_schedule="cosine"``
anneals the LR to ``min_lr`` exactly when the step or time budget runs out instead (short budgets).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

__all__ = ["PRECISIONS", "TrainConfig"]

#: precision strings Lightning 2.x accepts (the short forms are aliases)
PRECISIONS: tuple[str, ...] = (
    "64-true",
    "32-true",
    "16-true",
    "bf16-true",
    "16-mixed",
    "bf16-mixed",
    "64",
    "32",
    "16",
    "bf16",
)


@dataclasses.dataclass
class TrainConfig:
    """Settings of one training run (``quintet.train.fit``).

    Attributes:
        max_epochs: upper bound on epochs (an epoch is ``steps_per_epoch`` optimizer steps, or one
            pass over the training set when that is ``None``).
        max_steps: upper bound on optimizer steps over the whole run (``None``: no bound).
        time_budget_clock: what ``max_time_s`` (and the ``time_s`` column of the history) measures:
            ``"wall"`` clock, or ``"cpu"`` time of this process — fair equal-budget comparisons of
            models trained one after the other on a shared, unevenly loaded machine.
        max_time_s: wall-clock budget in seconds over the whole run, resumes included; checked after
            every step, then the partial epoch is validated and saved (``None``: no budget).
        steps_per_epoch: optimizer steps per "epoch" (the papers validate every N steps); ``None``
            means one pass over the training set.
        batch_size: training batch size per device.
        val_batch_size: validation batch size per device (``None``: ``batch_size``).
        lr: initial learning rate of AdamW.
        weight_decay: AdamW weight decay.
        amsgrad: use the AMSGrad variant of AdamW.
        grad_clip: clip the global gradient norm to this value (``None`` or 0: no clipping).
        ema_decay: decay of the exponential moving average of the weights; 0 disables the EMA.
            Validation and the saved best model use the EMA weights.
        ema_warmup: use the ``min(decay, (1 + n) / (10 + n))`` warm-up of ``torch_ema`` (n = updates).
        lr_schedule: ``"plateau"`` (ReduceLROnPlateau on ``monitor``, the papers' schedule) or
            ``"cosine"``: before every step the LR is ``min_lr + (lr - min_lr) (1 + cos(pi f)) / 2``,
            where ``f`` is the fraction of the budget used, ``max(step / max_steps, elapsed /
            max_time_s)``, so it reaches ``min_lr`` when training ends, whichever limit comes
            first. Needs ``max_steps`` or ``max_time_s``. On a time budget the schedule follows
            the clock. With EMA on, it did not beat a constant LR in the materials benchmarks
            (``docs/training.md``).
        plateau_factor: ReduceLROnPlateau multiplies the LR by this factor ...
        plateau_patience: ... after this many epochs without improvement of ``monitor``.
        min_lr: the LR never goes below this value.
        early_stop_patience: stop after this many epochs without improvement (``None``: never).
        monitor: the metric that drives the scheduler, early stopping and "best" (``"val/<name>"``
            or ``"train/<name>"``; ``val/...`` falls back to ``train/...`` without a validation set).
        monitor_mode: ``"min"`` or ``"max"``.
        seed: seeds the data order (per epoch) and every random number drawn during training.
        num_workers: DataLoader worker processes.
        accelerator: Lightning accelerator (``"auto"``, ``"cpu"``, ``"gpu"``, ...).
        devices: Lightning devices (a count, ``"auto"``, or ids such as ``"0,1"``).
        strategy: Lightning strategy (``"auto"``, ``"ddp"``, ...).
        num_nodes: number of machines for multi-node DDP.
        precision: Lightning precision (``"32-true"``, ``"bf16-mixed"``, ...).
        tensorboard: also log to TensorBoard (needs the ``tensorboard`` package).
        progress: show a progress bar.
        deterministic: ask torch for deterministic algorithms (slower on GPU; warn-only).
    """

    max_epochs: int = 100
    max_steps: int | None = None
    max_time_s: float | None = None
    time_budget_clock: Literal["wall", "cpu"] = "wall"
    steps_per_epoch: int | None = None
    batch_size: int = 32
    val_batch_size: int | None = None
    lr: float = 1e-4
    weight_decay: float = 0.0
    amsgrad: bool = True
    grad_clip: float | None = 100.0
    ema_decay: float = 0.999
    ema_warmup: bool = False
    lr_schedule: Literal["plateau", "cosine"] = "plateau"
    plateau_factor: float = 0.8
    plateau_patience: int = 5
    min_lr: float = 1e-6
    early_stop_patience: int | None = 10
    monitor: str = "val/loss"
    monitor_mode: Literal["min", "max"] = "min"
    seed: int = 0
    num_workers: int = 0
    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    tensorboard: bool = False
    progress: bool = True
    deterministic: bool = False

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))


def _problems(c: TrainConfig) -> list[str]:
    out: list[str] = []

    def need(ok: bool, msg: str) -> None:
        if not ok:
            out.append(msg)

    need(c.max_epochs >= 1, f"max_epochs must be >= 1, got {c.max_epochs}")
    need(c.max_steps is None or c.max_steps >= 1, f"max_steps must be >= 1 or None, got {c.max_steps}")
    need(c.max_time_s is None or c.max_time_s > 0, f"max_time_s must be > 0 or None, got {c.max_time_s}")
    need(
        c.steps_per_epoch is None or c.steps_per_epoch >= 1,
        f"steps_per_epoch must be >= 1 or None, got {c.steps_per_epoch}",
    )
    need(c.batch_size >= 1, f"batch_size must be >= 1, got {c.batch_size}")
    need(
        c.val_batch_size is None or c.val_batch_size >= 1,
        f"val_batch_size must be >= 1 or None, got {c.val_batch_size}",
    )
    need(c.lr > 0, f"lr must be > 0, got {c.lr}")
    need(c.weight_decay >= 0, f"weight_decay must be >= 0, got {c.weight_decay}")
    need(c.grad_clip is None or c.grad_clip >= 0, f"grad_clip must be >= 0 or None, got {c.grad_clip}")
    need(0.0 <= c.ema_decay < 1.0, f"ema_decay must be in [0, 1) (0 disables the EMA), got {c.ema_decay}")
    need(
        c.lr_schedule in ("plateau", "cosine"),
        f"lr_schedule must be 'plateau' or 'cosine', got {c.lr_schedule!r}",
    )
    need(
        c.lr_schedule != "cosine" or c.max_steps is not None or c.max_time_s is not None,
        "lr_schedule='cosine' needs a budget to anneal over: set max_steps or max_time_s",
    )
    need(c.lr_schedule != "cosine" or c.min_lr <= c.lr, f"min_lr ({c.min_lr}) must be <= lr ({c.lr})")
    need(0.0 < c.plateau_factor < 1.0, f"plateau_factor must be in (0, 1), got {c.plateau_factor}")
    need(c.plateau_patience >= 0, f"plateau_patience must be >= 0, got {c.plateau_patience}")
    need(c.min_lr >= 0, f"min_lr must be >= 0, got {c.min_lr}")
    need(
        c.early_stop_patience is None or c.early_stop_patience >= 1,
        f"early_stop_patience must be >= 1 or None (never stop early), got {c.early_stop_patience}",
    )
    split, _, name = c.monitor.partition("/")
    need(
        split in ("train", "val") and bool(name),
        f"monitor must look like 'val/<metric>' or 'train/<metric>', got {c.monitor!r}",
    )
    need(c.monitor_mode in ("min", "max"), f"monitor_mode must be 'min' or 'max', got {c.monitor_mode!r}")
    need(c.num_workers >= 0, f"num_workers must be >= 0, got {c.num_workers}")
    need(c.num_nodes >= 1, f"num_nodes must be >= 1, got {c.num_nodes}")
    need(
        str(c.precision) in PRECISIONS,
        f"precision must be one of {list(PRECISIONS)}, got {c.precision!r}",
    )
    if isinstance(c.devices, int):
        need(c.devices >= 1 or c.devices == -1, f"devices must be >= 1, -1, 'auto' or ids, got {c.devices}")
    return out
