"""Seeding helpers: one call seeds Python, NumPy and torch."""

from __future__ import annotations

import os
import random

import numpy as np

__all__ = ["seed_everything"]


def seed_everything(seed: int, deterministic: bool = False) -> np.random.Generator:
    """Seed ``random``, NumPy and torch; return a fresh NumPy ``Generator`` for local use.

    Args:
        seed: the seed.
        deterministic: also ask torch for deterministic algorithms (warn-only).
    """
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return np.random.default_rng(seed)
