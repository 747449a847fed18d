"""MedAugment: medically safe automatic augmentation (arXiv 2306.17466) for classification and segmentation.

Six pixel and eight spatial operations with the published level -> parameter map (:mod:`.ops`),
the branch sampling policy (:mod:`.policy`), offline dataset expansion of 2D images and NIfTI /
DICOM volumes (:mod:`.expand`, :mod:`.volumes`), the albumentations transform (:mod:`.albu`), the
MONAI dictionary transform (:mod:`.monai_transforms`), folder datasets (:mod:`.data`), peers for
comparison (:mod:`.peers`) and the training harness used by the benchmark (:mod:`.bench`).
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from quintet.medaugment.ops import OPS, PIXEL_OPS, SPATIAL_OPS
from quintet.medaugment.policy import COMBINATIONS, Branch, MedAugment, OpCall

__all__ = [
    "COMBINATIONS",
    "OPS",
    "PIXEL_OPS",
    "SPATIAL_OPS",
    "Branch",
    "MedAugment",
    "MedAugmentTransform",
    "MedAugmentd",
    "OpCall",
]


def __getattr__(name: str) -> object:
    """``MedAugmentTransform`` (albumentations) and ``MedAugmentd`` (MONAI), imported on first use."""
    if name == "MedAugmentTransform":
        from quintet.medaugment.albu import MedAugmentTransform

        return MedAugmentTransform
    if name == "MedAugmentd":
        from quintet.medaugment.monai_transforms import MedAugmentd

        return MedAugmentd
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
