"""Images and masks as users have them: an RGBA image's alpha is never augmented as an intensity, and every
mask encoding keeps its labels through ``medaugment expand`` (palette PNGs keep their palette, colour-coded
masks their colours, 16-bit label maps their labels above 255).

Functions: :func:`quintet.medaugment.data.read_mask` / :func:`~quintet.medaugment.data.read_mask_with_palette` /
:func:`~quintet.medaugment.data.encode_mask` (``medaugment expand``, ``medaugment apply``), the alpha split of
``quintet.medaugment.expand`` (``medaugment expand``), :func:`quintet.medaugment.ops.check_image` /
:func:`~quintet.medaugment.ops.check_mask` (every MedAugment entry point).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from quintet.medaugment.data import read_image, read_mask, write_image
from quintet.medaugment.expand import ExpandConfig, expand_dataset

H, W = 40, 48


def _labels() -> np.ndarray:
    lab = np.zeros((H, W), np.int64)
    lab[5:25, 6:20], lab[22:38, 24:44], lab[2:10, 30:46] = 1, 2, 15
    return lab


def _expand(root: Path, out: Path) -> list[dict[str, str]]:
    cfg = ExpandConfig(input=root, out=out, task="segmentation", layout="folder", num_branches=6, seed=3)
    res = expand_dataset(cfg, False)
    assert res.num_failed == 0
    return list(csv.DictReader((out / "manifest.csv").open()))


def _image(root: Path) -> None:
    rng = np.random.default_rng(0)
    write_image(root / "images" / "a.png", rng.integers(0, 256, size=(H, W)).astype(np.uint8))


def test_rgba_alpha_moves_with_the_geometry_and_is_never_an_intensity(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, size=(H, W, 4)).astype(np.uint8)
    rgba[:, :, 3] = np.where(_labels() > 0, 200, 90)  # two alpha levels: any intensity op would make others
    write_image(tmp_path / "in" / "c" / "a.png", rgba)
    res = expand_dataset(ExpandConfig(input=tmp_path / "in", out=tmp_path / "o", layout="folder", seed=3), False)
    assert res.num_failed == 0
    outs = [read_image(p) for p in sorted((tmp_path / "o" / "c").glob("a_*.png"))]
    assert len(outs) == 5 and all(o.shape == (H, W, 4) for o in outs)
    for o in outs:
        assert set(np.unique(o[:, :, 3])) <= {0, 90, 200}  # 0: outside the image after a spatial op
    assert sum(not np.array_equal(o[:, :, :3], rgba[:, :, :3]) for o in outs) >= 4  # the colours were augmented


def test_palette_mask_keeps_its_indices_and_palette(tmp_path: Path) -> None:
    _image(tmp_path / "in")
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [7] * (768 - 9)  # VOC-like: class 2 has no red at all
    im = Image.fromarray(_labels().astype(np.uint8), mode="P")
    im.putpalette(palette)
    (tmp_path / "in" / "masks").mkdir()
    im.save(tmp_path / "in" / "masks" / "a.png")
    assert np.array_equal(read_mask(tmp_path / "in" / "masks" / "a.png"), _labels())
    rows = _expand(tmp_path / "in", tmp_path / "o")
    for r in rows:
        with Image.open(tmp_path / "o" / r["mask_output"]) as got:
            assert got.mode == "P" and got.getpalette()[:9] == palette[:9]
            idx = np.asarray(got)
        assert set(np.unique(idx)) <= {0, 1, 2, 15} and 2 in idx


def test_colour_coded_mask_keeps_its_colours(tmp_path: Path) -> None:
    _image(tmp_path / "in")
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    lab = _labels()
    write_image(tmp_path / "in" / "masks" / "a.png", colours[np.minimum(lab, 3)])
    assert read_mask(tmp_path / "in" / "masks" / "a.png").shape == (H, W, 3)
    for r in _expand(tmp_path / "in", tmp_path / "o"):
        got = read_image(tmp_path / "o" / r["mask_output"])
        seen = {tuple(c) for c in got.reshape(-1, 3)}
        assert seen <= {tuple(c) for c in colours} and (0, 255, 0) in seen


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_gray_label_maps_keep_every_label(dtype: type, tmp_path: Path) -> None:
    _image(tmp_path / "in")
    lab = _labels() * (1 if dtype is np.uint8 else 300)  # 16-bit: labels 300, 600, 4500
    write_image(tmp_path / "in" / "masks" / "a.png", lab.astype(dtype))
    for r in _expand(tmp_path / "in", tmp_path / "o"):
        got = read_mask(tmp_path / "o" / r["mask_output"])
        assert got.dtype == dtype and set(np.unique(got)) <= set(np.unique(lab))


def test_a_gray_mask_saved_as_rgb_reads_as_labels(tmp_path: Path) -> None:
    lab = _labels().astype(np.uint8)
    write_image(tmp_path / "m.png", np.repeat(lab[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), lab)
