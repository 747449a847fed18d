"""Train + evaluate harness for comparing augmentation methods (MONAI networks, losses and metrics).

The protocol follows the paper's offline scheme at a reduced scale: every method turns the training
images into a fixed pool (MedAugment: N = 4 branches + the original; peers: 5 augmented copies, as in
the official generation script; ``none``: the originals), then the same network is trained from
scratch for the same number of optimizer steps with :func:`quintet.train.fit` (best epoch chosen on
an un-augmented validation split) and tested on held-out images.

Metrics: accuracy, and MONAI's confusion-matrix macro-F1 and per-image Dice / IoU (``monai.metrics``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from medaugment_peers import make_peer
from quintet.medaugment.data import list_images, read_image, read_mask
from quintet.medaugment.policy import MedAugment
from quintet.train import StepOutput, Task, TrainConfig, fit, load_model_file

__all__ = [
    "ArrayDataset",
    "ClassificationTask",
    "RunConfig",
    "SegmentationTask",
    "accuracy",
    "dice_iou",
    "load_brain_tumor",
    "load_isbi",
    "macro_f1",
    "make_classifier",
    "make_pool",
    "make_segmenter",
    "train_and_test",
]


# ------------------------------------------------------------------------------------------ metrics
def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of correct predictions."""
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def _one_hot(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.as_tensor(np.asarray(labels, np.int64)), num_classes).float()


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Unweighted mean over classes of F1 from MONAI's confusion matrix (a class with no support and
    no prediction counts as 1)."""
    from monai.metrics import compute_confusion_matrix_metric, get_confusion_matrix

    cm = get_confusion_matrix(_one_hot(y_pred, num_classes), _one_hot(y_true, num_classes)).sum(0)
    f1 = compute_confusion_matrix_metric("f1 score", cm)
    return float(torch.nan_to_num(f1, nan=1.0).mean())


def dice_iou(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Mean per-image Dice and IoU of binary masks ``(B, H, W)`` with MONAI (empty vs empty counts as 1)."""
    from monai.metrics import compute_dice, compute_iou

    p = torch.as_tensor(np.asarray(pred, bool)).float()[:, None]
    t = torch.as_tensor(np.asarray(target, bool)).float()[:, None]
    dice = compute_dice(p, t, include_background=True, ignore_empty=False)
    iou = compute_iou(p, t, include_background=True, ignore_empty=False)
    return float(dice.mean()), float(iou.mean())


# ------------------------------------------------------------------------------------------ data
def _resize(img: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    import cv2

    return cv2.resize(img, (size, size), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def load_brain_tumor(root: str | Path, size: int) -> dict[str, Any]:
    """Brain tumour MRI (``Training/<class>``, ``Testing/<class>``) as gray uint8 ``size x size`` arrays."""
    root = Path(root)
    out: dict[str, Any] = {}
    classes = sorted(p.name for p in (root / "Training").iterdir() if p.is_dir())
    if not classes:
        raise FileNotFoundError(f"{root}/Training: no class folders")
    for split, key in (("Training", "train"), ("Testing", "test")):
        xs, ys = [], []
        for ci, c in enumerate(classes):
            for p in list_images(root / split / c):
                xs.append(_resize(read_image(p, "gray"), size))
                ys.append(ci)
        out[f"{key}_x"], out[f"{key}_y"] = np.stack(xs), np.array(ys, dtype=np.int64)
    out["classes"] = classes
    return out


def load_isbi(root: str | Path, size: int) -> dict[str, Any]:
    """ISBI 2012 EM slices (``images/``, ``masks/``): gray uint8 images and binary membrane masks (1 = membrane)."""
    root = Path(root)
    imgs, masks = [], []
    for p in list_images(root / "images"):
        imgs.append(_resize(read_image(p, "gray"), size))
        m = read_mask(root / "masks" / p.name)
        masks.append((_resize(m, size, nearest=True) <= 127).astype(np.uint8))  # 0 = membrane in the source
    return {"x": np.stack(imgs), "y": np.stack(masks)}


def make_pool(
    method: str,
    images: np.ndarray,
    masks: np.ndarray | None,
    seed: int,
    copies: int = 5,
    level: int = 5,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """The offline training pool of one method.

    ``medaugment``: N = ``copies - 1`` branches + the original per image (the paper's default 4 + 1).
    Other methods: ``copies`` augmented copies per image (the official baselines drop the original).
    ``none``: the originals once. Returns ``(images, masks or None, source index per pool item)``.
    """
    rng = np.random.default_rng([seed, 7])
    out_x: list[np.ndarray] = []
    out_m: list[np.ndarray | None] = []
    src: list[int] = []
    if method == "none":
        return images.copy(), None if masks is None else masks.copy(), np.arange(len(images))
    if method == "medaugment":
        aug = MedAugment(level=level, num_branches=copies - 1)
        for i, img in enumerate(images):
            for x, m, _ in aug.expand(img, None if masks is None else masks[i], rng):
                out_x.append(x)
                out_m.append(m)
                src.append(i)
    else:
        peer = make_peer(method, level)
        for i, img in enumerate(images):
            for _ in range(copies):
                x, m = peer(img, None if masks is None else masks[i], rng)
                out_x.append(x)
                out_m.append(m)
                src.append(i)
    pool_masks = None if masks is None else np.stack([m for m in out_m if m is not None])
    return np.stack(out_x), pool_masks, np.array(src)


class ArrayDataset(torch.utils.data.Dataset):
    """In-memory dataset of uint8 gray images ``(N, H, W)`` with integer labels ``(N,)`` or masks ``(N, H, W)``."""

    def __init__(self, images: np.ndarray, targets: np.ndarray) -> None:
        self.x = torch.from_numpy(np.ascontiguousarray(images))
        self.y = torch.from_numpy(np.ascontiguousarray(targets))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.x[i].float().div(255.0)[None]
        y = self.y[i]
        return x, (y[None].float() if y.ndim == 2 else y.long())


# ------------------------------------------------------------------------------------------ models and tasks
def make_classifier(num_classes: int, width: int = 16) -> nn.Module:
    """A small 2D ResNet (MONAI ``ResNet``, one basic block per stage) for 1-channel input."""
    from monai.networks.nets import ResNet

    return ResNet(
        block="basic",
        layers=[1, 1, 1, 1],
        block_inplanes=[width, 2 * width, 4 * width, 8 * width],
        spatial_dims=2,
        n_input_channels=1,
        num_classes=num_classes,
    )


def make_segmenter(width: int = 8) -> nn.Module:
    """A small 2D MONAI ``UNet`` (4 levels, one residual unit) with one output logit channel."""
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=(width, 2 * width, 4 * width, 8 * width),
        strides=(2, 2, 2),
        num_res_units=1,
    )


class ClassificationTask(Task):
    """Cross-entropy; logs accuracy."""

    def step(self, batch: Any, split: str) -> StepOutput:
        x, y = batch
        logits = self.model(x)
        loss = nn.functional.cross_entropy(logits, y)
        acc = (logits.argmax(1) == y).float().mean()
        return StepOutput(loss, {"acc": acc.detach()}, batch_size=len(y))


class SegmentationTask(Task):
    """MONAI Dice loss on the sigmoid of one logit channel; logs the batch Dice at threshold 0.5."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        from monai.losses import DiceLoss

        self.loss = DiceLoss(sigmoid=True)

    def step(self, batch: Any, split: str) -> StepOutput:
        x, y = batch
        logits = self.model(x)
        loss = self.loss(logits, y)
        pred = (logits > 0).float()
        inter = (pred * y).sum()
        dice = 2 * inter / (pred.sum() + y.sum()).clamp_min(1.0)
        return StepOutput(loss, {"dice": dice.detach()}, batch_size=len(y))


@dataclass
class RunConfig:
    """One training run of the benchmark.

    Attributes:
        kind: ``classification`` or ``segmentation``.
        steps: optimizer steps (the same for every method).
        steps_per_epoch: steps between validations.
        batch_size: batch size.
        lr: AdamW learning rate.
        width: base channel width of the network.
        seed: seed of the pool, initialisation and data order.
        max_time_s: wall-clock cap per run (safety; ``None`` for none).
        patience: early stopping: stop after this many validations without a better validation accuracy
            (classification) or Dice (segmentation), the best of them kept; ``steps`` is then only a cap.
            ``None``: train the full ``steps``, best epoch by validation loss.
    """

    kind: Literal["classification", "segmentation"] = "classification"
    steps: int = 500
    steps_per_epoch: int = 100
    batch_size: int = 32
    lr: float = 2e-3
    width: int = 16
    seed: int = 0
    max_time_s: float | None = None
    patience: int | None = None


def _predict(model: nn.Module, x: np.ndarray, batch: int = 64) -> np.ndarray:
    model.eval()
    outs = []
    with torch.no_grad():
        for s in range(0, len(x), batch):
            t = torch.from_numpy(np.ascontiguousarray(x[s : s + batch])).float().div(255.0)[:, None]
            outs.append(model(t).numpy())
    return np.concatenate(outs)


def train_and_test(
    cfg: RunConfig,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    out_dir: str | Path,
    num_classes: int = 2,
    progress: bool = False,
) -> dict[str, float]:
    """Train on ``train`` (pool arrays), pick the best epoch on ``val``, and score ``test``.

    Returns:
        classification: ``acc``, ``f1``; segmentation: ``dice``, ``iou``; plus ``seconds`` and ``best_epoch``.
    """
    from quintet.seed import seed_everything

    seed_everything(cfg.seed)
    cls = cfg.kind == "classification"
    model = make_classifier(num_classes, cfg.width) if cls else make_segmenter(cfg.width)
    task = ClassificationTask(model) if cls else SegmentationTask(model)
    tcfg = TrainConfig(
        max_epochs=max(1, cfg.steps // cfg.steps_per_epoch),
        max_steps=cfg.steps,
        steps_per_epoch=cfg.steps_per_epoch,
        max_time_s=cfg.max_time_s,
        batch_size=cfg.batch_size,
        val_batch_size=64,
        lr=cfg.lr,
        weight_decay=1e-4,
        ema_decay=0.0,
        plateau_patience=100,
        early_stop_patience=cfg.patience,
        monitor="val/loss" if cfg.patience is None else ("val/acc" if cls else "val/dice"),
        monitor_mode="min" if cfg.patience is None else "max",
        grad_clip=None,
        seed=cfg.seed,
        accelerator="cpu",
        progress=progress,
    )
    t0 = time.perf_counter()
    res = fit(task, ArrayDataset(*train), ArrayDataset(*val), tcfg, out_dir, resume=False)
    seconds = time.perf_counter() - t0
    model.load_state_dict(load_model_file(res.best_path)["state_dict"])
    out = _predict(model, test[0])
    metrics: dict[str, float] = {"seconds": seconds, "best_epoch": float(res.best_epoch)}
    metrics["steps_run"] = float(res.history[-1]["step"]) if res.history else 0.0
    metrics["early_stopped"] = float(res.stop_reason == "early_stop")
    if cls:
        pred = out.argmax(1)
        metrics |= {"acc": accuracy(test[1], pred), "f1": macro_f1(test[1], pred, num_classes)}
    else:
        dice, iou = dice_iou(out[:, 0] > 0, test[1])
        metrics |= {"dice": dice, "iou": iou}
    return metrics


def summarize(runs: Sequence[dict[str, float]], keys: Sequence[str]) -> dict[str, float]:
    """Mean of each key over seeds, plus ``std`` (of the first key) and ``n``."""
    out = {k: float(np.mean([r[k] for r in runs])) for k in keys}
    out["std"] = float(np.std([r[keys[0]] for r in runs], ddof=1)) if len(runs) > 1 else 0.0
    for k in keys[1:]:
        out[f"{k}_std"] = float(np.std([r[k] for r in runs], ddof=1)) if len(runs) > 1 else 0.0
    out["n"] = len(runs)
    return out
