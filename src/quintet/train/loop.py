"""``fit``: train a :class:`~quintet.train.task.Task` with Lightning, resumably and reproducibly.

What happens at the end of every epoch (``steps_per_epoch`` optimizer steps):

1. validation with the EMA weights (metrics averaged over the epoch, weighted by batch size,
   summed over DDP ranks);
2. one history row ``{epoch, step, time_s, lr, train/..., val/...}``;
3. the "best" model file (EMA weights) is rewritten when ``monitor`` improved;
4. ReduceLROnPlateau steps on ``monitor`` (or, with ``lr_schedule="cosine"``, the LR follows the
   budget before every step); early stopping counts epochs without improvement;
5. ``history.csv`` and the training checkpoint ``last.ckpt`` are written atomically.

Every epoch re-seeds all random generators from ``(seed, epoch, rank)`` and draws its batches from
an order that depends only on ``(seed, epoch)``, so a run killed at any point and resumed from
``last.ckpt`` continues bit-identically to an uninterrupted one. Lightning's own checkpointing and
resume machinery is not used: the checkpoint is ours, plain-typed and ``weights_only``-loadable.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import logging
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning import pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar
from torch.utils.data import DataLoader

from quintet.config import config_to_dict, save_config
from quintet.io import atomic_write_text, remove_stale_temps
from quintet.train.checkpoint import load_checkpoint, save_checkpoint, save_model
from quintet.train.config import TrainConfig
from quintet.train.ema import EMACallback
from quintet.train.sampler import EpochBatchSampler, ShardSampler
from quintet.train.task import StepOutput, Task, check_step_output

__all__ = ["FitResult", "cosine_lr", "evaluate", "fit", "trainer_kwargs"]

log = logging.getLogger("quintet.train")

BEST_NAME = "best.pt"
LAST_NAME = "last.ckpt"
HISTORY_NAME = "history.csv"
CONFIG_NAME = "train_config.yaml"

#: config keys that change the trajectory; a resume with different values is not exact (warned)
_TRAJECTORY_KEYS = (
    "seed",
    "batch_size",
    "steps_per_epoch",
    "weight_decay",
    "amsgrad",
    "grad_clip",
    "ema_decay",
    "lr_schedule",
)


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        best_path: model file with the best (EMA) weights (:func:`~quintet.train.load_model_file`).
        last_path: training checkpoint of the last finished epoch (resume point).
        history: one dict per epoch (``epoch``, ``step``, ``time_s``, ``lr``, ``train/...``, ``val/...``).
        best_metric: best value of ``cfg.monitor`` (NaN if it was never finite).
        best_epoch: the epoch (1-based) of ``best_metric``.
        stop_reason: ``"max_epochs"``, ``"max_steps"``, ``"max_time"``, ``"early_stop"`` or ``"non_finite"``.
        out_dir: the run folder.
    """

    best_path: Path
    last_path: Path
    history: list[dict[str, float]]
    best_metric: float
    best_epoch: int = 0
    stop_reason: str = ""
    out_dir: Path = Path(".")


@dataclasses.dataclass
class _RunState:
    """Counters that survive a resume (everything in here goes into ``last.ckpt``)."""

    epoch: int = 0  # completed epochs
    step: int = 0  # completed optimizer steps
    elapsed_s: float = 0.0  # training wall-clock used so far
    best: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    stop_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> _RunState:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["history"] = [dict(r) for r in kw.get("history", [])]
        return cls(**kw)


def _is_better(value: float, best: float | None, mode: str) -> bool:
    if not math.isfinite(value):
        return best is None
    if best is None or not math.isfinite(best):
        return True
    return value < best if mode == "min" else value > best


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0xE90C, int(epoch), int(rank)])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _WorkerInit:
    """Seeds each DataLoader worker from (seed, epoch, rank, worker id): exact with workers too."""

    def __init__(self, sampler: EpochBatchSampler) -> None:
        self.sampler = sampler

    def __call__(self, worker_id: int) -> None:
        s = self.sampler
        _seed_all(_epoch_seed(s.seed + 7919 * (worker_id + 1), s.epoch, s.rank))


class _Accumulator:
    """Batch-size-weighted sums of scalar metrics over an epoch (reduced over DDP ranks).

    Each metric has its own weight, so a metric reported by only some steps is averaged over those.
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.weights: dict[str, float] = {}

    def add(self, out: StepOutput) -> None:
        w = float(out.batch_size)
        values = {"loss": out.loss, **dict(out.metrics)}
        for k, v in values.items():
            v = torch.as_tensor(v).detach()
            if v.numel() != 1:
                raise ValueError(f"metric {k!r} must be a scalar, got shape {tuple(v.shape)}")
            dtype = torch.float32 if v.device.type == "mps" else torch.float64
            v = v.reshape(()).to(dtype) * w
            self.sums[k] = self.sums[k] + v if k in self.sums else v
            self.weights[k] = self.weights.get(k, 0.0) + w

    def reduce(self, strategy: Any, prefix: str) -> dict[str, float]:
        """Weighted means ``{f"{prefix}/{name}": value}``; every DDP rank must call this (even with
        no batches) because the sums travel in one collective."""
        names = sorted(self.sums)
        distributed = strategy is not None and getattr(strategy, "world_size", 1) > 1
        if distributed and torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[list[str] | None] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, names)
            names = sorted({n for g in gathered for n in (g or [])})
        if not names:
            return {}
        device = strategy.root_device if strategy is not None else torch.device("cpu")
        dtype = torch.float32 if device.type == "mps" else torch.float64
        zero = torch.zeros((), dtype=dtype, device=device)
        sums = [self.sums[k].to(device, dtype) if k in self.sums else zero for k in names]
        weights = [torch.as_tensor(self.weights.get(k, 0.0), dtype=dtype, device=device) for k in names]
        vec = torch.stack(sums + weights)
        if distributed:
            vec = strategy.reduce(vec, reduce_op="sum")
        vals = vec.cpu().tolist()
        n = len(names)
        return {
            f"{prefix}/{k}": (vals[i] / vals[n + i] if vals[n + i] > 0 else float("nan"))
            for i, k in enumerate(names)
        }


class _InterruptFlag(pl.Callback):
    """Remembers that training ended by Ctrl-C (Lightning does not tell the module)."""

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        pl_module.interrupted = isinstance(exception, KeyboardInterrupt)


class _EpochBar(TQDMProgressBar):
    """tqdm bar that counts epochs over the whole run (resumes included), e.g. ``Epoch 7/100``."""

    def on_train_epoch_start(self, trainer: Any, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        module = trainer.lightning_module
        st, cfg = getattr(module, "run_state", None), getattr(module, "cfg", None)
        if st is not None and cfg is not None:
            self.train_progress_bar.set_description(f"Epoch {st.epoch + 1}/{cfg.max_epochs}")

    def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items


class _TaskModule(pl.LightningModule):
    """The LightningModule around a Task: optimizer, plateau schedule, metrics, epoch-end bookkeeping."""

    def __init__(
        self,
        task: Task,
        cfg: TrainConfig,
        train_dataset: Any,
        val_dataset: Any,
        collate_fn: Callable[[list[Any]], Any] | None,
        out_dir: Path,
        state: _RunState,
        resume: dict[str, Any] | None,
        ema_cb: EMACallback | None,
        extra: dict[str, Any],
        monitor: str,
    ) -> None:
        super().__init__()
        self.task = task
        self.cfg = cfg
        self.train_dataset = train_dataset
        self.val_dataset = val_dataset
        self.collate_fn = collate_fn
        self.out_dir = out_dir
        self.run_state = state
        self.resume_state = resume
        self.ema_cb = ema_cb
        self.extra = extra
        self.monitor = monitor
        self.scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        self.train_sampler: EpochBatchSampler | None = None
        self._train_acc = _Accumulator()
        self._val_acc = _Accumulator()
        self._val_metrics: dict[str, float] = {}
        self._t0 = self._now()
        self._steps_at_start = state.step
        self.interrupted = False
        self._ddp_flags: tuple[bool, bool] | None = None

    # ----------------------------------------------------------------- data
    def train_dataloader(self) -> DataLoader:
        cfg = self.cfg
        self.train_sampler = EpochBatchSampler(
            len(self.train_dataset),
            cfg.batch_size,
            cfg.steps_per_epoch,
            cfg.seed,
            rank=self.trainer.global_rank,
            world_size=self.trainer.world_size,
        )
        self.train_sampler.epoch = self.run_state.epoch
        return DataLoader(
            self.train_dataset,
            batch_sampler=self.train_sampler,
            collate_fn=self.collate_fn,
            num_workers=cfg.num_workers,
            worker_init_fn=_WorkerInit(self.train_sampler) if cfg.num_workers > 0 else None,
            # an own generator: creating the iterator must not draw from the global RNG (exact resume)
            generator=torch.Generator(),
        )

    def val_dataloader(self) -> DataLoader | list:
        if self.val_dataset is None:
            return []
        if len(self.val_dataset) < self.trainer.world_size:
            raise ValueError(
                f"the validation set has {len(self.val_dataset)} samples, fewer than the "
                f"{self.trainer.world_size} processes: every process needs at least one"
            )
        sampler = ShardSampler(len(self.val_dataset), self.trainer.global_rank, self.trainer.world_size)
        return DataLoader(
            self.val_dataset,
            batch_size=self.cfg.val_batch_size or self.cfg.batch_size,
            sampler=sampler,
            collate_fn=self.collate_fn,
            num_workers=self.cfg.num_workers,
            generator=torch.Generator(),
        )

    # ------------------------------------------------------------ optimizer
    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.task.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"{type(self.task).__name__} has no trainable parameters")
        return torch.optim.AdamW(
            params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay, amsgrad=self.cfg.amsgrad
        )

    def on_fit_start(self) -> None:
        cfg = self.cfg
        opt = self.trainer.optimizers[0]
        if cfg.lr_schedule == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt,
                mode=cfg.monitor_mode,
                factor=cfg.plateau_factor,
                patience=cfg.plateau_patience,
                min_lr=cfg.min_lr,
            )
        if self.resume_state is not None:
            ck = self.resume_state
            try:
                self.task.load_state_dict(ck["task_state"])
            except RuntimeError as exc:
                detail = " ".join(str(exc).split())[:300]
                raise ValueError(
                    f"{self.out_dir / LAST_NAME} holds another model's weights ({detail}); "
                    "use another out_dir or resume=False to start over"
                ) from exc
            opt.load_state_dict(ck["optimizer"])
            if self.scheduler is not None and ck.get("scheduler"):
                self.scheduler.load_state_dict(ck["scheduler"])
            if self.ema_cb is not None and self.ema_cb.ema is not None:
                if not ck.get("ema"):
                    raise ValueError(
                        f"{self.out_dir / LAST_NAME}: the checkpoint has no EMA state (ema_decay was 0)"
                    )
                self.ema_cb.ema.load_state_dict(ck["ema"])
            self.resume_state = None  # free memory
        if self.trainer.is_global_zero:
            save_config(cfg, self.out_dir / CONFIG_NAME)
        self._t0 = self._now()

    # ---------------------------------------------------------------- steps
    def on_train_epoch_start(self) -> None:
        epoch = self.run_state.epoch
        _seed_all(_epoch_seed(self.cfg.seed, epoch, self.trainer.global_rank))
        if self.train_sampler is not None:
            self.train_sampler.epoch = epoch
        self._train_acc = _Accumulator()
        self._val_metrics = {}

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        cfg = self.cfg
        if cfg.lr_schedule != "cosine":
            return
        used = self._steps_at_start + self.trainer.global_step
        lr = cosine_lr(cfg, used, self._elapsed())
        if cfg.max_time_s is not None and self.trainer.world_size > 1:
            lr = float(self.trainer.strategy.broadcast(lr))  # ranks' clocks differ: rank 0 decides
        for group in self.trainer.optimizers[0].param_groups:
            group["lr"] = lr

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        out = check_step_output(self.task.step(batch, "train"), "train", self.task)
        self._train_acc.add(out)
        self.log(
            "train/loss",
            out.loss.detach(),
            prog_bar=True,
            on_step=True,
            on_epoch=False,
            batch_size=out.batch_size,
        )
        return out.loss

    def _now(self) -> float:
        """The budget clock: wall-clock, or this process's CPU time (fair budgets on a shared machine)."""
        return time.process_time() if self.cfg.time_budget_clock == "cpu" else time.monotonic()

    def _elapsed(self) -> float:
        return self.run_state.elapsed_s + (self._now() - self._t0)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        cfg = self.cfg
        step = self._steps_at_start + self.trainer.global_step
        reason = ""
        if cfg.max_steps is not None and step >= cfg.max_steps:
            reason = "max_steps"
        elif cfg.max_time_s is not None:
            out_of_time = self.trainer.strategy.broadcast(self._elapsed() >= cfg.max_time_s)
            reason = "max_time" if out_of_time else ""
        if reason:
            self.run_state.stop_reason = reason
            self.trainer.should_stop = True

    def on_validation_start(self) -> None:
        # Validation must not talk to the other ranks through DDP: shards may hold different numbers
        # of batches, and with grad_in_eval the reducer would wait for a backward that never comes.
        ddp = self.trainer.strategy.model
        if isinstance(ddp, torch.nn.parallel.DistributedDataParallel):
            self._ddp_flags = (ddp.require_backward_grad_sync, ddp.require_forward_param_sync)
            ddp.require_backward_grad_sync = False
            ddp.require_forward_param_sync = False

    def on_validation_end(self) -> None:
        ddp = self.trainer.strategy.model
        if isinstance(ddp, torch.nn.parallel.DistributedDataParallel) and self._ddp_flags is not None:
            ddp.require_backward_grad_sync = self._ddp_flags[0]
            self._ddp_flags = None

    def on_validation_epoch_start(self) -> None:
        self._val_acc = _Accumulator()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        ctx = torch.enable_grad() if self.task.grad_in_eval else contextlib.nullcontext()
        with ctx:
            out = check_step_output(self.task.step(batch, "val"), "val", self.task)
        self._val_acc.add(out)

    def on_validation_epoch_end(self) -> None:
        self._val_metrics = self._val_acc.reduce(self.trainer.strategy, "val")
        if self.monitor in self._val_metrics:
            self.log(self.monitor, self._val_metrics[self.monitor], prog_bar=True, logger=False)

    # ------------------------------------------------------------ epoch end
    def on_train_epoch_end(self) -> None:
        cfg, st = self.cfg, self.run_state
        opt = self.trainer.optimizers[0]
        st.epoch += 1
        st.step = self._steps_at_start + self.trainer.global_step
        row: dict[str, float] = {
            "epoch": st.epoch,
            "step": st.step,
            "time_s": round(self._elapsed(), 3),
            "lr": float(opt.param_groups[0]["lr"]),
        }
        row.update(self._train_acc.reduce(self.trainer.strategy, "train"))
        row.update(self._val_metrics)
        if self.monitor not in row:
            metrics = sorted(k for k in row if "/" in k)
            raise ValueError(f"monitor {self.monitor!r} was not measured; available metrics: {metrics}")
        value = float(row[self.monitor])
        improved = _is_better(value, st.best, cfg.monitor_mode)
        if improved:
            st.best, st.best_epoch, st.bad_epochs = value, st.epoch, 0
        else:
            st.bad_epochs += 1
        if self.scheduler is not None:
            self.scheduler.step(value)
        st.history.append(row)

        if not math.isfinite(value):
            st.stop_reason = "non_finite"
        elif cfg.early_stop_patience is not None and st.bad_epochs >= cfg.early_stop_patience:
            st.stop_reason = st.stop_reason or "early_stop"
        elif st.epoch >= cfg.max_epochs:
            st.stop_reason = st.stop_reason or "max_epochs"
        st.elapsed_s = self._elapsed()
        self._t0 = self._now()
        if st.stop_reason:
            self.trainer.should_stop = True
        if self.trainer.is_global_zero:
            if improved:
                self._save_best(row)
            _write_history(self.out_dir / HISTORY_NAME, st.history)
            self._save_last()
        if self.trainer.loggers:
            self.log_dict(
                {k: float(v) for k, v in row.items() if k not in ("epoch", "step")},
                logger=True,
                prog_bar=False,
            )

    def _model_state(self) -> dict[str, torch.Tensor]:
        if self.ema_cb is not None and self.ema_cb.ema is not None:
            full = self.ema_cb.ema.averaged_state_dict(self.task)
        else:
            full = {k: v.detach().clone() for k, v in self.task.state_dict().items()}
        return {k[len("model.") :]: v for k, v in full.items() if k.startswith("model.")}

    def _save_best(self, row: dict[str, float]) -> None:
        extra = {**self.task.export_extra(), **self.extra}
        save_model(
            self.out_dir / BEST_NAME, self._model_state(), config_to_dict(self.cfg), extra, metrics=row
        )

    def _save_last(self) -> None:
        ema = self.ema_cb.ema.state_dict() if self.ema_cb is not None and self.ema_cb.ema is not None else {}
        save_checkpoint(
            self.out_dir / LAST_NAME,
            {
                "config": config_to_dict(self.cfg),
                "run": self.run_state.to_dict(),
                "num_train": len(self.train_dataset),
                "task_state": self.task.state_dict(),
                "ema": ema,
                "optimizer": self.trainer.optimizers[0].state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
            },
        )


def cosine_lr(cfg: TrainConfig, step: int, elapsed_s: float) -> float:
    """The LR of ``lr_schedule="cosine"`` before optimizer step ``step + 1``, ``elapsed_s`` into the
    run: cosine from ``cfg.lr`` to ``cfg.min_lr`` over the fraction of the budget used."""
    fractions = [0.0]
    if cfg.max_steps is not None:
        fractions.append(step / cfg.max_steps)
    if cfg.max_time_s is not None:
        fractions.append(elapsed_s / cfg.max_time_s)
    f = min(1.0, max(fractions))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * f))


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    cols: list[str] = []
    for row in history:
        cols += [k for k in row if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, restval="", lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def trainer_kwargs(cfg: TrainConfig, has_val: bool = True) -> dict[str, Any]:
    """The ``lightning.pytorch.Trainer`` arguments that ``fit`` derives from ``cfg`` (without
    callbacks, logger and the remaining-epochs count)."""
    steps = cfg.steps_per_epoch or 50
    return {
        "accelerator": cfg.accelerator,
        "devices": cfg.devices,
        "strategy": cfg.strategy,
        "num_nodes": cfg.num_nodes,
        "precision": cfg.precision,
        "gradient_clip_val": cfg.grad_clip if cfg.grad_clip else None,
        "gradient_clip_algorithm": "norm",
        "max_steps": -1,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "enable_progress_bar": cfg.progress,
        "num_sanity_val_steps": 0,
        "use_distributed_sampler": False,
        "inference_mode": False,
        "deterministic": "warn" if cfg.deterministic else None,
        "log_every_n_steps": max(1, min(50, steps)),
        "limit_val_batches": None if has_val else 0,
        "benchmark": False,
    }


#: Lightning messages that carry no information for quintet users
_NOISE = (
    r".*does not have many workers.*",
    r".*is smaller than the logging interval.*",
    r".*sync_dist=True.*",
    r".*The `srun` command is available.*",
    r".*You defined a `validation_step` but have no `val_dataloader`.*",
    r".*Total length of `.*` across ranks is zero.*",
    r".*`training_step` returned `None`.*",
    r".*Experiment logs directory .* exists and is not empty.*",
    r".*Found .* module\(s\) in eval mode at the start of training.*",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
)
_QUIET_LOGGERS = (
    "lightning.pytorch",
    "lightning.fabric",
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.accelerators.cuda",
)


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Silence Lightning's tips, device banners and irrelevant warnings (errors still show)."""
    levels = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
    try:
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        with warnings.catch_warnings():
            for pattern in _NOISE:
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _make_logger(cfg: TrainConfig, out_dir: Path) -> Any:
    if not cfg.tensorboard:
        return False
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            warnings.warn(
                "tensorboard=True but neither `tensorboard` nor `tensorboardX` is installed; "
                f"only the CSV log {out_dir / HISTORY_NAME} is written (pip install tensorboard)",
                UserWarning,
                stacklevel=3,
            )
            return False
    from lightning.pytorch.loggers import TensorBoardLogger

    return TensorBoardLogger(save_dir=str(out_dir), name="tensorboard", version="")


def _result(out_dir: Path, st: _RunState) -> FitResult:
    return FitResult(
        best_path=out_dir / BEST_NAME,
        last_path=out_dir / LAST_NAME,
        history=[dict(r) for r in st.history],
        best_metric=float("nan") if st.best is None else float(st.best),
        best_epoch=st.best_epoch,
        stop_reason=st.stop_reason,
        out_dir=out_dir,
    )


def _say(cfg: TrainConfig, message: str) -> None:
    """Log ``message``; with the progress bar on, also print it (rank 0) so users see it."""
    log.info(message)
    if cfg.progress and _env_rank() == 0:
        print(f"quintet.train: {message}", file=sys.stderr, flush=True)


def _env_rank() -> int:
    """This process's global rank as launchers announce it (0 before any launch)."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def _limits_reached(cfg: TrainConfig, st: _RunState) -> str:
    if st.stop_reason in ("early_stop", "non_finite"):
        return st.stop_reason
    if st.epoch >= cfg.max_epochs:
        return "max_epochs"
    if cfg.max_steps is not None and st.step >= cfg.max_steps:
        return "max_steps"
    if cfg.max_time_s is not None and st.elapsed_s >= cfg.max_time_s:
        return "max_time"
    return ""


def _check_fit_inputs(task: Task, train_dataset: Any, val_dataset: Any, cfg: TrainConfig) -> None:
    if not isinstance(task, Task):
        raise TypeError(f"fit expects a quintet.train.Task, got {type(task).__name__}")
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    for name, ds in (("train_dataset", train_dataset), ("val_dataset", val_dataset)):
        if ds is not None and not (hasattr(ds, "__len__") and hasattr(ds, "__getitem__")):
            raise TypeError(f"{name} must be a map-style dataset (__len__ and __getitem__), got {type(ds).__name__}")
    if len(train_dataset) == 0:
        raise ValueError("the training dataset is empty")
    if val_dataset is not None and len(val_dataset) == 0:
        raise ValueError("the validation dataset is empty (pass None to train without validation)")


def _resume_state(out_dir: Path, cfg: TrainConfig, resume: bool, n_train: int) -> tuple[_RunState, Any]:
    """The run state to start from and the checkpoint to restore (``None``); a finished run comes back
    with its ``stop_reason`` set and no checkpoint."""
    last = out_dir / LAST_NAME
    if _env_rank() == 0:
        remove_stale_temps(out_dir)  # half-written files of a killed run
    if not resume and _env_rank() == 0:  # start over: never let a later resume pick up the old run
        for name in (LAST_NAME, BEST_NAME, HISTORY_NAME):
            (out_dir / name).unlink(missing_ok=True)
    if not (resume and last.is_file()):
        return _RunState(), None
    ckpt = load_checkpoint(last)
    state = _RunState.from_dict(ckpt["run"])
    _warn_config_changes(last, ckpt, cfg, n_train)
    if state.stop_reason not in ("early_stop", "non_finite"):
        state.stop_reason = ""  # budgets are re-checked against cfg: a bigger budget continues the run
    done = _limits_reached(cfg, state)
    if done:
        state.stop_reason = done
        _say(cfg, f"{last}: already finished ({done}); nothing to do")
        return state, None
    _say(cfg, f"resuming {out_dir} after epoch {state.epoch} (step {state.step})")
    return state, ckpt


def fit(
    task: Task,
    train_dataset: Any,
    val_dataset: Any,
    cfg: TrainConfig,
    out_dir: str | Path,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    resume: bool = True,
    extra: dict[str, Any] | None = None,
) -> FitResult:
    """Train ``task`` on ``train_dataset``, validating on ``val_dataset`` every epoch.

    Args:
        task: the task (its ``model`` is what the model file stores).
        train_dataset: a map-style dataset (``__len__`` + ``__getitem__``).
        val_dataset: a map-style dataset or ``None`` (then ``val/...`` monitors fall back to ``train/...``).
        cfg: training settings.
        out_dir: run folder: ``best.pt`` (model file, EMA weights), ``last.ckpt`` (resume point),
            ``history.csv``, ``train_config.yaml`` and optional ``tensorboard/``.
        collate_fn: turns a list of samples into a batch (default: torch's ``default_collate``).
        resume: continue from ``out_dir/last.ckpt`` when it exists (exactly, as if never stopped);
            ``False`` starts over and overwrites the folder's outputs.
        extra: plain-typed metadata stored in the model file (e.g. the model's hyper-parameters).

    Returns:
        A :class:`FitResult`. A run that already reached its limits returns at once.

    Raises:
        ValueError: empty datasets, a monitor that is never measured, a checkpoint that does not match.
    """
    _check_fit_inputs(task, train_dataset, val_dataset, cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    extra = dict(extra or {})

    monitor = cfg.monitor
    if val_dataset is None and monitor.startswith("val/"):
        monitor = "train/" + monitor.split("/", 1)[1]
        log.warning("no validation set: monitoring %s instead of %s", monitor, cfg.monitor)

    state, ckpt = _resume_state(out_dir, cfg, resume, len(train_dataset))
    if state.stop_reason and ckpt is None:  # a finished run: nothing to do
        return _result(out_dir, state)

    _seed_all(cfg.seed)
    task.on_fit_start(train_dataset)
    ema_cb = EMACallback(cfg.ema_decay, cfg.ema_warmup) if cfg.ema_decay > 0 else None
    module = _TaskModule(
        task, cfg, train_dataset, val_dataset, collate_fn, out_dir, state, ckpt, ema_cb, extra, monitor
    )
    del ckpt
    callbacks: list[pl.Callback] = [_InterruptFlag()] + ([ema_cb] if ema_cb is not None else [])
    if cfg.progress:
        callbacks.append(_EpochBar())
    with _quiet_lightning():
        trainer = pl.Trainer(
            **trainer_kwargs(cfg, has_val=val_dataset is not None),
            max_epochs=cfg.max_epochs - state.epoch,
            callbacks=callbacks,
            logger=_make_logger(cfg, out_dir),
            default_root_dir=str(out_dir),
        )
        _fit_interruptible(trainer, module)
    # a run stopped by Lightning itself (e.g. its max_epochs) still has a reason
    state.stop_reason = state.stop_reason or _limits_reached(cfg, state) or "stopped"
    return _result(out_dir, state)


def _fit_interruptible(trainer: pl.Trainer, module: _TaskModule) -> None:
    """``trainer.fit`` that turns Ctrl-C back into ``KeyboardInterrupt`` (Lightning calls
    ``sys.exit(1)`` and leaves SIGINT ignored) with a message on how to resume."""
    import signal

    try:
        previous = signal.getsignal(signal.SIGINT)
    except ValueError:  # not the main thread
        previous = None
    try:
        trainer.fit(module)
    except SystemExit as exc:
        if not module.interrupted:
            raise
        if previous is not None:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGINT, previous)
        raise KeyboardInterrupt(
            f"training interrupted; run the same command again to resume from {module.out_dir / LAST_NAME}"
        ) from exc


def _warn_config_changes(path: Path, ckpt: Mapping[str, Any], cfg: TrainConfig, num_train: int) -> None:
    old = ckpt.get("config", {})
    new = config_to_dict(cfg)
    changed = [k for k in _TRAJECTORY_KEYS if k in old and old[k] != new[k]]
    if ckpt.get("num_train") not in (None, num_train):
        changed.append(f"training-set size {ckpt.get('num_train')} -> {num_train}")
    if changed:
        warnings.warn(
            f"{path}: resuming with changed settings ({', '.join(changed)}); "
            "the run continues but will not match an uninterrupted one",
            UserWarning,
            stacklevel=3,
        )


@torch.no_grad()
def _no_grad_call(fn: Callable[[], StepOutput]) -> StepOutput:
    return fn()


def evaluate(
    task: Task,
    dataset: Any,
    batch_size: int = 32,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    split: str = "test",
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Metrics of ``task`` over ``dataset`` (batch-size-weighted means), without Lightning.

    Args:
        task: the task, with the weights to evaluate already loaded.
        dataset: a map-style dataset.
        batch_size: evaluation batch size.
        collate_fn: as in :func:`fit`.
        split: the split name passed to ``task.step`` and used as the metric prefix.
        device: where to run.

    Returns:
        ``{f"{split}/loss": ..., f"{split}/<metric>": ...}``.
    """
    from lightning.fabric.utilities.apply_func import move_data_to_device

    was_training = task.training
    task.eval().to(device)
    acc = _Accumulator()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn)
    try:
        for batch in loader:
            batch = move_data_to_device(batch, torch.device(device))
            if task.grad_in_eval:
                with torch.enable_grad():
                    out = task.step(batch, split)
            else:
                out = _no_grad_call(lambda b=batch: task.step(b, split))
            acc.add(check_step_output(out, split, task))
    finally:
        task.train(was_training)
    return acc.reduce(None, split)
