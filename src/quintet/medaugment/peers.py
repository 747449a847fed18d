"""The MedAugment op chains run by albumentations 2.0.8, and the fair throughput comparison with them.

The demo and ``benchmarks/medaugment.py`` both call :func:`interleaved_throughput`, so they report the
same quantity. The other peers (kornia policies and chains, the paper's flip/rotate policies) are
benchmark code: ``benchmarks/medaugment_peers.py``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from quintet.medaugment import ops
from quintet.medaugment.policy import Branch, MedAugment, OpCall

__all__ = ["AlbumentationsChains", "interleaved_throughput", "per_op_throughput"]


# --------------------------------------------------------------------------------------------------
# the same op chains in albumentations 2.0.8 (throughput comparison)
# --------------------------------------------------------------------------------------------------


class AlbumentationsChains:
    """The 14 MedAugment ops at ``level`` as albumentations 2.0.8 transforms (2.x argument names, p = 1).

    ``run(branch, image, mask)`` applies the ops named in a sampled :class:`Branch` in order, each
    drawing its own parameters from albumentations' ranges (the same ranges as the level map;
    noise std is drawn uniformly from ``[sqrt(2l), sqrt(10l)] / 255`` as 2.x takes a std range).
    """

    def __init__(self, level: int = 5, seed: int = 0) -> None:
        import albumentations as A
        import cv2

        l = ops.check_level(level)
        r = lambda name, key: ops.param_ranges(name, l)[key]
        const = {"border_mode": cv2.BORDER_CONSTANT, "fill": 0, "fill_mask": 0}
        bits = int(r("posterize", "bits")[0])
        kmax = int(r("gaussian_blur", "ksize")[1])
        var = r("gaussian_noise", "variance")
        self.transforms: dict[str, Any] = {
            "brightness": A.ColorJitter(
                brightness=r("brightness", "factor"), contrast=(1, 1), saturation=(1, 1), hue=(0, 0), p=1
            ),
            "contrast": A.ColorJitter(
                brightness=(1, 1), contrast=r("contrast", "factor"), saturation=(1, 1), hue=(0, 0), p=1
            ),
            "posterize": A.Posterize(num_bits=(bits, bits), p=1),
            "sharpen": A.Sharpen(alpha=r("sharpen", "alpha"), lightness=(1.0, 1.0), p=1),
            "gaussian_blur": A.GaussianBlur(
                blur_limit=(3, kmax), sigma_limit=(ops.blur_sigma(3), ops.blur_sigma(kmax)), p=1
            ),
            "gaussian_noise": A.GaussNoise(
                std_range=(math.sqrt(var[0]) / 255, math.sqrt(var[1]) / 255),
                mean_range=(0, 0),
                per_channel=True,
                p=1,
            ),
            "rotate": A.Rotate(limit=r("rotate", "angle"), interpolation=cv2.INTER_LINEAR, p=1, **const),
            "hflip": A.HorizontalFlip(p=1),
            "vflip": A.VerticalFlip(p=1),
            "scale": A.Affine(scale=r("scale", "factor"), keep_ratio=True, p=1, **const),
            "shear_x": A.Affine(shear={"x": r("shear_x", "angle"), "y": (0, 0)}, p=1, **const),
            "shear_y": A.Affine(shear={"x": (0, 0), "y": r("shear_y", "angle")}, p=1, **const),
            "translate_x": A.Affine(
                translate_percent={"x": r("translate_x", "fraction"), "y": (0, 0)}, p=1, **const
            ),
            "translate_y": A.Affine(
                translate_percent={"x": (0, 0), "y": r("translate_y", "fraction")}, p=1, **const
            ),
        }
        for i, t in enumerate(self.transforms.values()):
            t.set_random_seed(seed + i)

    def run(self, branch: Branch, image: np.ndarray, mask: np.ndarray | None = None):
        """Apply the fired ops of ``branch`` (names only; albumentations samples the parameters)."""
        data: dict[str, Any] = {"image": image} if mask is None else {"image": image, "mask": mask}
        for call in branch.applied:
            data = self.transforms[call.name](**data)
        return data["image"], data.get("mask")


def _pass_seconds(fn: Callable[[Branch], Any], branches: list[Branch]) -> float:
    t = time.perf_counter()
    for b in branches:
        fn(b)
    return time.perf_counter() - t


def _interleave(
    branches: list[Branch], img: np.ndarray, mask: np.ndarray | None, repeats: int, seed: int
) -> dict[str, float]:
    """Time ``branches`` through quintet and albumentations, alternating which goes first each repetition."""
    aug, alb = MedAugment(), AlbumentationsChains(5, seed)
    ours = lambda b: aug.apply(b, img, mask)
    theirs = lambda b: alb.run(b, img, mask)
    _pass_seconds(ours, branches), _pass_seconds(theirs, branches)  # warm-up (OpenCV, caches)
    t_ours, t_theirs = [], []
    for r in range(repeats):
        first, second = (ours, theirs) if r % 2 == 0 else (theirs, ours)
        a, b = _pass_seconds(first, branches), _pass_seconds(second, branches)
        t_ours.append(a if r % 2 == 0 else b)
        t_theirs.append(b if r % 2 == 0 else a)
    ratio = np.array(t_theirs) / np.array(t_ours)
    q25, med, q75 = np.percentile(ratio, [25, 50, 75])
    return {
        "ratio_median": float(med),
        "ratio_q25": float(q25),
        "ratio_q75": float(q75),
        "ratio_min": float(ratio.min()),
        "ratio_max": float(ratio.max()),
        "medaugment_img_s": float(len(branches) / np.median(t_ours)),
        "albumentations_img_s": float(len(branches) / np.median(t_theirs)),
        "repeats": repeats,
        "n_images": len(branches),
    }


def interleaved_throughput(
    size: int = 256, n_images: int = 100, repeats: int = 21, with_mask: bool = False, seed: int = 0
) -> dict[str, float]:
    """Images/s of the same op chains in quintet and in albumentations 2.0.8, measured fairly.

    ``n_images`` non-identity MedAugment branches are sampled once; each repetition times one pass of
    them through quintet's ops and one through :class:`AlbumentationsChains` (the same ops, albumentations
    drawing its own parameters), alternating which goes first, in this one process, after one warm-up
    pass each. The result is the median over repetitions of the per-repetition ratio
    (quintet img/s / albumentations img/s) with its quartiles and range, plus the median rates.
    The spread is timing noise on a fixed sample of chains; the ratio also depends on the op mix
    (see :func:`per_op_throughput`), so small ``n_images`` give a noisier figure.
    The benchmark and the demo both call this, so they report the same quantity.
    """
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(size, size)).astype(np.uint8)
    mask = (img > 128).astype(np.uint8) if with_mask else None
    aug = MedAugment()
    branches: list[Branch] = []
    while len(branches) < n_images:
        b = aug.sample_online(rng)
        branches += [] if b.is_identity else [b]
    return {**_interleave(branches, img, mask, repeats, seed), "size": size, "with_mask": with_mask}


def per_op_throughput(
    size: int = 256, n_images: int = 30, repeats: int = 9, seed: int = 0
) -> dict[str, float]:
    """Median quintet / albumentations throughput ratio of each of the 14 ops alone (same interleaving)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(size, size)).astype(np.uint8)
    out = {}
    for name in ops.OPS:
        calls = [OpCall(name, True, ops.sample_params(name, 5, rng)) for _ in range(n_images)]
        branches = [Branch((0, 1), (c,)) for c in calls]
        out[name] = _interleave(branches, img, None, repeats, seed)["ratio_median"]
    return out
