"""MedAugment: medically safe automatic augmentation (arXiv 2306.17466) for classification and segmentation.

Six pixel and eight spatial operations with the published level -> parameter map (``ops``), the branch
sampling policy (``policy``), offline dataset expansion of 2D images and NIfTI / DICOM volumes (``expand``,
``volumes``), the albumentations transform (``albu``), the MONAI dictionary transform
(``monai_transforms``), folder datasets (``data``) and the albumentations chains of the throughput
comparison (``peers``). The other peers and the training harness of the benchmarks live in ``benchmarks/``.
"""

from quintet._lazy import lazy_api

__getattr__, __dir__, __all__ = lazy_api(
    __name__,
    {"MedAugment": "policy", "Branch": "policy", "OpCall": "policy", "COMBINATIONS": "policy",
     "OPS": "ops", "PIXEL_OPS": "ops", "SPATIAL_OPS": "ops", "MedAugmentTransform": "albu",
     "MedAugmentd": "monai_transforms"},
)  # fmt: skip
