"""quintet: LEIGNN, DeepRelax, DefiNet, FedAux and MedAugment as one toolkit.

``quintet.load_model(path or pretrained name)`` loads any system's model file; each system's one-call
API lives on its package (``quintet.deeprelax.relax``, ``quintet.definet.relax``,
``quintet.leignn.calculator``, ``quintet.medaugment.MedAugment``, ``quintet.fedaux.run``).
"""

import os as _os

# the one place the third-party environment switches are set (before any of them is imported):
# no albumentations update check, no Flower/Ray telemetry, no Hugging Face downloads
for _key, _value in (
    ("NO_ALBUMENTATIONS_UPDATE", "1"),
    ("FLWR_TELEMETRY_ENABLED", "0"),
    ("RAY_USAGE_STATS_ENABLED", "0"),
    ("HF_HUB_OFFLINE", "1"),
):
    _os.environ.setdefault(_key, _value)

from quintet._lazy import lazy_api  # noqa: E402

__version__ = "0.1.0"
__getattr__, __dir__, _API = lazy_api(__name__, {"load_model": "models", "shipped_models": "models"})
__all__ = ["__version__", *_API]
