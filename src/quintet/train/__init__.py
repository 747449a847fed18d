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

from quintet._lazy import lazy_api

__getattr__, __dir__, __all__ = lazy_api(
    __name__,
    {"load_checkpoint": "checkpoint", "load_model_file": "checkpoint", "save_checkpoint": "checkpoint",
     "save_model": "checkpoint", "to_plain": "checkpoint", "TrainConfig": "config", "EMACallback": "ema",
     "ExponentialMovingAverage": "ema", "ema_update_": "ema", "FitResult": "loop", "cosine_lr": "loop",
     "evaluate": "loop", "fit": "loop", "trainer_kwargs": "loop", "EpochBatchSampler": "sampler",
     "StepOutput": "task", "Task": "task"},
)  # fmt: skip
