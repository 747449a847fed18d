"""MedAugment as an albumentations 2.0.8 transform (a ``DualTransform``): a thin adapter over :mod:`.policy`.

``MedAugmentTransform`` samples one of the N+1 branches per call (the identity with probability
1/(N+1) when the original is kept) from albumentations' own per-transform generator, so
``A.Compose(..., seed=...)`` seeds it, and applies it with the pure functions of :mod:`.ops`:
pixel ops to ``image`` / ``images`` / ``volume``, spatial ops (nearest, ``mask_fill``) to ``mask``,
``masks`` and ``mask3d``. The sampled branch is the transform's only parameter, stored as a plain
JSON-able dict under ``params["branch"]``, so ``A.ReplayCompose`` records it and replays it bit for
bit, and ``A.to_dict`` / ``A.from_dict`` round-trip the transform (import this module first so
albumentations' registry knows the class). Bounding boxes and keypoints are not supported.

albumentations' dtype contract applies: uint8 images, or float32 in [0, 1]; pass ``value_range``
(a window or ``"auto"``) for other data. Volumes follow albumentations' ``(D, H, W[, C])`` layout;
spatial ops act in-plane on every slice alike.

Example:
    >>> import albumentations as A
    >>> from quintet.medaugment.albu import MedAugmentTransform
    >>> pipe = A.Compose([MedAugmentTransform(level=5), A.Normalize()], seed=0)
    >>> out = pipe(image=img, mask=msk)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import albumentations as A
import numpy as np
from albumentations.core.transforms_interface import BaseTransformInitSchema
from albumentations.core.type_definitions import Targets
from pydantic import Field

from quintet.medaugment.policy import Branch, MedAugment

__all__ = ["MedAugmentTransform"]


class MedAugmentTransform(A.DualTransform):
    """Online MedAugment inside albumentations pipelines (``A.Compose``, ``A.OneOf``, ``A.ReplayCompose``).

    Args:
        level: magnitude level 1..5 (trigger probability ``0.2 * level`` per op).
        num_branches: N; the identity is drawn with probability 1/(N+1) when ``keep_original``.
        keep_original: include the identity branch in the draw.
        symmetric: two-sided shear / translation instead of the paper's one-sided ranges.
        value_range: intensity window ``(lo, hi)``, ``"auto"`` or ``None`` (uint8, float32 in [0, 1]).
        mask_fill: label written where spatial ops move the mask outside the image.
        seed: seed of this transform's generator when used on its own (``A.Compose(seed=)`` overrides it).
        p: probability of applying the transform at all (albumentations' ``p``).
    """

    _targets = (Targets.IMAGE, Targets.MASK, Targets.VOLUME, Targets.MASK3D)

    class InitSchema(BaseTransformInitSchema):
        level: int = Field(ge=1, le=5)
        num_branches: int = Field(ge=1)
        keep_original: bool
        symmetric: bool
        value_range: tuple[float, float] | Literal["auto"] | None
        mask_fill: int
        seed: int | None

    def __init__(
        self,
        level: int = 5,
        num_branches: int = 4,
        keep_original: bool = True,
        symmetric: bool = False,
        value_range: tuple[float, float] | Literal["auto"] | None = None,
        mask_fill: int = 0,
        seed: int | None = None,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.policy = MedAugment(level, num_branches, keep_original, symmetric, False, value_range, mask_fill)
        self._volume_policy = MedAugment(**{**self.policy.to_dict(), "volume": True})
        self.level, self.num_branches, self.keep_original = level, num_branches, keep_original
        self.symmetric, self.value_range, self.mask_fill = symmetric, self.policy.value_range, mask_fill
        self._worker: int | None = None
        if seed is not None:
            self.set_random_seed(seed)

    def _generator(self) -> np.random.Generator:
        """albumentations' generator; inside a DataLoader worker it is re-seeded once from ``(seed, worker id)``.

        albumentations 2.0.8 copies the same generator into every worker, so without this all workers
        would draw the same branches. The base is the transform's seed (``A.Compose(seed=)`` sets it),
        or PyTorch's per-worker seed when none was given.
        """
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        if info is not None and self._worker != info.id:
            base = getattr(self, "seed", None)
            self.random_generator = np.random.default_rng(
                [info.seed if base is None else int(base), info.id + 1]
            )
            self._worker = info.id
        return self.random_generator

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("level", "num_branches", "keep_original", "symmetric", "value_range", "mask_fill")

    def get_params(self) -> dict[str, Any]:
        """Sample one branch from albumentations' generator; the record is the transform's only parameter."""
        return {"branch": self.policy.sample_online(self._generator()).to_dict()}

    def apply(self, img: np.ndarray, branch: Mapping[str, Any], **params: Any) -> np.ndarray:
        return self.policy.apply(Branch.from_dict(dict(branch)), img)[0]

    def apply_to_mask(self, mask: np.ndarray, branch: Mapping[str, Any], **params: Any) -> np.ndarray:
        return self.policy.apply_mask(Branch.from_dict(dict(branch)), mask)

    def apply_to_volume(self, volume: np.ndarray, branch: Mapping[str, Any], **params: Any) -> np.ndarray:
        return self._volume_policy.apply(Branch.from_dict(dict(branch)), volume)[0]

    def apply_to_mask3d(self, mask3d: np.ndarray, branch: Mapping[str, Any], **params: Any) -> np.ndarray:
        return self._volume_policy.apply_mask(Branch.from_dict(dict(branch)), mask3d)

    def replay(
        self, record: Mapping[str, Any] | Branch, image: np.ndarray, mask: np.ndarray | None = None
    ) -> dict[str, Any]:
        """Apply a recorded branch (``params["branch"]`` of an earlier call) again, bit-identically."""
        rec = record.to_dict() if isinstance(record, Branch) else dict(record)
        out = {"image": self.apply(image, rec)}
        if mask is not None:
            out["mask"] = self.apply_to_mask(mask, rec)
        return out
