"""Peers for comparison: kornia's RandAugment / TrivialAugment / AutoAugment (with masks), the paper's
flip/rotate segmentation policies, and the same MedAugment op chains run by albumentations 2.0.8 and
kornia (for the throughput comparison).

Every peer here is a callable ``peer(image, mask=None, rng) -> (image, mask)`` on channel-last uint8
NumPy arrays, so the benchmark treats all methods alike. AugMix is not in kornia 0.9 (and
torchvision does not install here), so it is reported as unavailable.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from quintet.medaugment import ops
from quintet.medaugment.policy import Branch, MedAugment, OpCall

__all__ = [
    "KORNIA_POLICIES",
    "AlbumentationsChains",
    "KorniaChains",
    "Peer",
    "flip_rotate_policy",
    "interleaved_throughput",
    "kornia_policy",
    "make_peer",
    "peer_names",
    "per_op_throughput",
]

Peer = Callable[
    [np.ndarray, "np.ndarray | None", np.random.Generator], tuple[np.ndarray, "np.ndarray | None"]
]

KORNIA_POLICIES: tuple[str, ...] = ("randaugment", "trivialaugment", "autoaugment")
FLIP_ROTATE: tuple[str, ...] = ("oneaugment", "twoaugment", "threeaugment")


def peer_names() -> tuple[str, ...]:
    """Every name :func:`make_peer` accepts."""
    return ("none", "medaugment", *KORNIA_POLICIES, *FLIP_ROTATE)


# --------------------------------------------------------------------------------------------------
# the paper's segmentation baselines: 1, 2 or 3 of (h-flip p 0.5, rotate +-90 p 0.5, v-flip p 0.5)
# --------------------------------------------------------------------------------------------------


def flip_rotate_policy(n_ops: int) -> Peer:
    """``oneaugment`` (h-flip), ``twoaugment`` (+ rotate U(-90, 90)), ``threeaugment`` (+ v-flip); each p = 0.5."""
    if n_ops not in (1, 2, 3):
        raise ValueError(f"n_ops must be 1, 2 or 3, got {n_ops}")

    def apply(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator):
        calls: list[tuple[str, dict[str, float]]] = []
        if rng.random() < 0.5:
            calls.append(("hflip", {}))
        if n_ops >= 2 and rng.random() < 0.5:
            calls.append(("rotate", {"angle": float(rng.uniform(-90, 90))}))
        if n_ops >= 3 and rng.random() < 0.5:
            calls.append(("vflip", {}))
        for name, params in calls:
            image = ops.apply_image(name, image, params)
            if mask is not None:
                mask = ops.apply_mask(name, mask, params)
        return image, mask

    return apply


# --------------------------------------------------------------------------------------------------
# kornia auto-augment policies (image, or image + mask through AugmentationSequential)
# --------------------------------------------------------------------------------------------------


def _kornia_module(name: str) -> Any:
    from kornia.augmentation.auto import AutoAugment, RandAugment, TrivialAugment

    if name == "randaugment":
        return RandAugment(n=2, m=9)  # torchvision defaults, as the paper's baseline
    if name == "trivialaugment":
        return TrivialAugment()
    if name == "autoaugment":
        return AutoAugment("imagenet")
    raise ValueError(f"unknown kornia policy {name!r}; valid: {', '.join(KORNIA_POLICIES)}")


def kornia_policy(name: str) -> Peer:
    """A kornia auto-augment policy on one uint8 image (gray or RGB) and optional mask.

    Gray images are repeated to 3 channels (kornia's saturation op requires RGB) and averaged back.
    Masks go through ``AugmentationSequential(data_keys=["input", "mask"])`` (geometry only, nearest).
    kornia draws from torch's global generator; it is seeded from ``rng`` on every call.
    """
    import kornia.augmentation as K
    import torch

    module = _kornia_module(name)
    seq = K.AugmentationSequential(module, data_keys=["input", "mask"])

    def apply(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator):
        if image.dtype != np.uint8:
            raise ValueError(f"kornia peers take uint8 images here, got {image.dtype}")
        gray = image.ndim == 2
        x = torch.from_numpy(image.astype(np.float32) / 255.0)
        x = x[None].repeat(3, 1, 1) if gray else x.permute(2, 0, 1)
        torch.manual_seed(int(rng.integers(0, 2**31 - 1)))
        with torch.no_grad():
            if mask is None:
                y = module(x[None])[0]
                m_out = None
            else:
                m = torch.from_numpy(mask.astype(np.float32))[None, None]
                y, m2 = seq(x[None], m)
                y = y[0]
                m_out = np.rint(m2[0, 0].numpy()).astype(mask.dtype)
        y = y.mean(0) if gray else y.permute(1, 2, 0)
        out = np.clip(np.rint(y.numpy() * 255.0), 0, 255).astype(np.uint8)
        return out, m_out

    return apply


def make_peer(name: str, level: int = 5) -> Peer:
    """Build a method by name (``none``, ``medaugment``, a kornia policy or a flip/rotate policy).

    ``medaugment`` here is the online draw (one of the N+1 branches, identity included).
    """
    if name == "none":
        return lambda image, mask, rng: (image, mask)
    if name == "medaugment":
        aug = MedAugment(level=level)

        def med(image, mask, rng):
            img, msk, _ = aug(image, mask, rng)
            return img, msk

        return med
    if name in KORNIA_POLICIES:
        return kornia_policy(name)
    if name in FLIP_ROTATE:
        return flip_rotate_policy(FLIP_ROTATE.index(name) + 1)
    if name == "augmix":
        raise ValueError(
            "AugMix is not available: kornia 0.9 has no AugMix and torchvision does not install here"
        )
    raise ValueError(f"unknown method {name!r}; valid: {', '.join(peer_names())}")


# --------------------------------------------------------------------------------------------------
# the same op chains in albumentations 2.0.8 and kornia (throughput comparison)
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


class KorniaChains:
    """The 14 ops at ``level`` as kornia 0.9 augmentations on ``(1, C, H, W)`` float tensors (p = 1).

    Sharpness uses kornia's own (PIL-style) definition, so that op is only similar, not equal.
    """

    def __init__(self, level: int = 5) -> None:
        import kornia.augmentation as K

        l = ops.check_level(level)
        r = lambda name, key: ops.param_ranges(name, l)[key]
        bits = float(r("posterize", "bits")[0])
        kmax = int(r("gaussian_blur", "ksize")[1])
        var = r("gaussian_noise", "variance")
        self.transforms: dict[str, Any] = {
            "brightness": K.ColorJiggle(brightness=(r("brightness", "factor")), p=1.0),
            "contrast": K.ColorJiggle(contrast=(r("contrast", "factor")), p=1.0),
            "posterize": K.RandomPosterize(bits=(bits, bits + 1e-3), p=1.0),
            "sharpen": K.RandomSharpness(sharpness=r("sharpen", "alpha")[1], p=1.0),
            "gaussian_blur": K.RandomGaussianBlur(kernel_size=kmax, sigma=(0.8, 1.4), p=1.0),
            "gaussian_noise": K.RandomGaussianNoise(std=math.sqrt(sum(var) / 2) / 255, p=1.0),
            "rotate": K.RandomRotation(degrees=r("rotate", "angle")[1], p=1.0),
            "hflip": K.RandomHorizontalFlip(p=1.0),
            "vflip": K.RandomVerticalFlip(p=1.0),
            "scale": K.RandomAffine(degrees=0, scale=r("scale", "factor"), p=1.0),
            "shear_x": K.RandomAffine(degrees=0, shear=(0.0, r("shear_x", "angle")[1], 0.0, 0.0), p=1.0),  # type: ignore[arg-type]
            "shear_y": K.RandomAffine(degrees=0, shear=(0.0, 0.0, 0.0, r("shear_y", "angle")[1]), p=1.0),  # type: ignore[arg-type]
            "translate_x": K.RandomAffine(degrees=0, translate=(r("translate_x", "fraction")[1], 0.0), p=1.0),
            "translate_y": K.RandomAffine(degrees=0, translate=(0.0, r("translate_y", "fraction")[1]), p=1.0),
        }

    def run(self, branch: Branch, image: Any) -> Any:
        """Apply the fired ops of ``branch`` to a ``(1, C, H, W)`` float tensor in [0, 1]."""
        import torch

        with torch.no_grad():
            for call in branch.applied:
                image = self.transforms[call.name](image)
        return image


def fixed_branch(*names: str) -> Branch:
    """A branch that applies ``names`` in order with empty params (for peers that sample their own)."""
    return Branch((0, len(names)), tuple(OpCall(n, True, {}) for n in names))


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
