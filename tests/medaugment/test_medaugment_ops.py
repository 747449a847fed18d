"""Operations: level -> parameter map, exact small cases, masks, dtypes, 3D, albumentations parity."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from quintet.medaugment import ops

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

ALL_OPS = ops.PIXEL_OPS + ops.SPATIAL_OPS


def _img(shape=(24, 32, 3), dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.random(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, 0), info.max, size=shape, endpoint=True).astype(dtype)


# ------------------------------------------------------------------ level map
@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_published_level_map_hand_values(level):
    l = level
    assert ops.probability(l) == pytest.approx(0.2 * l)
    assert ops.param_ranges("brightness", l)["factor"] == pytest.approx((1 - 0.04 * l, 1 + 0.04 * l))
    assert ops.param_ranges("rotate", l)["angle"] == pytest.approx((-4 * l, 4 * l))
    assert ops.param_ranges("shear_x", l)["angle"] == pytest.approx((0, 2 * l))  # one-sided
    assert ops.param_ranges("translate_y", l)["fraction"] == pytest.approx((0, 0.02 * l))  # one-sided
    assert ops.param_ranges("sharpen", l)["alpha"] == pytest.approx((0.04 * l, 0.1 * l))
    assert ops.param_ranges("gaussian_noise", l)["variance"] == pytest.approx((2 * l, 10 * l))
    bits = {1: 7, 2: 6, 3: 5, 4: 4, 5: 4}[l]  # floor(8 - 0.8 l): l = 4 and 5 both keep 4 bits
    assert ops.param_ranges("posterize", l)["bits"] == (bits, bits)
    kmax = {1: 5, 2: 5, 3: 7, 4: 7, 5: 7}[l]  # odd(ceil(3 + 0.8 l))
    assert ops.param_ranges("gaussian_blur", l)["ksize"] == (3, kmax)


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("name", ALL_OPS)
def test_sampled_parameters_cover_their_range(name, level):
    rng = np.random.default_rng(1000 * level + len(name))
    draws = [ops.sample_params(name, level, rng) for _ in range(400)]
    ranges = ops.param_ranges(name, level)
    if name == "gaussian_noise":
        sig = np.array([d["sigma"] for d in draws])
        lo, hi = ranges["variance"]
        assert sig.min() >= math.sqrt(lo) and sig.max() <= math.sqrt(hi)
        var = sig**2  # variance is uniform: mean (lo + hi) / 2, and it spans the range
        assert var.mean() == pytest.approx((lo + hi) / 2, rel=0.06)
        assert var.min() < lo + 0.05 * (hi - lo) and var.max() > hi - 0.05 * (hi - lo)
        assert len({d["seed"] for d in draws}) > 390
        return
    if name == "gaussian_blur":
        ks = np.array([d["ksize"] for d in draws])
        allowed = set(range(3, ranges["ksize"][1] + 1, 2))
        assert set(ks.tolist()) == allowed  # every odd size appears, nothing else
        assert all(d["sigma"] == pytest.approx(0.3 * ((d["ksize"] - 1) / 2 - 1) + 0.8) for d in draws)
        return
    for key, (lo, hi) in ranges.items():
        vals = np.array([d[key] for d in draws], dtype=float)
        assert vals.min() >= lo - 1e-12 and vals.max() <= hi + 1e-12
        if hi > lo:  # uniform: spans the range and has the right mean
            assert vals.min() < lo + 0.05 * (hi - lo) and vals.max() > hi - 0.05 * (hi - lo)
            assert vals.mean() == pytest.approx((lo + hi) / 2, abs=0.06 * (hi - lo))
    if not ranges:
        assert draws[0] == {}


def test_symmetric_variant_is_two_sided():
    rng = np.random.default_rng(0)
    v = np.array([ops.sample_params("translate_x", 5, rng, symmetric=True)["fraction"] for _ in range(300)])
    assert v.min() < -0.08 and v.max() > 0.08


@pytest.mark.parametrize("bad", [0, 6, 2.5, "3", True, None])
def test_bad_level_raises(bad):
    with pytest.raises(ValueError, match="level"):
        ops.check_level(bad)


# ------------------------------------------------------------------ exact small cases
def test_flips_and_right_angle_rotation_are_exact():
    a = np.arange(30, dtype=np.uint8).reshape(5, 6)
    np.testing.assert_array_equal(ops.apply_image("hflip", a, {}), a[:, ::-1])
    np.testing.assert_array_equal(ops.apply_image("vflip", a, {}), a[::-1])
    sq = np.arange(49, dtype=np.uint8).reshape(7, 7)
    np.testing.assert_array_equal(ops.apply_image("rotate", sq, {"angle": 90.0}), np.rot90(sq))  # CCW
    np.testing.assert_array_equal(ops.apply_image("rotate", sq, {"angle": -90.0}), np.rot90(sq, -1))
    np.testing.assert_array_equal(ops.apply_mask("rotate", sq, {"angle": 180.0}), sq[::-1, ::-1])
    np.testing.assert_array_equal(ops.apply_mask("hflip", a, {}), a[:, ::-1])


def test_translate_shear_scale_by_hand():
    a = np.arange(1, 26, dtype=np.uint8).reshape(5, 5)
    t = ops.apply_image("translate_x", a, {"fraction": 0.4})  # 2 pixels right, zero fill
    np.testing.assert_array_equal(t[:, 2:], a[:, :3])
    assert (t[:, :2] == 0).all()
    t = ops.apply_mask("translate_y", a, {"fraction": 0.2})  # 1 pixel down
    np.testing.assert_array_equal(t[1:], a[:4])
    assert (t[0] == 0).all()
    s = ops.apply_mask("shear_x", a, {"angle": 45.0})  # x -> x + (y - 2): row y shifts by y - 2
    for y in range(5):
        np.testing.assert_array_equal(s[y], np.roll(a[y], y - 2) * _shift_keep(5, y - 2))
    z = ops.apply_mask("scale", a, {"factor": 2.0})  # centre pixel fixed, image enlarged
    assert z[2, 2] == a[2, 2]
    assert ops.apply_mask("scale", a, {"factor": 0.5})[0, 0] == 0  # shrunk: corners filled


def _shift_keep(n, shift):
    keep = np.ones(n, dtype=np.uint8)
    if shift > 0:
        keep[:shift] = 0
    elif shift < 0:
        keep[shift:] = 0
    return keep


def test_pixel_ops_by_hand_on_uint8():
    a = np.array([[0, 10, 100], [200, 250, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(
        ops.apply_image("brightness", a, {"factor": 1.2}), [[0, 12, 120], [240, 255, 255]]
    )
    mean = a.mean()
    want = np.clip(np.rint(a * 0.8 + mean * 0.2), 0, 255)
    np.testing.assert_array_equal(ops.apply_image("contrast", a, {"factor": 0.8}), want)
    np.testing.assert_array_equal(ops.apply_image("posterize", a, {"bits": 4}), a & 0xF0)
    np.testing.assert_array_equal(ops.apply_image("posterize", a, {"bits": 7}), a & 0xFE)
    flat = np.full((6, 6), 77, np.uint8)  # sharpening and blurring a constant image change nothing
    np.testing.assert_array_equal(ops.apply_image("sharpen", flat, {"alpha": 0.5}), flat)
    np.testing.assert_array_equal(ops.apply_image("gaussian_blur", flat, {"ksize": 7, "sigma": 1.4}), flat)
    dot = np.zeros((5, 5), np.uint8)
    dot[2, 2] = 100
    sh = ops.apply_image(
        "sharpen", dot, {"alpha": 0.1}
    )  # I + 0.1 * Laplacian: centre 100 + 80, ring 0 - 10 -> 0
    assert sh[2, 2] == 180 and sh[1, 1] == 0


def test_noise_std_and_per_channel_independence():
    a = np.full((200, 200, 3), 128, np.uint8)
    out = ops.apply_image("gaussian_noise", a, {"sigma": 6.0, "seed": 3}).astype(float) - 128
    assert out.std() == pytest.approx(6.0, rel=0.03)
    assert abs(np.corrcoef(out[..., 0].ravel(), out[..., 1].ravel())[0, 1]) < 0.02
    f = np.full((200, 200), 0.5, np.float32)  # sigma is on the 0-255 scale: 6/255 on [0, 1] data
    assert (ops.apply_image("gaussian_noise", f, {"sigma": 6.0, "seed": 3}) - 0.5).std() == pytest.approx(
        6 / 255, rel=0.03
    )


def test_albumentations_parity_where_exact():
    import albumentations as A

    img = _img((20, 28, 3))
    cases = [
        (A.Sharpen(alpha=(0.3, 0.3), lightness=(1.0, 1.0), p=1), "sharpen", {"alpha": 0.3}),
        (A.Posterize(num_bits=(5, 5), p=1), "posterize", {"bits": 5}),
        (
            A.GaussianBlur(blur_limit=(5, 5), sigma_limit=(1.1, 1.1), p=1),
            "gaussian_blur",
            {"ksize": 5, "sigma": 1.1},
        ),
        (A.HorizontalFlip(p=1), "hflip", {}),
        (A.VerticalFlip(p=1), "vflip", {}),
        (A.Rotate(limit=(12, 12), border_mode=0, fill=0, p=1), "rotate", {"angle": 12.0}),
    ]
    for t, name, params in cases:
        np.testing.assert_array_equal(t(image=img)["image"], ops.apply_image(name, img, params), err_msg=name)
    # ColorJitter truncates after multiplying, we round: at most one grey level apart
    t = A.ColorJitter(brightness=(1.15, 1.15), contrast=(1, 1), saturation=(1, 1), hue=(0, 0), p=1)
    diff = t(image=img)["image"].astype(int) - ops.apply_image("brightness", img, {"factor": 1.15})
    assert np.abs(diff).max() <= 1


# ------------------------------------------------------------------ masks, dtypes, 3D
@pytest.mark.parametrize("name", ALL_OPS)
def test_masks_untouched_by_pixel_ops_and_labels_kept_by_spatial_ops(name):
    rng = np.random.default_rng(5)
    mask = rng.choice(np.array([0, 3, 7, 200], np.uint8), size=(33, 41))
    params = ops.sample_params(name, 5, rng)
    out = ops.apply_mask(name, mask, params)
    if ops.OPS[name].space == "pixel":
        assert out is mask
    else:
        assert out.shape == mask.shape and out.dtype == mask.dtype
        assert set(np.unique(out)) <= {0, 3, 7, 200}


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32, np.float64])
@pytest.mark.parametrize("name", ALL_OPS)
def test_every_op_keeps_dtype_shape_and_range(name, dtype):
    vr = (-1024.0, 3071.0) if dtype == np.int16 else None  # int16 (CT) needs its range
    if dtype == np.int16:
        img = np.random.default_rng(0).integers(-1024, 3072, size=(16, 18)).astype(np.int16)
    else:
        img = _img((16, 18), dtype)
    params = ops.sample_params(name, 5, np.random.default_rng(2))
    out = ops.apply_image(name, img, params, value_range=vr)
    assert out.dtype == img.dtype and out.shape == img.shape
    lo, hi = ops.resolve_value_range(img, vr)
    assert out.min() >= lo and out.max() <= hi


def test_ct_ranges_must_be_explicit_and_fill_with_air():
    ct = np.full((9, 9), 40, np.int16)
    with pytest.raises(ValueError, match="value_range"):
        ops.apply_image("brightness", ct, {"factor": 1.1})
    with pytest.raises(ValueError, match="outside the default"):
        ops.apply_image("rotate", ct.astype(np.float32), {"angle": 5.0})
    out = ops.apply_image("translate_x", ct, {"fraction": 0.3}, value_range=(-1024, 3071))
    assert (out[:, :2] == -1024).all() and (out[:, 3:] == 40).all()


def test_sixteen_bit_magnitudes_scale_with_the_range():
    a16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1024).astype(np.uint16)
    p = ops.apply_image("posterize", a16, {"bits": 4})  # 16 levels over 0..65535: steps of 4096
    np.testing.assert_array_equal(p, (a16 // 4096) * 4096)
    b16 = ops.apply_image("brightness", a16, {"factor": 1.1})  # clipped at 65535, not at 255
    np.testing.assert_array_equal(b16, np.clip(np.rint(a16.astype(float) * 1.1), 0, 65535))
    assert b16.max() == 65535 and (b16 > 255).mean() > 0.9
    ct = np.linspace(-1000, 3000, 64, dtype=np.float32).reshape(8, 8)  # CT with an explicit range
    out = ops.apply_image("gaussian_noise", ct, {"sigma": 5.0, "seed": 0}, value_range=(-1024, 3071))
    assert out.min() >= -1024 and out.max() <= 3071 and np.abs(out - ct).max() > 10


@pytest.mark.parametrize("name", ALL_OPS)
def test_volume_spatial_ops_consistent_across_slices(name):
    vol = _img((4, 15, 17), np.uint16, seed=9)
    params = ops.sample_params(name, 5, np.random.default_rng(4))
    out = ops.apply_image(name, vol, params, volume=True)
    assert out.shape == vol.shape
    if ops.OPS[name].space == "spatial" or name in ("sharpen", "gaussian_blur", "posterize", "brightness"):
        for d in range(vol.shape[0]):  # same as the 2D op on each slice
            np.testing.assert_array_equal(
                out[d], ops.apply_image(name, vol[d], params), err_msg=f"{name} slice {d}"
            )
    mask = (vol > 30000).astype(np.uint8)
    mo = ops.apply_mask(name, mask, params, volume=True)
    for d in range(vol.shape[0]):
        np.testing.assert_array_equal(mo[d], ops.apply_mask(name, mask[d], params))


def test_volume_with_channels_and_rgb_image():
    vol = _img((3, 10, 12, 2), np.uint8)
    out = ops.apply_image("rotate", vol, {"angle": 7.0}, volume=True)
    np.testing.assert_array_equal(out[1, :, :, 1], ops.apply_image("rotate", vol[1, :, :, 1], {"angle": 7.0}))


@pytest.mark.parametrize(
    ("arr", "match"),
    [
        (np.zeros((4, 4), np.int32), "unsupported dtype"),
        (np.zeros((4,), np.uint8), "image"),
        (np.zeros((0, 4), np.uint8), "empty"),
        (np.full((4, 4), np.nan, np.float32), "NaN"),
        ([[1, 2]], "numpy array"),
    ],
)
def test_bad_images_raise_clear_errors(arr, match):
    with pytest.raises(ValueError, match=match):
        ops.check_image(arr)


def test_mask_size_mismatch_and_bad_dtype():
    img = np.zeros((8, 8), np.uint8)
    with pytest.raises(ValueError, match="does not match"):
        ops.check_mask(np.zeros((8, 9), np.uint8), img)
    with pytest.raises(ValueError, match="integer labels"):
        ops.check_mask(np.zeros((8, 8), np.float32), img)
    with pytest.raises(ValueError, match="unknown"):
        ops.apply_image("equalize", img, {})
