"""``quintet demo`` section for MedAugment: augmentation grid, replay check, offline expansion, throughput.

Uses real images with their masks when ``../shared/data/medical`` is present (brain MRI, ISBI EM
membranes); otherwise a generated phantom (ellipses with a lesion mask, in 8 and 16 bit).
"""

from __future__ import annotations

import os
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

from quintet.demo import DemoSection

__all__ = ["demo", "phantom"]


def phantom(size: int = 128, seed: int = 0, dtype: type = np.uint8) -> tuple[np.ndarray, np.ndarray]:
    """A head-like phantom (nested ellipses + noise) and the mask of a bright 'lesion' (labels 0/1)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    img = np.zeros((size, size), np.float32)

    def ellipse(cx, cy, rx, ry, angle=0.0):
        c, s = np.cos(angle), np.sin(angle)
        u = ((xx - cx) * c + (yy - cy) * s) / rx
        v = (-(xx - cx) * s + (yy - cy) * c) / ry
        return u**2 + v**2 <= 1

    img[ellipse(0, 0, 0.42, 0.47)] = 0.75
    img[ellipse(0, 0, 0.38, 0.43)] = 0.35
    for _ in range(3):
        (cx, cy), (rx, ry) = rng.uniform(-0.2, 0.2, 2), rng.uniform(0.04, 0.12, 2)
        img[ellipse(cx, cy, rx, ry, rng.uniform(0, 3))] = 0.55
    (cx, cy), (rx, ry) = rng.uniform(-0.15, 0.15, 2), rng.uniform(0.05, 0.09, 2)
    lesion = ellipse(cx, cy, rx, ry, rng.uniform(0, 3))
    img[lesion] = 0.95
    img = np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)
    top = 255 if dtype == np.uint8 else 65535
    return np.rint(img * top).astype(dtype), lesion.astype(np.uint8)


def _real_samples(size: int) -> list[tuple[np.ndarray, np.ndarray | None, str]] | None:
    import cv2

    from quintet.medaugment.data import list_images, read_image, read_mask

    root = Path(
        os.environ.get("QUINTET_SHARED_DATA", Path(__file__).resolve().parents[4] / "shared" / "data")
    )
    med = root / "medical"
    if not med.is_dir():
        return None
    out: list[tuple[np.ndarray, np.ndarray | None, str]] = []
    try:
        mri = list_images(med / "brain_tumor_mri" / "Testing" / "glioma_tumor")[0]
        out.append(
            (cv2.resize(read_image(mri, "gray"), (size, size), interpolation=cv2.INTER_AREA), None, mri.name)
        )
        em = list_images(med / "isbi2012_em_membrane" / "images")[0]
        img = cv2.resize(read_image(em, "gray"), (size, size), interpolation=cv2.INTER_AREA)
        m = read_mask(med / "isbi2012_em_membrane" / "masks" / em.name)
        out.append((img, cv2.resize(m, (size, size), interpolation=cv2.INTER_NEAREST), f"EM {em.name}"))
    except (FileNotFoundError, ValueError, IndexError):
        return None
    return out


def _grid(out_dir: Path, size: int) -> tuple[Path, str, bool, bool]:
    """Expand real images (or phantoms) once, check labels and replay, draw the grid."""
    from quintet.medaugment.policy import Branch, MedAugment
    from quintet.medaugment.viz import augmentation_grid

    aug = MedAugment(level=5, num_branches=4)
    rng = np.random.default_rng(8)
    samples = _real_samples(size)
    source = "real images (brain MRI; ISBI 2012 EM with its mask)" if samples else "generated phantoms"
    if samples is None:
        samples = []
        p8, m8 = phantom(size, 0)
        samples.append((p8, m8, "phantom uint8"))
    p16, m16 = phantom(size, 1, np.uint16)
    samples.append((p16, m16, "phantom uint16"))

    rows, labels_ok, replay_ok = [], True, True
    for img, mask, _name in samples:
        row = []
        labels = set(np.unique(mask)) if mask is not None else set()
        for x, m, br in aug.expand(img, mask, rng):
            if m is not None:
                labels_ok &= set(np.unique(m)) <= labels
            x2, m2 = aug.apply(Branch.from_dict(br.to_dict()), img, mask)
            replay_ok &= bool(np.array_equal(x, x2)) and (
                m is None or (m2 is not None and np.array_equal(m, m2))
            )
            row.append((x, m, textwrap.fill(br.describe(), 34)))
        rows.append(row)
    grid = augmentation_grid(
        rows, out_dir / "medaugment_grid.png", title=f"MedAugment level 5, N = 4 + original ({source})"
    )
    return grid, source, labels_ok, replay_ok


def _expansion(size: int, quick: bool) -> tuple[Any, float, Any]:
    """Offline expansion of a tiny segmentation folder, then a resume (nothing left to do)."""
    from quintet.medaugment.data import write_image
    from quintet.medaugment.expand import ExpandConfig, expand_dataset

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        for k in range(4 if quick else 12):
            img, mask = phantom(size, 10 + k)
            write_image(tmp_path / "in" / "images" / f"case{k}.png", img)
            write_image(tmp_path / "in" / "masks" / f"case{k}.png", mask * 255)
        cfg = ExpandConfig(
            input=tmp_path / "in", out=tmp_path / "out", task="segmentation", layout="folder"
        )
        t = time.perf_counter()
        res = expand_dataset(cfg, progress=False)
        t_expand = time.perf_counter() - t
        again = expand_dataset(cfg, progress=False)
    return res, t_expand, again


def demo(out_dir: Path, quick: bool = False) -> DemoSection:
    """Run the MedAugment demo into ``out_dir`` and return its report section."""
    from quintet.medaugment.peers import interleaved_throughput

    out_dir = Path(out_dir)
    size = 96 if quick else 160
    grid, source, labels_ok, replay_ok = _grid(out_dir, size)
    res, t_expand, again = _expansion(size, quick)

    # throughput on 256x256 gray images: the same op chains through our ops and albumentations 2.0.8,
    # interleaved over repetitions (the function the benchmark uses)
    thr = interleaved_throughput(256, 30 if quick else 100, 5 if quick else 15)
    ours, theirs, ratio = thr["medaugment_img_s"], thr["albumentations_img_s"], thr["ratio_median"]

    metrics = {
        "source": source,
        "labels_preserved": bool(labels_ok),
        "replay_identical": bool(replay_ok),
        "expanded_sources": res.num_sources,
        "expanded_files": res.num_written,
        "expand_seconds": round(t_expand, 3),
        "resume_skipped": again.num_skipped,
        "img_per_s": round(ours, 1),
        "albumentations_img_per_s": round(theirs, 1),
        "throughput_ratio_vs_albumentations": round(ratio, 3),
        "throughput_ratio_q25_q75": [round(thr["ratio_q25"], 3), round(thr["ratio_q75"], 3)],
    }
    md = f"""
MedAugment (arXiv 2306.17466): 6 pixel + 8 spatial operations, level 5 (p = 1), N = 4 branches of
(1,2), (0,3), (0,2), (1,1) pixel/spatial ops plus the original. Grid below: {source}; red contours
are the masks moved by the spatial ops (pixel ops never touch them).

| check | result |
|---|---|
| mask labels preserved by every branch | {labels_ok} |
| replay of every recorded branch is bit-identical | {replay_ok} |
| offline expansion (segmentation folder) | {res.num_sources} images -> {res.num_written} files in {t_expand:.2f} s |
| re-run of the finished expansion | {again.num_skipped} images skipped (resume) |
| throughput, 256² gray uint8, same op chains, interleaved ({thr["repeats"]} reps) | {ours:.0f} img/s vs albumentations 2.0.8 {theirs:.0f} img/s (median ratio x{ratio:.2f}, quartiles {thr["ratio_q25"]:.2f}-{thr["ratio_q75"]:.2f}) |
"""
    return DemoSection(title="MedAugment", markdown=md, images=[grid], metrics=metrics)
