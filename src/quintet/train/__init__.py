"""The shared trainer of quintet's centralized models (LEIGNN, DeepRelax, DefiNet, ...).

Quick use::

    from quintet.train import Task, StepOutput, TrainConfig, fit, load_model_file

    class MyTask(Task):
        def step(self, batch, split):
            pred = self.model(batch["x"])
            loss = (pred - batch["y"]).abs().mean()
            return StepOutput(loss, {"mae": loss.detach()}, batch_size=len(pred))

    result = fit(MyTask(net), train_ds, val_ds, TrainConfig(max_epochs=50), "runs/my")
    net.load_state_dict(load_model_file(result.best_path)["state_dict"])

Lightning based: AdamW (amsgrad), ReduceLROnPlateau, early stopping, gradient clipping, EMA of the
weights (validated and saved), a wall-clock budget, "epochs" of a fixed number of steps, a
checkpoint every epoch with bit-exact resume, progress bar, CSV (and optional TensorBoard) logs,
DDP through Lightning's ``devices``/``num_nodes``/``strategy``. See ``docs/training.md``.
"""

from quintet.train.checkpoint import load_checkpoint, load_model_file, save_checkpoint, save_model, to_plain
from quintet.train.config import TrainConfig
from quintet.train.ema import EMACallback, ExponentialMovingAverage, ema_update_
from quintet.train.loop import FitResult, cosine_lr, evaluate, fit, trainer_kwargs
from quintet.train.sampler import EpochBatchSampler
from quintet.train.task import StepOutput, Task

__all__ = [
    "EMACallback",
    "EpochBatchSampler",
    "ExponentialMovingAverage",
    "FitResult",
    "StepOutput",
    "Task",
    "TrainConfig",
    "cosine_lr",
    "ema_update_",
    "evaluate",
    "fit",
    "load_checkpoint",
    "load_model_file",
    "save_checkpoint",
    "save_model",
    "to_plain",
    "trainer_kwargs",
]
