"""MedAugment: medically safe automatic augmentation (arXiv 2306.17466) for classification and segmentation.

Six pixel and eight spatial operations with the published level -> parameter map (``ops``), the branch
sampling policy (``policy``), offline dataset expansion (``expand``), online transforms and datasets
(``data``), peers for comparison (``peers``) and the training harness of the benchmark (``bench``).
"""

from quintet._lazy import lazy_api

__getattr__, __dir__, __all__ = lazy_api(
    __name__,
    {"MedAugment": "policy", "Branch": "policy", "OpCall": "policy", "COMBINATIONS": "policy",
     "OPS": "ops", "PIXEL_OPS": "ops", "SPATIAL_OPS": "ops"},
)  # fmt: skip
