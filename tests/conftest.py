"""Shared pytest set-up: offline flags, one torch thread per worker, deterministic seeds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch

torch.set_num_threads(1)

#: real data beside the project (absent in a user's clone: integration tests skip then)
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if "QUINTET_SHARED_DATA" in os.environ:
    SHARED_DATA = Path(os.environ["QUINTET_SHARED_DATA"])


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def shared_data() -> Path:
    """Path to ``../shared/data``; skips the test with a clear reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"integration data not found at {SHARED_DATA} (set QUINTET_SHARED_DATA)")
    return SHARED_DATA
