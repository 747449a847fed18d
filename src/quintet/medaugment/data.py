"""Image I/O with clear errors, folder datasets, and the online MedAugment transforms.

* :func:`read_image` / :func:`read_mask` / :func:`write_image`: PNG, JPEG, TIFF, BMP (8 and 16 bit,
  gray and colour; colour is returned as RGB) and ``.npy`` (any supported array, e.g. 3D volumes).
  Missing files raise ``FileNotFoundError``; unreadable, truncated or unsupported files raise
  ``ValueError`` naming the file. Writes are atomic.
* ``MedAugmentTransform`` (albumentations ``DualTransform``, :mod:`.albu`) and ``MedAugmentd`` (MONAI
  dictionary transform, :mod:`.monai_transforms`) are importable from here too (loaded lazily).
* :class:`ImageFolderDataset` / :class:`SegmentationFolderDataset`: PyTorch datasets over folders.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from quintet.io import atomic_write_bytes
from quintet.medaugment import ops

__all__ = [
    "IMAGE_EXTS",
    "ImageFolderDataset",
    "SegmentationFolderDataset",
    "encode_mask",
    "list_images",
    "read_image",
    "read_mask",
    "read_mask_with_palette",
    "to_tensor",
    "write_image",
]

IMAGE_EXTS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".npy")


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder`` (sorted; hidden files skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTS
    )


def _check_complete(path: Path, data: bytes) -> None:
    ext = path.suffix.lower()
    if ext in (".jpg", ".jpeg"):
        if not data.startswith(b"\xff\xd8"):
            raise ValueError(f"{path}: not a JPEG file (bad header)")
        if not data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
            raise ValueError(f"{path}: truncated JPEG (no end-of-image marker)")
    elif ext == ".png":
        if not data.startswith(b"\x89PNG\r\n\x1a\n"):
            raise ValueError(f"{path}: not a PNG file (bad signature)")
        if b"IEND" not in data[-16:]:
            raise ValueError(f"{path}: truncated PNG (no IEND chunk)")


def read_image(path: str | Path, mode: str = "unchanged") -> np.ndarray:
    """Read an image as a channel-last array (colour as RGB), checking that the file is complete.

    Args:
        path: image file (``.png``, ``.jpg``, ``.tif``, ``.bmp``; ``.npy`` for arrays/volumes).
        mode: ``"unchanged"`` (keep bit depth and channels), ``"gray"`` (H, W) or ``"rgb"`` (H, W, 3).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unknown extension, unreadable, truncated file, or unsupported dtype.
    """
    path = Path(path)
    if mode not in ("unchanged", "gray", "rgb"):
        raise ValueError(f"mode must be 'unchanged', 'gray' or 'rgb', got {mode!r}")
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} does not exist")
    ext = path.suffix.lower()
    if ext not in IMAGE_EXTS:
        raise ValueError(f"{path}: unsupported image extension {ext!r}; supported: {', '.join(IMAGE_EXTS)}")
    if ext == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ValueError(f"{path}: unreadable .npy file ({exc})") from exc
    else:
        data = path.read_bytes()
        if not data:
            raise ValueError(f"{path}: empty file")
        _check_complete(path, data)
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise ValueError(f"{path}: cannot decode image (corrupt or unsupported format)")
        if arr.ndim == 3 and arr.shape[2] == 3:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
        elif arr.ndim == 3 and arr.shape[2] == 4:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA)
    if arr.dtype not in ops.SUPPORTED_DTYPES:
        raise ValueError(
            f"{path}: unsupported dtype {arr.dtype}; supported: {[str(d) for d in ops.SUPPORTED_DTYPES]}"
        )
    if mode == "gray" and arr.ndim == 3:
        arr = _to_gray(arr)
    elif mode == "rgb":
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        elif arr.shape[2] == 4:
            arr = arr[:, :, :3]
        elif arr.shape[2] == 1:
            arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr)


def _to_gray(arr: np.ndarray) -> np.ndarray:
    if arr.shape[2] == 1:
        return arr[:, :, 0]
    rgb = arr[:, :, :3].astype(np.float64)
    g = rgb @ np.array([0.299, 0.587, 0.114])
    if arr.dtype.kind in "iu":
        info = np.iinfo(arr.dtype)
        return np.clip(np.rint(g), info.min, info.max).astype(arr.dtype)
    return g.astype(arr.dtype)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a label mask, keeping every label of the encodings users have (:func:`read_mask_with_palette`)."""
    return read_mask_with_palette(path)[0]


def read_mask_with_palette(path: str | Path) -> tuple[np.ndarray, list[int] | None]:
    """A label mask and, for a palette PNG, its colour table (``None`` for any other file).

    * gray (8/16-bit) PNG/TIFF/npy: the integer labels as stored, ``(H, W)``;
    * a palette (``P`` mode) PNG, as VOC-style masks are: the palette indices, ``(H, W)`` uint8 (write it
      back with :func:`encode_mask` and the palette to keep the colours);
    * a colour-coded RGB(A) mask: ``(H, W, 3)`` when its channels differ (each colour is a label), else the
      one gray channel ``(H, W)``; a multi-channel ``.npy`` mask keeps all its channels unless they are equal.
    """
    path = Path(path)
    if path.suffix.lower() == ".png" and path.is_file():
        from PIL import Image

        try:
            with Image.open(path) as im:
                if im.mode == "P":
                    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8)), list(im.getpalette() or [])
        except OSError as exc:
            raise ValueError(f"{path}: cannot decode image ({exc})") from None
    arr = read_image(path)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{path}: mask must hold integer labels, got dtype {arr.dtype}")
    if arr.ndim == 3:
        rgba = arr.shape[2] == 4 and path.suffix.lower() != ".npy"  # an image file's alpha is not a label
        colour = arr[:, :, :3] if rgba else arr
        same = all(np.array_equal(colour[:, :, 0], colour[:, :, c]) for c in range(1, colour.shape[2]))
        arr = colour[:, :, 0] if same else colour
    return np.ascontiguousarray(arr), None


def encode_mask(mask: np.ndarray, palette: list[int] | None = None) -> bytes:
    """A label mask as PNG bytes: a palette PNG with ``palette`` (the source's colours), else gray or RGB."""
    if palette is None:
        return encode_image(mask, ".png")
    import io

    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8), mode="P")
    im.putpalette(palette)
    stream = io.BytesIO()
    im.save(stream, format="PNG")
    return stream.getvalue()


def encode_image(array: np.ndarray, ext: str) -> bytes:
    """Encode an RGB / gray array for the extension ``ext`` (``.npy`` keeps the array as is)."""
    ext = ext.lower()
    if ext == ".npy":
        import io

        stream = io.BytesIO()
        np.save(stream, array, allow_pickle=False)
        return stream.getvalue()
    if ext not in IMAGE_EXTS:
        raise ValueError(f"unsupported output extension {ext!r}; supported: {', '.join(IMAGE_EXTS)}")
    arr = array
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGBA2BGRA)
    if ext in (".jpg", ".jpeg", ".bmp") and arr.dtype != np.uint8:
        raise ValueError(
            f"cannot write {arr.dtype} data as {ext}; use .png or .tif for 16-bit, .npy for float"
        )
    if ext == ".png" and arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"cannot write {arr.dtype} data as .png; use .tif or .npy")
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, arr, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {arr.dtype} array of shape {array.shape} as {ext}")
    return buf.tobytes()


def write_image(path: str | Path, array: np.ndarray) -> Path:
    """Write an array to ``path`` atomically, the format chosen by the extension."""
    path = Path(path)
    atomic_write_bytes(path, encode_image(array, path.suffix))
    return path


def to_tensor(image: np.ndarray, value_range: tuple[float, float] | None = None) -> Any:
    """Channel-last array -> float32 channel-first torch tensor scaled to [0, 1] by the value range."""
    import torch

    lo, hi = ops.resolve_value_range(image, value_range)
    x = (image.astype(np.float32) - lo) / (hi - lo)
    x = x[None] if x.ndim == 2 else np.moveaxis(x, -1, 0)
    return torch.from_numpy(np.ascontiguousarray(x))


def __getattr__(name: str) -> Any:
    """The online transforms moved to :mod:`.albu` (albumentations) and :mod:`.monai_transforms` (MONAI)."""
    if name == "MedAugmentTransform":
        from quintet.medaugment.albu import MedAugmentTransform

        return MedAugmentTransform
    if name == "MedAugmentd":
        from quintet.medaugment.monai_transforms import MedAugmentd

        return MedAugmentd
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------------------
# folder datasets
# --------------------------------------------------------------------------------------------------


def _resize(arr: np.ndarray, size: int | None, nearest: bool) -> np.ndarray:
    if size is None or arr.shape[:2] == (size, size):
        return arr
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
    out = cv2.resize(arr, (size, size), interpolation=interp)
    return out if out.ndim == arr.ndim else out[:, :, None]


class ImageFolderDataset:
    """Classification dataset over ``root/<class>/<image>``; returns ``(tensor (C, H, W) in [0, 1], label)``.

    Args:
        root: folder with one sub-folder per class (sorted names define the label ids).
        transform: optional online transform called as ``transform(image=...)`` returning a dict.
        size: resize to ``size x size`` before the transform (None keeps the size).
        mode: ``"gray"``, ``"rgb"`` or ``"unchanged"``.
        classes: explicit class order (default: sorted folder names).
    """

    def __init__(
        self,
        root: str | Path,
        transform: Callable[..., Mapping[str, Any]] | None = None,
        size: int | None = None,
        mode: str = "gray",
        classes: Sequence[str] | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset folder {self.root} does not exist")
        self.classes = list(classes) if classes else sorted(p.name for p in self.root.iterdir() if p.is_dir())
        if not self.classes:
            raise ValueError(f"{self.root}: no class sub-folders found")
        self.samples = [(p, i) for i, c in enumerate(self.classes) for p in list_images(self.root / c)]
        if not self.samples:
            raise ValueError(f"{self.root}: no images found in the class folders")
        self.transform, self.size, self.mode = transform, size, mode

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        img = _resize(read_image(path, self.mode), self.size, nearest=False)
        if self.transform is not None:
            img = self.transform(image=img)["image"]
        return to_tensor(img), label


class SegmentationFolderDataset:
    """Segmentation dataset over an image folder and a mask folder; returns ``(image (C,H,W), mask (1,H,W) long)``.

    Masks are matched by name: ``<stem><mask_suffix><ext>`` for each image ``<stem>.<ext>`` (any image
    extension). Labels are binarised with ``mask > threshold`` when ``binarize`` is set.
    """

    def __init__(
        self,
        images: str | Path,
        masks: str | Path,
        transform: Callable[..., Mapping[str, Any]] | None = None,
        size: int | None = None,
        mode: str = "gray",
        mask_suffix: str = "",
        binarize: bool = True,
        threshold: int = 127,
    ) -> None:
        self.images = list_images(images)
        if not self.images:
            raise ValueError(f"{images}: no images found")
        mask_dir = Path(masks)
        by_stem = {p.stem: p for p in list_images(mask_dir)}
        self.masks = []
        for img in self.images:
            m = by_stem.get(img.stem + mask_suffix)
            if m is None:
                raise FileNotFoundError(
                    f"no mask for {img.name} in {mask_dir} (expected {img.stem}{mask_suffix}.*)"
                )
            self.masks.append(m)
        self.transform, self.size, self.mode = transform, size, mode
        self.binarize, self.threshold = binarize, threshold

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        import torch

        img = read_image(self.images[index], self.mode)
        msk = read_mask(self.masks[index])
        if msk.shape[:2] != img.shape[:2]:
            raise ValueError(
                f"{self.masks[index]}: mask size {msk.shape[:2]} differs from its image {img.shape[:2]}"
            )
        img = _resize(img, self.size, nearest=False)
        msk = _resize(msk, self.size, nearest=True)
        if self.transform is not None:
            out = self.transform(image=img, mask=msk)
            img, msk = out["image"], out["mask"]
        lab = (msk > self.threshold) if self.binarize else msk
        return to_tensor(img), torch.from_numpy(np.ascontiguousarray(lab)).long()[None]
