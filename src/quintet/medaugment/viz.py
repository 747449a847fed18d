"""Augmentation grid plots (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from quintet.io import atomic_write_bytes

__all__ = ["augmentation_grid"]


def _show(ax, img: np.ndarray) -> None:
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.dtype != np.uint8:
        lo, hi = float(img.min()), float(img.max())
        img = (img.astype(np.float64) - lo) / (hi - lo + 1e-12)
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0 if img.dtype == np.uint8 else None)
    ax.set_xticks([])
    ax.set_yticks([])


def augmentation_grid(
    rows: Sequence[Sequence[tuple[np.ndarray, np.ndarray | None, str]]],
    path: str | Path,
    title: str = "MedAugment",
) -> Path:
    """Plot rows of (image, mask, label) cells; masks are drawn as red contours over the image.

    Args:
        rows: one row per source image, one cell per branch.
        path: output PNG (written atomically).
        title: figure title.
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nr, nc = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(nr, nc, figsize=(2.4 * nc, 2.8 * nr), squeeze=False)
    for r, row in enumerate(rows):
        for c in range(nc):
            ax = axes[r][c]
            if c >= len(row):
                ax.axis("off")
                continue
            img, mask, label = row[c]
            _show(ax, img)
            if mask is not None and mask.max() > mask.min():
                ax.contour(
                    mask > (int(mask.max()) + int(mask.min())) / 2, levels=[0.5], colors="r", linewidths=0.6
                )
            ax.set_title(label, fontsize=5.5)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path
