"""MedAugment: medically safe automatic augmentation (arXiv 2306.17466) for classification and segmentation.

Six pixel and eight spatial operations with the published level -> parameter map (:mod:`.ops`),
the branch sampling policy (:mod:`.policy`), offline dataset expansion (:mod:`.expand`), online
transforms and datasets (:mod:`.data`), peers for comparison (:mod:`.peers`) and the training
harness used by the benchmark (:mod:`.bench`).
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from quintet.medaugment.ops import OPS, PIXEL_OPS, SPATIAL_OPS
from quintet.medaugment.policy import COMBINATIONS, Branch, MedAugment, OpCall

__all__ = ["COMBINATIONS", "OPS", "PIXEL_OPS", "SPATIAL_OPS", "Branch", "MedAugment", "OpCall"]
