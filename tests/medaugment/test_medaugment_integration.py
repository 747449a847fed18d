"""Integration on ../shared/data/medical (skipped when absent)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from quintet.medaugment.data import SegmentationFolderDataset, read_image, read_mask
from quintet.medaugment.expand import ExpandConfig, expand_dataset


@pytest.mark.integration
def test_expand_isbi_folder_layout(shared_data, tmp_path):
    root = shared_data / "medical" / "isbi2012_em_membrane"
    cfg = ExpandConfig(
        input=root, out=tmp_path / "isbi_aug", task="segmentation", layout="folder", workers=2
    )
    res = expand_dataset(cfg, progress=False)
    assert res.num_sources == 30 and res.num_written == 150
    rows = list(csv.DictReader((tmp_path / "isbi_aug" / "manifest.csv").open()))
    for r in rows[:10]:
        m = read_mask(tmp_path / "isbi_aug" / r["mask_output"])
        assert m.shape == (512, 512) and set(np.unique(m)) <= {0, 255}
    ds = SegmentationFolderDataset(tmp_path / "isbi_aug" / "images", tmp_path / "isbi_aug" / "masks", size=64)
    x, y = ds[0]
    assert tuple(x.shape) == (1, 64, 64) and tuple(y.shape) == (1, 64, 64)


@pytest.mark.integration
def test_read_brain_mri_names_with_spaces(shared_data):
    folder = shared_data / "medical" / "brain_tumor_mri" / "Testing" / "no_tumor"
    files = sorted(folder.iterdir())[:5]
    for f in files:
        img = read_image(f, "gray")
        assert img.ndim == 2 and img.dtype == np.uint8 and min(img.shape) > 100
