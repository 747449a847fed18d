"""``quintet medaugment <verb>``: ``expand`` (offline dataset expansion) and ``preview`` (one image)."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quintet.cli import Verb
from quintet.config import save_config

__all__ = ["VERBS", "PreviewConfig", "preview"]


@dataclass
class PreviewConfig:
    """Settings of ``quintet medaugment preview``: augment one image (and mask) and plot the branches.

    Attributes:
        image: the image file.
        mask: optional mask file.
        out: folder for ``preview.png``, the augmented files and ``branches.json``.
        level: magnitude level 1..5.
        num_branches: N.
        seed: seed.
        rows: how many independent expansions to draw.
    """

    image: Path = Path("image.png")
    mask: Path | None = None
    out: Path = Path("medaugment_preview")
    level: int = 5
    num_branches: int = 4
    seed: int = 8
    rows: int = 2


def preview(cfg: PreviewConfig) -> str:
    """Expand one image ``rows`` times, write every output, the replay records and a grid PNG."""
    import numpy as np

    from quintet.io import atomic_save_json
    from quintet.medaugment.data import read_image, read_mask, write_image
    from quintet.medaugment.policy import MedAugment
    from quintet.medaugment.viz import augmentation_grid

    image = read_image(cfg.image)
    mask = read_mask(cfg.mask) if cfg.mask is not None else None
    aug = MedAugment(cfg.level, cfg.num_branches)
    out = Path(cfg.out)
    rng = np.random.default_rng(cfg.seed)
    grid, records = [], []
    ext = ".png" if image.dtype in (np.uint8, np.uint16) else ".npy"
    for r in range(cfg.rows):
        row = []
        for i, (img, msk, br) in enumerate(aug.expand(image, mask, rng), start=1):
            write_image(out / f"row{r}_{i}{ext}", img)
            if msk is not None:
                write_image(out / f"row{r}_{i}_mask.png", msk)
            records.append({"row": r, "branch": i, **br.to_dict()})
            row.append((img, msk, textwrap.fill(br.describe(), 40)))
        grid.append(row)
    atomic_save_json(out / "branches.json", records)
    save_config(cfg, out / "medaugment_preview.yaml")
    path = augmentation_grid(
        grid, out / "preview.png", title=f"MedAugment level {cfg.level}, N={cfg.num_branches}"
    )
    return f"preview written to {path}"


def _expand(cfg: Any) -> str:
    from quintet.medaugment.expand import expand_dataset

    res = expand_dataset(cfg)
    return (
        f"expanded {res.num_sources} images ({res.num_skipped} already done) into {res.output}: "
        f"{res.num_written} training files, {res.num_copied} other files copied; manifest {res.manifest}"
    )


def _verbs() -> list[Verb]:
    from quintet.medaugment.expand import ExpandConfig

    return [
        Verb("expand", "offline dataset expansion: N augmented copies + the original per training image",
             ExpandConfig, _expand, inputs="input", out="out", seed="seed",
             example="quintet medaugment expand data/btmri -o data/btmri_aug train_split=Training workers=2"),
        Verb("preview", "augment one image (and mask) and write a grid of the branches", PreviewConfig, preview,
             inputs="image", out="out", seed="seed", flags={"--mask": "mask"},
             example="quintet medaugment preview scan.png --mask scan_mask.png -o preview"),
    ]  # fmt: skip


VERBS = _verbs()
