"""Peers for the MedAugment benchmarks: kornia's RandAugment / TrivialAugment / AutoAugment (with masks),
the paper's flip/rotate segmentation policies, and the MedAugment op chains run by kornia.

Every policy here is a callable ``peer(image, mask=None, rng) -> (image, mask)`` on channel-last uint8
NumPy arrays, so the benchmark treats all methods alike. AugMix is not in kornia 0.9 (and
torchvision does not install here), so it is reported as unavailable. The same op chains in
albumentations 2.0.8 and the throughput measurement stay in ``quintet.medaugment.peers`` (the demo
uses them).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from quintet.medaugment import ops
from quintet.medaugment.policy import Branch, MedAugment

__all__ = [
    "KORNIA_POLICIES",
    "KorniaChains",
    "Peer",
    "flip_rotate_policy",
    "kornia_policy",
    "make_peer",
    "peer_names",
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
