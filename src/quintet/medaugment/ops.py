"""The 14 MedAugment operations as pure functions, and the level -> parameter map.

Sampling is kept apart from applying: :func:`sample_params` draws the parameters of one operation at
a level ``l`` in 1..5 from a NumPy ``Generator``; the ``apply_*`` functions are deterministic given
those parameters. Everything an operation needs is in its parameter dict (Gaussian noise carries
the seed of its noise field), so a recorded call replays bit for bit.

Layout and dtypes:
    Images are channel-last NumPy arrays: 2D ``(H, W)`` or ``(H, W, C)``; 3D volumes ``(D, H, W)``
    or ``(D, H, W, C)`` when ``volume=True``. Supported dtypes: ``uint8``, ``uint16``, ``int16``,
    ``float32`` and ``float64``. The intensity range ``(lo, hi)`` defaults to the dtype's full range
    for unsigned integers and to ``(0, 1)`` for floats; int16 data and floats outside [0, 1] (e.g. CT
    in Hounsfield units) must pass ``value_range``. Spatial ops fill uncovered pixels with ``lo``.
    Magnitudes defined on the 0-255 scale in the paper (noise sigma) are rescaled by
    ``(hi - lo) / 255``; brightness scales the distance from ``lo``; posterize keeps ``2**bits``
    grey levels spread over the range (bit-exact with uint8 bit masking).

3D meaning:
    Spatial operations act in-plane (the ``(H, W)`` axes) with the same parameters for every slice,
    i.e. rotation is about the depth axis, flips mirror H or W, shear / scale / translate are in-plane.
    Brightness, contrast (volume mean), posterize and noise act voxel-wise; sharpen and blur are 2D
    filters applied slice by slice.

Masks:
    Pixel operations never touch masks. Spatial operations move masks with nearest-neighbour
    interpolation and a constant fill (``mask_fill``, default 0), so label values are preserved.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np

__all__ = [
    "OPS",
    "PIXEL_OPS",
    "SPATIAL_OPS",
    "SUPPORTED_DTYPES",
    "OpSpec",
    "apply_image",
    "apply_mask",
    "auto_value_range",
    "blur_sigma",
    "branch_matrix",
    "check_image",
    "check_level",
    "check_mask",
    "param_ranges",
    "probability",
    "resolve_value_range",
    "sample_params",
    "spatial_matrix",
]

Space = Literal["pixel", "spatial"]
Params = dict[str, Any]

SUPPORTED_DTYPES: tuple[np.dtype, ...] = tuple(
    np.dtype(t) for t in (np.uint8, np.uint16, np.int16, np.float32, np.float64)
)

PIXEL_OPS: tuple[str, ...] = (
    "brightness",
    "contrast",
    "posterize",
    "sharpen",
    "gaussian_blur",
    "gaussian_noise",
)
SPATIAL_OPS: tuple[str, ...] = (
    "rotate",
    "hflip",
    "vflip",
    "scale",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)

# Sharpening kernel = identity + alpha * Laplacian (albumentations' ``Sharpen`` kernel with lightness 1).
_LAPLACIAN = np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], dtype=np.float32)
_IDENTITY3 = np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=np.float32)
_GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float64)  # RGB -> luma (OpenCV / ITU-R BT.601)


# --------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------


def check_level(level: int) -> int:
    """Return ``level`` if it is an integer in 1..5, else raise ``ValueError``."""
    if isinstance(level, bool) or not isinstance(level, int | np.integer) or not 1 <= int(level) <= 5:
        raise ValueError(f"level must be an integer in 1..5, got {level!r}")
    return int(level)


def probability(level: int) -> float:
    """Trigger probability of every operation at ``level``: ``p = 0.2 * level``."""
    return 0.2 * check_level(level)


def check_image(image: np.ndarray, volume: bool = False, name: str = "image") -> np.ndarray:
    """Validate an image array (type, dtype, rank, finite values) and return it.

    Args:
        image: channel-last array, ``(H, W[, C])`` or, with ``volume``, ``(D, H, W[, C])``.
        volume: whether the array is a 3D volume.
        name: how the array is named in error messages.
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(image).__name__}")
    if image.dtype not in SUPPORTED_DTYPES:
        valid = ", ".join(str(d) for d in SUPPORTED_DTYPES)
        raise ValueError(f"{name} has unsupported dtype {image.dtype}; supported: {valid}")
    ranks = (3, 4) if volume else (2, 3)
    if image.ndim not in ranks:
        kind = "(D, H, W[, C]) volume" if volume else "(H, W[, C]) image"
        raise ValueError(f"{name} must be a {kind}, got shape {image.shape}")
    if min(image.shape[: ranks[0]]) < 1:
        raise ValueError(f"{name} is empty (shape {image.shape})")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return image


def check_mask(mask: np.ndarray, image: np.ndarray, volume: bool = False) -> np.ndarray:
    """Validate a mask against its image: same spatial size, integer or bool labels."""
    if not isinstance(mask, np.ndarray):
        raise ValueError(f"mask must be a numpy array, got {type(mask).__name__}")
    nsp = 3 if volume else 2
    if mask.ndim not in (nsp, nsp + 1):
        raise ValueError(
            f"mask must have {nsp} spatial axes (plus optional channels), got shape {mask.shape}"
        )
    if mask.shape[:nsp] != image.shape[:nsp]:
        raise ValueError(f"mask size {mask.shape[:nsp]} does not match image size {image.shape[:nsp]}")
    if mask.dtype.kind not in "biu":
        raise ValueError(f"mask must hold integer labels (uint8/uint16/int/bool), got dtype {mask.dtype}")
    return mask


ValueRange = tuple[float, float] | Literal["auto"] | None


def auto_value_range(image: np.ndarray) -> tuple[float, float]:
    """The intensity window of the ``"auto"`` rule (what MONAI-loaded data and volume files use).

    * ``uint8`` / ``uint16``: the dtype's full range (0-255, 0-65535), as the default;
    * floats whose values lie in [0, 1]: ``(0, 1)``; floats in [0, 255] (a PNG loaded by MONAI's
      ``LoadImage``): ``(0, 255)``;
    * anything else (int16 / int32 data, floats outside [0, 255] such as CT in Hounsfield units):
      the image's own ``[min, max]``, so nothing is ever clipped and integer data cannot wrap around.
    """
    if image.dtype in (np.dtype(np.uint8), np.dtype(np.uint16)):
        info = np.iinfo(image.dtype)
        return float(info.min), float(info.max)
    lo, hi = (float(image.min()), float(image.max())) if image.size else (0.0, 1.0)
    if image.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        return 0.0, 1.0
    if image.dtype.kind == "f" and lo >= 0.0 and hi <= 255.0:
        return 0.0, 255.0
    return lo, (hi if hi > lo else lo + 1.0)


def resolve_value_range(image: np.ndarray, value_range: ValueRange = None) -> tuple[float, float]:
    """The intensity range ``(lo, hi)`` used for clipping and magnitudes.

    ``None``: unsigned integers default to their full range and floats to ``(0, 1)``; int16 data and
    floats outside [0, 1] must give ``value_range`` (clipping CT to a default range would destroy it).
    ``"auto"``: see :func:`auto_value_range`. A pair ``(lo, hi)`` is used as given.
    """
    if isinstance(value_range, str):
        if value_range != "auto":
            raise ValueError(f"value_range must be None, 'auto' or (lo, hi), got {value_range!r}")
        return auto_value_range(image)
    if value_range is not None:
        lo, hi = float(value_range[0]), float(value_range[1])
        if not hi > lo:
            raise ValueError(f"value_range must have hi > lo, got {value_range!r}")
        return lo, hi
    if image.dtype == np.int16:
        raise ValueError(
            "int16 images (e.g. CT in Hounsfield units) need value_range='auto' or an explicit window, e.g. (-1024, 3071)"
        )
    if image.dtype.kind in "iu":
        info = np.iinfo(image.dtype)
        return float(info.min), float(info.max)
    if image.size and (float(image.min()) < 0.0 or float(image.max()) > 1.0):
        raise ValueError(
            f"float image values span [{float(image.min()):.4g}, {float(image.max()):.4g}], outside the default "
            "range [0, 1]; pass value_range=(lo, hi) or value_range='auto'"
        )
    return 0.0, 1.0


def _to_dtype(x: np.ndarray, dtype: np.dtype, lo: float, hi: float, inplace: bool = False) -> np.ndarray:
    """Clip to ``[lo, hi]`` and cast back (integers are rounded half to even); ``inplace`` reuses ``x``."""
    if np.dtype(dtype).kind in "iu":
        x = np.rint(x, out=x) if inplace else np.rint(x)
        inplace = True
    x = np.clip(x, lo, hi, out=x) if inplace else np.clip(x, lo, hi)
    return x.astype(dtype, copy=False)


# --------------------------------------------------------------------------------------------------
# channel / slice helpers for OpenCV (which wants (H, W[, C<=4]) arrays)
# --------------------------------------------------------------------------------------------------


def _planes(image: np.ndarray, volume: bool) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """View ``image`` as ``(H, W, K)`` (slices and channels folded into K) plus the inverse."""
    shape = image.shape
    if volume:
        d = shape[0]
        moved = np.moveaxis(image.reshape(d, shape[1], shape[2], -1), 0, 2)  # (H, W, D, C)
        h, w = moved.shape[:2]
        folded = np.ascontiguousarray(moved.reshape(h, w, -1))

        def unfold(out: np.ndarray) -> np.ndarray:
            back = out.reshape(h, w, d, -1)
            return np.ascontiguousarray(np.moveaxis(back, 2, 0)).reshape(shape)

        return folded, unfold
    if image.ndim == 2:
        return image[:, :, None], lambda out: out.reshape(shape)
    return image, lambda out: out.reshape(shape)


def _cv_apply(fn: Callable[[np.ndarray], np.ndarray], planes: np.ndarray) -> np.ndarray:
    """Apply an OpenCV function on ``(H, W, K)`` in chunks of at most 4 channels."""
    k = planes.shape[2]
    if k == 1:
        return fn(planes[:, :, 0])[:, :, None]
    if k <= 4:
        out = fn(planes)
        return out if out.ndim == 3 else out[:, :, None]
    chunks = []
    for s in range(0, k, 4):
        part = np.ascontiguousarray(planes[:, :, s : s + 4])
        res = fn(part) if part.shape[2] > 1 else fn(part[:, :, 0])
        chunks.append(res if res.ndim == 3 else res[:, :, None])
    return np.concatenate(chunks, axis=2)


def _spatial_hw(image: np.ndarray, volume: bool) -> tuple[int, int]:
    return (image.shape[1], image.shape[2]) if volume else (image.shape[0], image.shape[1])


# --------------------------------------------------------------------------------------------------
# pixel operations (image only)
# --------------------------------------------------------------------------------------------------

_U8 = np.dtype(np.uint8)
_LEVELS = np.arange(256, dtype=np.float64)


def _lut(image: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Apply a 256-entry table to a uint8 image (same result as computing every pixel)."""
    table = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] <= 4 and image.flags.c_contiguous):
        return cv2.LUT(image, table)
    return table[image]


def brightness(image: np.ndarray, factor: float, lo: float, hi: float) -> np.ndarray:
    """Scale the distance from ``lo`` by ``factor`` and clip (ColorJitter brightness for uint8)."""
    if image.dtype == _U8 and (lo, hi) == (0.0, 255.0):
        return _lut(image, (_LEVELS.astype(np.float32) * np.float32(factor)).astype(np.float64))
    x = image.astype(np.float32)
    return _to_dtype(lo + (x - lo) * factor, image.dtype, lo, hi)


def _gray_mean(image: np.ndarray, volume: bool) -> float:
    has_channels = image.ndim == (4 if volume else 3)
    if has_channels and image.shape[-1] == 3:
        return float((image.reshape(-1, 3).astype(np.float64) @ _GRAY_WEIGHTS).mean())
    return float(image.mean(dtype=np.float64))


def contrast(image: np.ndarray, factor: float, lo: float, hi: float, volume: bool = False) -> np.ndarray:
    """Blend with the mean grey value: ``x * f + mean * (1 - f)``, clipped (ColorJitter contrast)."""
    mean = _gray_mean(image, volume)
    if image.dtype == _U8 and (lo, hi) == (0.0, 255.0):
        f32 = _LEVELS.astype(np.float32) * np.float32(factor) + np.float32(mean * (1.0 - factor))
        return _lut(image, f32.astype(np.float64))
    x = image.astype(np.float32)
    return _to_dtype(x * factor + mean * (1.0 - factor), image.dtype, lo, hi)


def posterize(image: np.ndarray, bits: int, lo: float, hi: float) -> np.ndarray:
    """Keep ``2**bits`` grey levels over ``[lo, hi]``; identical to ``x & ~(2**(8-bits)-1)`` on uint8."""
    if not 1 <= bits <= 8:
        raise ValueError(f"posterize bits must be in 1..8, got {bits}")
    levels = 2**bits
    if image.dtype == _U8 and (lo, hi) == (0.0, 255.0):
        return np.bitwise_and(image, np.uint8(0xFF & ~(2 ** (8 - bits) - 1)))
    if image.dtype.kind in "iu":
        step = (hi - lo + 1.0) / levels
        idx = np.floor((image.astype(np.float64) - lo) / step)
        return _to_dtype(lo + idx * step, image.dtype, lo, hi)
    scaled = (image.astype(np.float64) - lo) / (hi - lo) * levels
    idx = np.clip(np.floor(scaled), 0, levels - 1)
    return _to_dtype(lo + idx * (hi - lo) / levels, image.dtype, lo, hi)


def sharpen(image: np.ndarray, alpha: float, lo: float, hi: float, volume: bool = False) -> np.ndarray:
    """Convolve with ``I + alpha * L`` (L: 3x3 Laplacian), reflect-101 border, then clip."""
    kernel = (_IDENTITY3 + alpha * _LAPLACIAN).astype(np.float32)
    planes, unfold = _planes(image.astype(np.float32), volume)
    out = _cv_apply(lambda p: cv2.filter2D(p, cv2.CV_32F, kernel, borderType=cv2.BORDER_REFLECT_101), planes)
    return _to_dtype(unfold(out), image.dtype, lo, hi)


def blur_sigma(ksize: int) -> float:
    """OpenCV's default Gaussian sigma for an odd kernel size: ``0.3 * ((k - 1) / 2 - 1) + 0.8``."""
    return 0.3 * ((ksize - 1) * 0.5 - 1.0) + 0.8


def gaussian_blur(
    image: np.ndarray, ksize: int, sigma: float, lo: float, hi: float, volume: bool = False
) -> np.ndarray:
    """Gaussian blur with an odd square kernel (reflect-101 border), in-plane for volumes."""
    if ksize < 3 or ksize % 2 != 1:
        raise ValueError(f"blur kernel size must be odd and >= 3, got {ksize}")
    planes, unfold = _planes(image.astype(np.float32), volume)
    out = _cv_apply(
        lambda p: cv2.GaussianBlur(
            p, (ksize, ksize), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101
        ),
        planes,
    )
    return _to_dtype(unfold(out), image.dtype, lo, hi)


def gaussian_noise(image: np.ndarray, sigma: float, seed: int, lo: float, hi: float) -> np.ndarray:
    """Add independent N(0, sigma^2) noise per pixel and channel; ``sigma`` is on the 0-255 scale."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    noise *= np.float32(sigma * (hi - lo) / 255.0)
    noise += image
    return _to_dtype(noise, image.dtype, lo, hi, inplace=True)


# --------------------------------------------------------------------------------------------------
# spatial operations (image and mask)
# --------------------------------------------------------------------------------------------------


def _about_centre(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """2x3 matrix applying the 2x2 linear map ``a`` about the pixel centre ``((w-1)/2, (h-1)/2)``."""
    c = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    m = np.zeros((2, 3), dtype=np.float64)
    m[:, :2] = a
    m[:, 2] = c - a @ c
    return m


def spatial_matrix(name: str, params: Params, h: int, w: int) -> np.ndarray:
    """The 2x3 forward affine matrix (output = M @ [x, y, 1]) of a spatial operation.

    Conventions: ``rotate`` angle in degrees, positive = counter-clockwise on screen (OpenCV);
    ``shear_x`` maps ``x -> x + tan(angle) * (y - cy)``, ``shear_y`` maps ``y -> y + tan(angle) * (x - cx)``;
    ``translate_x`` / ``translate_y`` shift by a fraction of the width / height (positive = right / down);
    ``scale`` is isotropic about the centre; flips mirror about the centre.
    """
    if name == "rotate":
        t = math.radians(params["angle"])
        a = np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])
    elif name == "scale":
        a = np.eye(2) * params["factor"]
    elif name == "shear_x":
        a = np.array([[1.0, math.tan(math.radians(params["angle"]))], [0.0, 1.0]])
    elif name == "shear_y":
        a = np.array([[1.0, 0.0], [math.tan(math.radians(params["angle"])), 1.0]])
    elif name == "hflip":
        a = np.diag([-1.0, 1.0])
    elif name == "vflip":
        a = np.diag([1.0, -1.0])
    elif name == "translate_x":
        return np.array([[1.0, 0.0, params["fraction"] * w], [0.0, 1.0, 0.0]])
    elif name == "translate_y":
        return np.array([[1.0, 0.0, 0.0], [0.0, 1.0, params["fraction"] * h]])
    else:
        raise ValueError(f"unknown spatial operation {name!r}; valid: {', '.join(SPATIAL_OPS)}")
    return _about_centre(a, h, w)


def _flip(array: np.ndarray, axis_hw: int, volume: bool) -> np.ndarray:
    if not volume and array.ndim == 2 and array.dtype in (_U8, np.dtype(np.uint16), np.dtype(np.float32)):
        return cv2.flip(array, axis_hw)  # OpenCV flipCode: 0 = up-down, 1 = left-right
    return np.ascontiguousarray(np.flip(array, axis=axis_hw + (1 if volume else 0)))


def warp(
    array: np.ndarray, matrix: np.ndarray, nearest: bool, fill: float, volume: bool = False
) -> np.ndarray:
    """Warp an image/mask (any supported layout) with a 2x3 forward matrix; output keeps the size."""
    h, w = _spatial_hw(array, volume)
    dtype = array.dtype
    work = array
    if dtype == np.bool_:
        work = array.astype(np.uint8)
    elif dtype.kind in "iu" and dtype not in (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.int16)):
        if not nearest:
            raise ValueError(f"bilinear warping is not supported for dtype {dtype}")
        if array.size and (array.min() < -(2**31) or array.max() >= 2**31):
            raise ValueError(f"mask labels must fit in int32, got range [{array.min()}, {array.max()}]")
        work = array.astype(np.int32)
    planes, unfold = _planes(work, volume)
    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    m = np.asarray(matrix, dtype=np.float64)
    out = _cv_apply(
        lambda p: cv2.warpAffine(
            p, m, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=(fill, fill, fill, fill)
        ),
        planes,
    )
    return unfold(out).astype(dtype, copy=False)


# --------------------------------------------------------------------------------------------------
# level -> parameter map and the op registry
# --------------------------------------------------------------------------------------------------


def _odd_at_least(x: float) -> int:
    k = math.ceil(x)
    return k if k % 2 == 1 else k + 1


def param_ranges(name: str, level: int) -> dict[str, tuple[float, float]]:
    """The published range of every sampled parameter of ``name`` at ``level`` (closed intervals).

    Fixed parameters have ``lo == hi``; flips have no parameters.
    """
    l = check_level(level)
    table: dict[str, dict[str, tuple[float, float]]] = {
        "brightness": {"factor": (1 - 0.04 * l, 1 + 0.04 * l)},
        "contrast": {"factor": (1 - 0.04 * l, 1 + 0.04 * l)},
        "posterize": {"bits": (math.floor(8 - 0.8 * l), math.floor(8 - 0.8 * l))},
        "sharpen": {"alpha": (0.04 * l, 0.1 * l)},
        "gaussian_blur": {"ksize": (3, _odd_at_least(3 + 0.8 * l))},
        "gaussian_noise": {"variance": (2.0 * l, 10.0 * l)},
        "rotate": {"angle": (-4.0 * l, 4.0 * l)},
        "hflip": {},
        "vflip": {},
        "scale": {"factor": (1 - 0.04 * l, 1 + 0.04 * l)},
        "shear_x": {"angle": (0.0, 2.0 * l)},
        "shear_y": {"angle": (0.0, 2.0 * l)},
        "translate_x": {"fraction": (0.0, 0.02 * l)},
        "translate_y": {"fraction": (0.0, 0.02 * l)},
    }
    if name not in table:
        raise ValueError(f"unknown operation {name!r}; valid: {', '.join(PIXEL_OPS + SPATIAL_OPS)}")
    return table[name]


def _uniform(rng: np.random.Generator, r: tuple[float, float]) -> float:
    return float(rng.uniform(r[0], r[1]))


def sample_params(name: str, level: int, rng: np.random.Generator, symmetric: bool = False) -> Params:
    """Draw the parameters of operation ``name`` at ``level``.

    Args:
        name: one of :data:`PIXEL_OPS` or :data:`SPATIAL_OPS`.
        level: magnitude level 1..5.
        rng: the generator to draw from.
        symmetric: if True, shear and translation are drawn from ``[-max, max]`` instead of the
            paper's one-sided ``[0, max]`` (an explicit, non-default variant).
    """
    r = param_ranges(name, level)
    if name == "posterize":
        return {"bits": int(r["bits"][0])}
    if name == "gaussian_blur":
        sizes = np.arange(3, int(r["ksize"][1]) + 1, 2)
        k = int(rng.choice(sizes))
        return {"ksize": k, "sigma": blur_sigma(k)}
    if name == "gaussian_noise":
        var = _uniform(rng, r["variance"])
        return {"sigma": math.sqrt(var), "seed": int(rng.integers(0, 2**31 - 1))}
    if name in ("hflip", "vflip"):
        return {}
    (key, rng_range) = next(iter(r.items()))
    if symmetric and name in ("shear_x", "shear_y", "translate_x", "translate_y"):
        rng_range = (-rng_range[1], rng_range[1])
    return {key: _uniform(rng, rng_range)}


@dataclass(frozen=True)
class OpSpec:
    """One operation of the search space.

    Attributes:
        name: operation name.
        space: ``"pixel"`` (image only) or ``"spatial"`` (image and mask).
    """

    name: str
    space: Space


OPS: dict[str, OpSpec] = {n: OpSpec(n, "pixel") for n in PIXEL_OPS} | {
    n: OpSpec(n, "spatial") for n in SPATIAL_OPS
}


def apply_image(
    name: str,
    image: np.ndarray,
    params: Params,
    value_range: ValueRange = None,
    volume: bool = False,
) -> np.ndarray:
    """Apply operation ``name`` with ``params`` to an image (pure; returns a new array)."""
    lo, hi = resolve_value_range(image, value_range)
    if name == "brightness":
        return brightness(image, params["factor"], lo, hi)
    if name == "contrast":
        return contrast(image, params["factor"], lo, hi, volume)
    if name == "posterize":
        return posterize(image, int(params["bits"]), lo, hi)
    if name == "sharpen":
        return sharpen(image, params["alpha"], lo, hi, volume)
    if name == "gaussian_blur":
        return gaussian_blur(image, int(params["ksize"]), float(params["sigma"]), lo, hi, volume)
    if name == "gaussian_noise":
        return gaussian_noise(image, params["sigma"], int(params["seed"]), lo, hi)
    if name == "hflip":
        return _flip(image, 1, volume)
    if name == "vflip":
        return _flip(image, 0, volume)
    h, w = _spatial_hw(image, volume)
    fill = lo  # the darkest value: 0 for uint8 / [0, 1] data (as the paper), air for CT
    return warp(image, spatial_matrix(name, params, h, w), nearest=False, fill=fill, volume=volume)


def apply_mask(
    name: str, mask: np.ndarray, params: Params, volume: bool = False, fill: int = 0
) -> np.ndarray:
    """Apply operation ``name`` to a label mask: spatial ops with nearest interpolation, pixel ops unchanged."""
    if OPS[name].space == "pixel":
        return mask
    if name == "hflip":
        return _flip(mask, 1, volume)
    if name == "vflip":
        return _flip(mask, 0, volume)
    h, w = _spatial_hw(mask, volume)
    return warp(mask, spatial_matrix(name, params, h, w), nearest=True, fill=fill, volume=volume)


def branch_matrix(calls: list[tuple[str, Params]], h: int, w: int) -> np.ndarray:
    """The 3x3 forward matrix (on ``(x, y, 1)`` pixel coordinates) of a chain of ``(name, params)``.

    Pixel operations are skipped (identity); the spatial ones are composed in order, so the result
    maps an input pixel to where the chain moves it.
    """
    total = np.eye(3)
    for name, params in calls:
        if OPS[name].space == "pixel":
            continue
        step = np.eye(3)
        step[:2] = spatial_matrix(name, params, h, w)
        total = step @ total
    return total
