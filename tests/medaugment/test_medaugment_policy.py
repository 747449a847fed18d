"""Branch sampling: combination frequencies, op counts, trigger rates, replay, folder datasets."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from quintet.medaugment import COMBINATIONS, PIXEL_OPS, SPATIAL_OPS, Branch, MedAugment
from quintet.medaugment.albu import MedAugmentTransform


def _pair(seed=0, shape=(40, 48)):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(*shape, 3)).astype(np.uint8)
    mask = rng.choice(np.array([0, 1, 2], np.uint8), size=shape)
    return img, mask


def test_four_branches_use_each_combination_once():
    aug = MedAugment(level=5, num_branches=4)
    rng = np.random.default_rng(0)
    firsts = Counter()
    for _ in range(400):
        branches = aug.sample_branches(rng)
        assert sorted(b.combination for b in branches) == sorted(COMBINATIONS)
        firsts[branches[0].combination] += 1
        # at level 5 every op fires: exactly 2 pixel and 8 spatial ops over the 4 branches
        names = [c.name for b in branches for c in b.applied]
        assert sum(n in PIXEL_OPS for n in names) == 2 and sum(n in SPATIAL_OPS for n in names) == 8
        for b in branches:
            a, s = b.combination
            pix = [c.name for c in b.calls if c.name in PIXEL_OPS]
            spa = [c.name for c in b.calls if c.name in SPATIAL_OPS]
            assert len(pix) == a and len(spa) == s
            assert len(set(spa)) == s  # without replacement
    for comb in COMBINATIONS:  # random order: each combination first about 1/4 of the time
        assert 70 <= firsts[comb] <= 130


def test_other_branch_counts_draw_with_replacement_uniformly():
    aug = MedAugment(level=5, num_branches=3)
    rng = np.random.default_rng(1)
    counts = Counter()
    repeats = 0
    for _ in range(1000):
        combs = [b.combination for b in aug.sample_branches(rng)]
        counts.update(combs)
        repeats += len(set(combs)) < 3
    for comb in COMBINATIONS:
        assert counts[comb] / 3000 == pytest.approx(0.25, abs=0.03)
    assert repeats / 1000 == pytest.approx(1 - (4 * 3 * 2) / 64, abs=0.05)  # P(some repeat) = 1 - 24/64


def test_ops_uniform_within_space_and_order_shuffled():
    aug = MedAugment(level=5, num_branches=4)
    rng = np.random.default_rng(2)
    spatial = Counter()
    pixel_first = 0
    n12 = 0
    for _ in range(600):
        for b in aug.sample_branches(rng):
            spatial.update(c.name for c in b.calls if c.name in SPATIAL_OPS)
            if b.combination == (1, 2):
                n12 += 1
                pixel_first += b.calls[0].name in PIXEL_OPS
    total = sum(spatial.values())
    for name in SPATIAL_OPS:
        assert spatial[name] / total == pytest.approx(1 / 8, abs=0.02)
    assert pixel_first / n12 == pytest.approx(1 / 3, abs=0.06)  # the pixel op lands first in 1 of 3 positions


@pytest.mark.parametrize("level", [1, 3])
def test_trigger_probability_is_point_two_times_level(level):
    aug = MedAugment(level=level)
    rng = np.random.default_rng(level)
    calls = [c for _ in range(500) for b in aug.sample_branches(rng) for c in b.calls]
    rate = np.mean([c.applied for c in calls])
    assert rate == pytest.approx(0.2 * level, abs=0.03)
    assert all(c.params == {} for c in calls if not c.applied)


def test_expand_returns_n_plus_original_and_is_seeded():
    img, mask = _pair()
    aug = MedAugment()
    outs = aug.expand(img, mask, rng=8)
    assert len(outs) == 5 and outs[-1][2].is_identity
    np.testing.assert_array_equal(outs[-1][0], img)
    np.testing.assert_array_equal(outs[-1][1], mask)
    again = aug.expand(img, mask, rng=8)
    for (a, m, b), (a2, m2, b2) in zip(outs, again, strict=True):
        np.testing.assert_array_equal(a, a2)
        np.testing.assert_array_equal(m, m2)
        assert b == b2
    assert len(MedAugment(keep_original=False).expand(img, rng=0)) == 4


def test_replay_from_json_is_bit_identical():
    img, mask = _pair(3)
    aug = MedAugment(level=4, num_branches=6)
    rng = np.random.default_rng(11)
    for branch in aug.sample_branches(rng):
        record = json.loads(json.dumps(branch.to_dict()))
        rebuilt = Branch.from_dict(record)
        assert rebuilt == branch
        i1, m1 = aug.apply(branch, img, mask)
        i2, m2 = aug.apply(rebuilt, img, mask)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(m1, m2)


def test_pixel_only_branch_leaves_mask_and_spatial_branch_moves_it():
    img, mask = _pair(4)
    aug = MedAugment()
    noise = {"name": "gaussian_noise", "applied": True, "params": {"sigma": 5.0, "seed": 1}}
    pix = Branch.from_dict({"combination": [1, 0], "calls": [noise]})
    i, m = aug.apply(pix, img, mask)
    np.testing.assert_array_equal(m, mask)
    assert not np.array_equal(i, img)
    flip = Branch.from_dict(
        {"combination": [0, 1], "calls": [{"name": "hflip", "applied": True, "params": {}}]}
    )
    i, m = aug.apply(flip, img, mask)
    np.testing.assert_array_equal(m, mask[:, ::-1])
    np.testing.assert_array_equal(i, img[:, ::-1])


def test_policy_validation_and_bad_records():
    with pytest.raises(ValueError, match="num_branches"):
        MedAugment(num_branches=0)
    with pytest.raises(ValueError, match="level"):
        MedAugment(level=7)
    with pytest.raises(ValueError, match="unknown operation"):
        Branch.from_dict({"combination": [0, 1], "calls": [{"name": "solarize", "applied": True}]})
    img, _ = _pair()
    with pytest.raises(ValueError, match="does not match"):
        MedAugment().apply(Branch(None), img, np.zeros((3, 3), np.uint8))


def test_image_folder_dataset_with_online_transform_in_a_dataloader(tmp_path):
    from quintet.medaugment.data import ImageFolderDataset, SegmentationFolderDataset, write_image

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        for k in range(3):
            write_image(tmp_path / "cls" / c / f"{k}.png", rng.integers(0, 256, (30, 34, 3)).astype(np.uint8))
    t = MedAugmentTransform(seed=1)
    ds = ImageFolderDataset(tmp_path / "cls", transform=t, size=24, mode="gray")
    assert ds.classes == ["a", "b"] and len(ds) == 6
    xb, yb = next(iter(torch.utils.data.DataLoader(ds, batch_size=6, num_workers=0)))
    assert tuple(xb.shape) == (6, 1, 24, 24) and yb.tolist() == [0, 0, 0, 1, 1, 1]
    for k in range(2):
        write_image(tmp_path / "seg/img" / f"{k}.png", rng.integers(0, 256, (20, 20)).astype(np.uint8))
        write_image(
            tmp_path / "seg/msk" / f"{k}_mask.png",
            np.where(rng.random((20, 20)) > 0.5, 255, 0).astype(np.uint8),
        )
    sds = SegmentationFolderDataset(
        tmp_path / "seg/img", tmp_path / "seg/msk", transform=t, mask_suffix="_mask"
    )
    x, y = sds[1]
    assert tuple(x.shape) == (1, 20, 20) and set(torch.unique(y).tolist()) <= {0, 1}
    with pytest.raises(FileNotFoundError, match="no mask for"):
        SegmentationFolderDataset(tmp_path / "seg/img", tmp_path / "seg/msk")
