"""NIfTI / DICOM volumes: reading, offline expansion with label volumes, 16-bit CT in HU, bad input."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from nibabel.testing import data_path
from pydicom.data import get_testdata_file

from quintet.medaugment.expand import ExpandConfig, expand_dataset
from quintet.medaugment.volumes import read_volume, split_name

AFFINE = np.array([[0.7, 0, 0, -10.0], [0, 0.8, 0, 20.0], [0, 0, 2.5, -30.0], [0, 0, 0, 1]])


def _ct(seed=0, shape=(24, 20, 6)):
    """An int16 CT-like volume in HU (air -1024, tissue, bone) with distinct slices, and its label."""
    rng = np.random.default_rng(seed)
    vol = np.full(shape, -1024, np.int16)
    vol[4:20, 3:17, :] = 40 + 10 * np.arange(shape[2], dtype=np.int16)  # soft tissue, one value per slice
    vol[8:12, 6:10, :] = 1200
    vol += rng.integers(-5, 6, shape).astype(np.int16)
    lab = np.zeros(shape, np.uint8)
    lab[4:20, 3:17, :] = 1
    lab[8:12, 6:10, :] = 2
    return vol, lab


def _save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _manifest(root: Path) -> list[dict[str, str]]:
    with (root / "manifest.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_dicom_files_from_the_pydicom_wheel_are_read_in_hounsfield_units():
    ct = read_volume(get_testdata_file("CT_small.dcm"))
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    assert ct.kind == "dicom" and ct.data.shape == (1, 128, 128) and ct.data.dtype == np.int16
    hu = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
    np.testing.assert_array_equal(ct.data[0], hu.T)  # MONAI order: (x, y)
    assert int(ct.data.min()) < 0
    np.testing.assert_allclose(np.abs(np.diag(ct.affine)[:2]), [float(v) for v in ds.PixelSpacing])
    mr = read_volume(get_testdata_file("MR_small.dcm"))
    assert mr.data.shape == (1, 64, 64)


def test_nifti_volume_and_label_expand_keep_affine_spacing_dtype_and_labels(tmp_path):
    vol, lab = _ct()
    _save(tmp_path / "in/images/case.nii.gz", vol)
    _save(tmp_path / "in/masks/case.nii.gz", lab)
    cfg = ExpandConfig(input=tmp_path / "in", out=tmp_path / "out", task="segmentation", layout="folder")
    res = expand_dataset(cfg, progress=False)
    assert res.num_failed == 0 and res.num_written == 5
    for i in range(1, 6):
        img = nib.load(str(tmp_path / f"out/images/case_{i}.nii.gz"))
        seg = nib.load(str(tmp_path / f"out/masks/case_{i}.nii.gz"))
        for im in (img, seg):
            np.testing.assert_allclose(im.affine, AFFINE)
            np.testing.assert_allclose(im.header.get_zooms(), (0.7, 0.8, 2.5))
        x, y = np.asarray(img.dataobj), np.asarray(seg.dataobj)
        assert x.dtype == np.int16 and y.dtype == np.uint8
        assert set(np.unique(y)) <= {0, 1, 2}
        assert int(x.min()) >= int(vol.min()) and int(x.max()) <= int(vol.max())  # no clipping, no wrap
    # copy 5 is the identity branch: the 16-bit CT with negative HU round-trips exactly
    np.testing.assert_array_equal(
        np.asarray(nib.load(str(tmp_path / "out/images/case_5.nii.gz")).dataobj), vol
    )
    rows = _manifest(tmp_path / "out")
    assert [r["combination"] for r in rows][-1] == "identity" and not any(r["error"] for r in rows)


def test_in_plane_ops_of_expand_keep_axial_slices_apart(tmp_path):
    vol, lab = _ct(1)
    _save(tmp_path / "in/images/v.nii", vol)
    _save(tmp_path / "in/masks/v.nii", lab)
    cfg = ExpandConfig(
        input=tmp_path / "in", out=tmp_path / "out", task="segmentation", layout="folder", seed=3
    )
    expand_dataset(cfg, progress=False)
    for row in _manifest(tmp_path / "out"):
        seg = np.asarray(nib.load(str(tmp_path / "out" / row["mask_output"])).dataobj)
        # labels are the same on every axial slice, so any mixing along the slice axis would show
        for k in range(1, seg.shape[2]):
            np.testing.assert_array_equal(seg[:, :, k], seg[:, :, 0])


def test_nifti_and_dicom_from_the_wheels_expand_as_classification_sources(tmp_path):
    shutil.copy(Path(data_path) / "anatomical.nii", tmp_path / "in_a.nii")
    (tmp_path / "in/scans").mkdir(parents=True)
    shutil.move(tmp_path / "in_a.nii", tmp_path / "in/scans/anat.nii")
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "in/scans/ct.dcm")
    res = expand_dataset(ExpandConfig(input=tmp_path / "in", out=tmp_path / "out", layout="folder"), False)
    assert res.num_failed == 0 and res.num_written == 10
    src = read_volume(tmp_path / "in/scans/ct.dcm")
    for i in range(1, 6):
        out = read_volume(tmp_path / f"out/scans/ct_{i}.dcm")
        assert out.data.dtype == src.data.dtype and np.allclose(out.affine, src.affine)
        anat = nib.load(str(tmp_path / f"out/scans/anat_{i}.nii"))
        assert anat.get_data_dtype() == nib.load(str(tmp_path / "in/scans/anat.nii")).get_data_dtype()
    np.testing.assert_array_equal(read_volume(tmp_path / "out/scans/ct_5.dcm").data, src.data)


def _bad_folder(root: Path) -> None:
    vol, lab = _ct(2)
    _save(root / "images/good.nii.gz", vol)
    _save(root / "masks/good.nii.gz", lab)
    _save(root / "images/shape.nii.gz", vol)
    _save(root / "masks/shape.nii.gz", lab[:, :, :4])
    _save(root / "images/affine.nii.gz", vol)
    _save(root / "masks/affine.nii.gz", lab, AFFINE * np.array([[2.0], [1], [1], [1]]))
    _save(root / "images/fourd.nii.gz", np.stack([vol, vol], axis=-1))
    _save(root / "masks/fourd.nii.gz", lab)
    nan = vol.astype(np.float32)
    nan[3, 3, 3] = np.nan
    _save(root / "images/nan.nii.gz", nan)
    _save(root / "masks/nan.nii.gz", lab)
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.PixelData
    ds.save_as(root / "images/nopix.dcm")
    shutil.copy(get_testdata_file("CT_small.dcm"), root / "masks/nopix.dcm")


def test_bad_volumes_are_skipped_named_and_listed_while_the_rest_is_expanded(tmp_path, capsys):
    _bad_folder(tmp_path / "in")
    cfg = ExpandConfig(input=tmp_path / "in", out=tmp_path / "out", task="segmentation", layout="folder")
    res = expand_dataset(cfg, progress=False)
    errors = {split_name(f["source"])[0]: f["error"] for f in res.failures}
    assert set(errors) == {"shape", "affine", "fourd", "nan", "nopix"}
    assert "masks/shape.nii.gz: label volume shape (24, 20, 4) differs" in errors["shape"]
    assert "masks/affine.nii.gz: label volume affine differs" in errors["affine"]
    assert "images/fourd.nii.gz: 4D image" in errors["fourd"]
    assert "images/nan.nii.gz: contains NaN" in errors["nan"]
    assert "images/nopix.dcm: DICOM file has no pixel data" in errors["nopix"]
    assert all("\n" not in e for e in errors.values())
    written = sorted(p.name for p in (tmp_path / "out/images").iterdir())
    assert written == [f"good_{i}.nii.gz" for i in range(1, 6)]  # nothing of the bad sources
    assert len(list((tmp_path / "out/masks").iterdir())) == 5
    rows = _manifest(tmp_path / "out")
    assert sorted(split_name(r["source"])[0] for r in rows if r["error"]) == sorted(errors)
    assert "skipped images/nan.nii.gz" in capsys.readouterr().err


def test_monai_pipeline_on_an_expanded_nifti(tmp_path):
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    from quintet.medaugment.monai_transforms import MedAugmentd

    vol, lab = _ct(4)
    img, seg = _save(tmp_path / "v.nii.gz", vol), _save(tmp_path / "l.nii.gz", lab)
    pipe = Compose(
        [
            LoadImaged(keys=["image", "label"]),
            EnsureChannelFirstd(keys=["image", "label"]),
            MedAugmentd(keys=["image", "label"], label_keys=["label"]),
        ]
    )
    pipe.set_random_state(0)
    for _ in range(5):
        out = pipe({"image": str(img), "label": str(seg)})
        assert tuple(out["image"].shape) == (1, *vol.shape)
        assert float(out["image"].min()) >= float(vol.min()) and float(out["image"].max()) <= float(vol.max())
        y = out["label"].numpy()[0]
        for k in range(1, y.shape[2]):
            np.testing.assert_array_equal(y[:, :, k], y[:, :, 0])


@pytest.mark.parametrize("name", ["scan.nii.gz", "scan.nii", "scan.dcm", "a.b.nii.gz"])
def test_split_name(name):
    stem, ext = split_name(name)
    assert stem + ext == name and ext in (".nii.gz", ".nii", ".dcm")


def test_value_range_key_sets_a_ct_window_for_volumes(tmp_path):
    from quintet.config import load_config

    vol, lab = _ct(5)
    _save(tmp_path / "in/images/w.nii.gz", vol)
    _save(tmp_path / "in/masks/w.nii.gz", lab)
    cfg = load_config(
        ExpandConfig,
        None,
        [
            f"input={tmp_path / 'in'}",
            f"out={tmp_path / 'out'}",
            "task=segmentation",
            "layout=folder",
            "value_range=[-100,400]",
            "num_branches=12",
        ],
    )
    assert cfg.value_range == (-100.0, 400.0)
    expand_dataset(cfg, progress=False)
    pixel = {"brightness", "contrast", "posterize", "sharpen", "gaussian_blur", "gaussian_noise"}
    checked = 0
    for row in _manifest(tmp_path / "out"):
        x = np.asarray(nib.load(str(tmp_path / "out" / row["output"])).dataobj)
        names = {c["name"] for c in json.loads(row["record"])["calls"] if c["applied"]}
        if names & pixel:  # a pixel op clips to the window; a spatial-only branch keeps the full range
            assert int(x.min()) >= -100 and int(x.max()) <= 400
            checked += 1
        elif row["combination"] == "identity":
            np.testing.assert_array_equal(x, vol)
    assert checked >= 2


def _series(folder: Path, values: np.ndarray, order: list[int]) -> Path:
    """A DICOM series built on the pydicom wheel's ``CT_small.dcm``: slice k holds ``values[k]`` (stored
    values, HU = stored - 1024), 5 mm apart, written to files whose names do not follow the slice order."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in order:
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.PixelData = np.ascontiguousarray(values[k].astype(ds.pixel_array.dtype)).tobytes()
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [*list(ds.ImagePositionPatient)[:2], -75.7 + 5.0 * k]
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(folder / f"IM{(7 * k + 3) % 11:04d}.dcm")
    return folder


def test_dicom_series_is_one_volume_expanded_slice_by_slice_with_its_label_series(tmp_path):
    """A folder of slices is read in InstanceNumber order (not file-name order), expanded with its label
    series, and written back as series of the same slice files; labels and the affine survive."""
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm")).pixel_array.astype(np.int16)
    ct = np.stack([base + 100 * k for k in range(4)])  # distinct slices
    lab = np.zeros_like(ct)
    lab[:, 30:90, 40:100] = 1
    lab[:, 50:60, 50:70] = 2
    _series(tmp_path / "in/images/case0", ct, [2, 0, 3, 1])
    _series(tmp_path / "in/masks/case0", lab + 1024, [1, 3, 0, 2])  # stored = label + 1024 (HU = label)
    vol = read_volume(tmp_path / "in/images/case0")
    assert vol.kind == "dicom-series" and vol.data.shape == (4, 128, 128)
    for k in range(4):  # MONAI's (x, y) order, slices stacked by InstanceNumber
        np.testing.assert_array_equal(vol.data[k], (ct[k].astype(np.int32) - 1024).T)
    assert vol.affine[2, 2] == pytest.approx(5.0)
    cfg = ExpandConfig(input=tmp_path / "in", out=tmp_path / "out", task="segmentation", layout="folder", seed=2)
    res = expand_dataset(cfg, progress=False)
    assert res.num_failed == 0 and res.num_written == 5
    for i in range(1, 6):
        img, seg = read_volume(tmp_path / f"out/images/case0_{i}"), read_volume(tmp_path / f"out/masks/case0_{i}")
        assert sorted(p.name for p in (tmp_path / f"out/images/case0_{i}").iterdir()) == sorted(
            p.name for p in (tmp_path / "in/images/case0").iterdir()
        )
        np.testing.assert_allclose(img.affine, vol.affine)
        assert img.data.dtype == vol.data.dtype and set(np.unique(seg.data)) <= {0, 1, 2}
        uids = {pydicom.dcmread(p).SeriesInstanceUID for p in (tmp_path / f"out/images/case0_{i}").iterdir()}
        assert len(uids) == 1
    np.testing.assert_array_equal(read_volume(tmp_path / "out/images/case0_5").data, vol.data)  # identity


def test_a_series_slice_without_instance_number_is_named(tmp_path):
    folder = _series(tmp_path / "s", np.zeros((2, 128, 128), np.int16), [0, 1])
    bad = sorted(folder.iterdir())[0]
    ds = pydicom.dcmread(bad)
    del ds.InstanceNumber
    ds.save_as(bad)
    with pytest.raises(ValueError, match=rf"{bad.name}: DICOM slice without InstanceNumber"):
        read_volume(folder)
