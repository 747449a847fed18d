"""NIfTI and DICOM volumes for offline expansion: read through MONAI ``LoadImage``, written back with the source header.

* Reading uses MONAI's ``LoadImage`` (``NibabelReader`` for ``.nii`` / ``.nii.gz``, ``PydicomReader``
  for a single ``.dcm`` file and for a DICOM series, a folder of one ``.dcm`` file per slice, stacked in
  ``InstanceNumber`` order; DICOM rescale slope/intercept applied, so CT is in Hounsfield units).
  The array comes back in MONAI's spatial order ``(H, W, D)`` (a 2D file gets ``D = 1``) and is
  handed to the ops as ``(D, H, W)``: in-plane ops act on the first two axes, as in
  :class:`~quintet.medaugment.monai_transforms.MedAugmentd`.
* The stored dtype is kept: an unscaled integer NIfTI (e.g. int16 CT) is augmented as that dtype
  with the ``"auto"`` window (the volume's own [min, max]), so nothing is clipped and nothing wraps.
* Writing keeps the source file's header: NIfTI through nibabel with the original header and affine
  (so spacing and orientation are unchanged), DICOM by replacing the pixel data of the source
  dataset (stored values = ``(HU - intercept) / slope``, rounded) under a new SOP Instance UID; a series
  slice by slice into files of the same names, all under one new Series Instance UID.
  Files are encoded in memory, then written atomically, so a failure leaves nothing half-written.
  (MONAI's ``SaveImage`` writes to a path of its own choosing and has no DICOM writer, hence this.)
* Bad input raises ``ValueError`` naming the file: 4D data where 3D is expected, NaN / inf values,
  DICOM without pixel data, compressed DICOM, non-integer labels, labels whose shape or affine differ.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "VOLUME_EXTS",
    "Volume",
    "check_label_volume",
    "encode_series",
    "encode_volume",
    "is_series",
    "is_volume",
    "read_volume",
    "split_name",
]

VOLUME_EXTS: tuple[str, ...] = (".nii", ".nii.gz", ".dcm")


def split_name(path: str | Path) -> tuple[str, str]:
    """``(stem, extension)``, treating ``.nii.gz`` as one extension."""
    name = Path(path).name
    if name.lower().endswith(".nii.gz"):
        return name[: -len(".nii.gz")], ".nii.gz"
    p = Path(name)
    return p.stem, p.suffix


def is_volume(path: str | Path) -> bool:
    """Whether ``path`` has a NIfTI or DICOM extension, or is a DICOM series folder."""
    return split_name(path)[1].lower() in VOLUME_EXTS or is_series(path)


def is_series(path: str | Path) -> bool:
    """Whether ``path`` is a DICOM series: a folder holding ``.dcm`` files (one per slice)."""
    p = Path(path)
    return p.is_dir() and any(q.suffix.lower() == ".dcm" for q in p.iterdir() if not q.name.startswith("."))


def _series_slices(folder: Path) -> tuple[Path, ...]:
    """The slice files of a series in ``InstanceNumber`` order (MONAI's stacking order), each checked."""
    import pydicom

    files = sorted(q for q in folder.iterdir() if q.suffix.lower() == ".dcm" and not q.name.startswith("."))
    numbers = {}
    for f in files:
        _check_dicom(f)
        n = pydicom.dcmread(str(f), stop_before_pixels=True).get("InstanceNumber")
        if n is None:
            raise ValueError(f"{f}: DICOM slice without InstanceNumber; a series needs it to order its slices")
        if int(n) in numbers:
            raise ValueError(f"{f}: InstanceNumber {n} repeats {numbers[int(n)].name}; one file per slice")
        numbers[int(n)] = f
    return tuple(numbers[n] for n in sorted(numbers))


@dataclass
class Volume:
    """A volume file: ``data`` in ops layout ``(D, H, W)`` and what is needed to write it back."""

    path: Path
    data: np.ndarray
    affine: np.ndarray
    kind: str  # "nifti", "dicom" or "dicom-series"
    file_shape: tuple[int, ...]
    slices: tuple[Path, ...] = ()  # a series' slice files, in stacking (InstanceNumber) order

    def label_data(self) -> np.ndarray:
        """The data as integer class ids (``ValueError`` naming the file if they are not integers)."""
        if self.data.dtype.kind in "biu":
            return self.data
        ids = np.rint(self.data)
        if not np.array_equal(ids, self.data):
            raise ValueError(f"{self.path}: label volume holds non-integer values; labels must be class ids")
        return ids.astype(np.int32)


def _load(path: Path, reader: str) -> Any:

    from monai.transforms import LoadImage

    try:
        return LoadImage(image_only=True, reader=reader)(str(path))
    except Exception as exc:  # MONAI wraps reader errors in many types
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: cannot read as {reader} ({msg})") from exc


def _nifti_dtype(path: Path) -> np.dtype:
    import nibabel as nib

    img = nib.load(str(path))
    slope, inter = img.header.get_slope_inter()
    stored = img.get_data_dtype().newbyteorder("=")
    scaled = slope not in (None, 1.0) or inter not in (None, 0.0)
    return np.dtype(np.float32) if scaled or stored.kind == "f" else stored


def _dicom_dtype(path: Path, hu: np.ndarray) -> np.dtype:
    """int16 when the rescaled values are integers that fit (CT in HU), else float32."""
    import pydicom

    ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    slope, inter = float(ds.get("RescaleSlope", 1.0) or 1.0), float(ds.get("RescaleIntercept", 0.0) or 0.0)
    fits = hu.size and float(hu.min()) >= -32768 and float(hu.max()) <= 32767
    return np.dtype(np.int16) if slope == 1.0 and inter.is_integer() and fits else np.dtype(np.float32)


def _check_dicom(path: Path) -> None:
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable DICOM file ({exc})") from exc
    tags = pydicom.dcmread(str(path), specific_tags=["PixelData"])
    if "PixelData" not in tags:
        raise ValueError(f"{path}: DICOM file has no pixel data (no PixelData element); it is not an image")
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        raise ValueError(f"{path}: compressed DICOM ({ds.file_meta.TransferSyntaxUID.name}) is not supported")


def read_volume(path: str | Path) -> Volume:
    """Read a NIfTI file, a DICOM file or a DICOM series folder (see the module docstring); errors name the
    file."""
    path = Path(path)
    if not (path.is_file() or is_series(path)):
        raise FileNotFoundError(f"volume file {path} does not exist (nor a folder of .dcm slices)")
    ext = split_name(path)[1].lower()
    slices = _series_slices(path) if is_series(path) else ()
    if not slices and ext not in VOLUME_EXTS:
        raise ValueError(f"{path}: not a volume file; supported: {', '.join(VOLUME_EXTS)} or a DICOM series folder")
    kind = "dicom-series" if slices else "dicom" if ext == ".dcm" else "nifti"
    if kind == "dicom":
        _check_dicom(path)
    x = _load(path, "NibabelReader" if kind == "nifti" else "PydicomReader")
    arr = np.asarray(x.numpy() if hasattr(x, "numpy") else x)
    if arr.ndim > 3:
        raise ValueError(
            f"{path}: {arr.ndim}D image of shape {arr.shape} where a 3D volume is expected; split it into 3D files"
        )
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(
            f"{path}: contains NaN or infinite values; replace them (e.g. numpy.nan_to_num) first"
        )
    file_shape = tuple(arr.shape)
    dtype = _nifti_dtype(path) if kind == "nifti" else _dicom_dtype(slices[0] if slices else path, arr)
    arr = arr.astype(dtype) if dtype.kind == "f" else np.rint(arr).astype(dtype)
    vol = arr.reshape(*arr.shape[:2], -1) if arr.ndim == 3 else arr[:, :, None]
    data = np.ascontiguousarray(np.moveaxis(vol, -1, 0))  # (H, W, D) -> (D, H, W)
    return Volume(path, data, np.asarray(x.affine, dtype=np.float64), kind, file_shape, slices)


def check_label_volume(image: Volume, label: Volume) -> None:
    """A label volume must match its image in shape and affine; ``ValueError`` naming the label file."""
    if label.data.shape != image.data.shape:
        raise ValueError(
            f"{label.path}: label volume shape {label.file_shape} differs from its image {image.path.name} "
            f"{image.file_shape}"
        )
    if not np.allclose(label.affine, image.affine, atol=1e-4):
        raise ValueError(
            f"{label.path}: label volume affine differs from its image {image.path.name} (spacing/orientation)"
        )


def _to_file_layout(volume: Volume, data: np.ndarray) -> np.ndarray:
    return np.moveaxis(data, 0, -1).reshape(volume.file_shape)


def encode_volume(volume: Volume, data: np.ndarray, ext: str) -> bytes:
    """Encode ``data`` (ops layout ``(D, H, W)``) with the header of ``volume``'s source file."""
    if data.shape != volume.data.shape:
        raise ValueError(
            f"{volume.path}: cannot write shape {data.shape} over a volume of shape {volume.data.shape}"
        )
    if volume.kind == "dicom-series":
        raise ValueError(f"{volume.path}: a DICOM series is written slice by slice (encode_series)")
    arr = _to_file_layout(volume, data)
    if volume.kind == "dicom":
        return _encode_dicom(volume.path, arr)
    import nibabel as nib

    src = nib.load(str(volume.path))
    out = nib.Nifti1Image(arr, src.affine, header=src.header.copy())
    raw = out.to_bytes()
    return gzip.compress(raw, mtime=0) if ext.lower() == ".nii.gz" else raw


def encode_series(volume: Volume, data: np.ndarray) -> list[tuple[str, bytes]]:
    """A series' slices with ``data`` (ops layout ``(D, H, W)``): ``[(slice file name, bytes)]``, each slice's
    header kept, one new Series Instance UID for all."""
    from pydicom.uid import generate_uid

    if data.shape != volume.data.shape:
        raise ValueError(f"{volume.path}: cannot write shape {data.shape} over a series of shape {volume.data.shape}")
    arr = _to_file_layout(volume, data)
    series = generate_uid()
    return [(f.name, _encode_dicom(f, arr[:, :, k : k + 1], series)) for k, f in enumerate(volume.slices)]


def _encode_dicom(path: Path, arr: np.ndarray, series_uid: str | None = None) -> bytes:
    import pydicom
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(str(path))
    if series_uid is not None:
        ds.SeriesInstanceUID = series_uid
    stored = ds.pixel_array.dtype
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    inter = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    values = np.rint((arr.astype(np.float64) - inter) / slope)
    info = np.iinfo(stored)
    pixels = np.clip(values, info.min, info.max).astype(stored)
    pixels = pixels[:, :, 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels
    ds.PixelData = np.ascontiguousarray(pixels.T).tobytes()  # MONAI's (x, y) order back to rows x columns
    ds.SOPInstanceUID = generate_uid()
    if getattr(ds, "file_meta", None) is not None:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()
