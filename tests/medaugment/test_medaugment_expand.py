"""Offline expansion: layouts, names, manifest replay, resume after an interruption, bad inputs, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from quintet.medaugment import expand as expand_mod
from quintet.medaugment.data import read_image, read_mask, write_image
from quintet.medaugment.expand import ExpandConfig, expand_dataset
from quintet.medaugment.policy import Branch, MedAugment


def _make_seg(root: Path, n: int = 4, official: bool = True) -> None:
    rng = np.random.default_rng(0)
    for k in range(n):
        img = rng.integers(0, 256, size=(24, 28)).astype(np.uint8)
        mask = np.where(rng.random((24, 28)) > 0.5, 255, 0).astype(np.uint8)
        if official:
            write_image(root / "training" / f"case.{k}.png", img)
            write_image(root / "training_mask" / f"case.{k}_mask.png", mask)
            write_image(root / "test" / f"t{k}.png", img)
            write_image(root / "test_mask" / f"t{k}_mask.png", mask)
        else:
            write_image(root / "images" / f"{k}.png", img)
            write_image(root / "masks" / f"{k}.png", mask)


def _make_cls(root: Path, n: int = 3) -> None:
    rng = np.random.default_rng(1)
    for c in ("glioma", "none"):
        for k in range(n):
            write_image(root / c / f"{c}{k}.png", rng.integers(0, 256, size=(20, 20, 3)).astype(np.uint8))


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".medaugment" not in p.parts and p.suffix != ".yaml"
    }


def test_official_segmentation_layout_names_masks_and_replay(tmp_path):
    _make_seg(tmp_path / "in")
    res = expand_dataset(
        ExpandConfig(input=tmp_path / "in", out=tmp_path / "out", task="segmentation"), False
    )
    out = tmp_path / "out"
    assert res.num_sources == 4 and res.num_written == 20 and res.num_copied == 8
    for k in range(4):  # stems with dots are kept whole
        for i in range(1, 6):
            assert (out / "training" / f"case.{k}_{i}.png").is_file()
            assert (out / "training_mask" / f"case.{k}_{i}_mask.png").is_file()
    assert (out / "test_mask" / "t0_mask.png").read_bytes() == (
        tmp_path / "in/test_mask/t0_mask.png"
    ).read_bytes()
    src = read_image(tmp_path / "in/training/case.2.png")
    np.testing.assert_array_equal(read_image(out / "training/case.2_5.png"), src)  # original = copy N+1
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    assert len(rows) == 20 and {r["branch"] for r in rows} == {"1", "2", "3", "4", "5"}
    aug = MedAugment()
    smask = read_mask(tmp_path / "in/training_mask/case.2_mask.png")
    for r in rows:
        if r["source"] != "training/case.2.png":
            continue
        img, msk = aug.apply(Branch.from_dict(json.loads(r["record"])), src, smask)  # replay = file content
        np.testing.assert_array_equal(read_image(out / r["output"]), img)
        np.testing.assert_array_equal(read_mask(out / r["mask_output"]), msk)
        assert set(np.unique(msk)) <= {0, 255}


def test_folder_layouts_and_png_output(tmp_path):
    _make_seg(tmp_path / "seg", official=False)
    expand_dataset(
        ExpandConfig(input=tmp_path / "seg", out=tmp_path / "o1", task="segmentation", layout="folder"),
        False,
    )
    assert len(list((tmp_path / "o1/images").iterdir())) == 20
    assert len(list((tmp_path / "o1/masks").iterdir())) == 20
    _make_cls(tmp_path / "cls")
    cfg = ExpandConfig(input=tmp_path / "cls", out=tmp_path / "o2", layout="folder", num_branches=2)
    res = expand_dataset(cfg, False)
    assert res.num_written == 6 * 3
    assert sorted(p.name for p in (tmp_path / "o2/glioma").iterdir())[:3] == [
        "glioma0_1.png",
        "glioma0_2.png",
        "glioma0_3.png",
    ]


def test_resume_after_interruption_gives_identical_outputs(tmp_path, monkeypatch):
    _make_seg(tmp_path / "in", n=6)
    full = ExpandConfig(input=tmp_path / "in", out=tmp_path / "full", task="segmentation")
    expand_dataset(full, False)

    real = expand_mod._run_job
    calls = {"n": 0}

    def flaky(job, cfg, src, dst):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # killed in the middle of the run
        return real(job, cfg, src, dst)

    monkeypatch.setattr(expand_mod, "_run_job", flaky)
    cfg = ExpandConfig(input=tmp_path / "in", out=tmp_path / "part", task="segmentation")
    with pytest.raises(KeyboardInterrupt):
        expand_dataset(cfg, False)
    assert not (tmp_path / "part/manifest.csv").exists()
    monkeypatch.setattr(expand_mod, "_run_job", real)
    res = expand_dataset(cfg, False)
    assert res.num_skipped == 3 and res.num_written == 30
    assert _tree(tmp_path / "part") == _tree(tmp_path / "full")
    assert not list((tmp_path / "part").rglob("*.tmp"))


def test_parallel_workers_match_serial(tmp_path):
    _make_cls(tmp_path / "in" / "training", n=4)
    a = ExpandConfig(input=tmp_path / "in", out=tmp_path / "a", workers=1)
    b = ExpandConfig(input=tmp_path / "in", out=tmp_path / "b", workers=2)
    expand_dataset(a, False)
    expand_dataset(b, False)
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")


def test_bad_inputs(tmp_path):
    _make_seg(tmp_path / "in")
    with pytest.raises(ValueError, match="inside the input"):
        expand_dataset(
            ExpandConfig(input=tmp_path / "in", out=tmp_path / "in" / "aug", task="segmentation")
        )
    with pytest.raises(FileNotFoundError, match="does not exist"):
        expand_dataset(ExpandConfig(input=tmp_path / "nope", out=tmp_path / "o"))
    with pytest.raises(FileNotFoundError, match="training split"):
        expand_dataset(ExpandConfig(input=tmp_path / "in", out=tmp_path / "o", train_split="Training"))
    expand_dataset(ExpandConfig(input=tmp_path / "in", out=tmp_path / "o", task="segmentation"), False)
    with pytest.raises(ValueError, match="different settings"):
        expand_dataset(
            ExpandConfig(input=tmp_path / "in", out=tmp_path / "o", task="segmentation", level=3)
        )
    (tmp_path / "in/training_mask/case.1_mask.png").unlink()
    with pytest.raises(FileNotFoundError, match="no mask for"):
        expand_dataset(ExpandConfig(input=tmp_path / "in", out=tmp_path / "o2", task="segmentation"))
    write_image(tmp_path / "in/training_mask/case.1_mask.png", np.zeros((5, 5), np.uint8))
    res = expand_dataset(
        ExpandConfig(input=tmp_path / "in", out=tmp_path / "o3", task="segmentation"), False
    )
    # the bad pair is skipped with a one-line error naming the mask; the rest of the folder is expanded
    assert res.num_failed == 1 and "case.1_mask.png: mask size (5, 5) differs" in res.failures[0]["error"]
    assert not list((tmp_path / "o3/training").glob("case.1_*"))
    assert len(list((tmp_path / "o3/training").iterdir())) == 5 * (res.num_sources - 1)
    rows = list(csv.DictReader((tmp_path / "o3/manifest.csv").open()))
    assert [r["source"] for r in rows if r["error"]] == ["training/case.1.png"]


def test_truncated_and_unreadable_files_name_the_file(tmp_path):
    good = tmp_path / "a.jpg"
    write_image(good, np.full((16, 16, 3), 100, np.uint8))
    data = good.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.jpg: truncated JPEG"):
        read_image(tmp_path / "cut.jpg")
    png = tmp_path / "b.png"
    write_image(png, np.zeros((16, 16), np.uint16))
    (tmp_path / "cut.png").write_bytes(png.read_bytes()[:-20])
    with pytest.raises(ValueError, match=r"cut\.png: truncated PNG"):
        read_image(tmp_path / "cut.png")
    (tmp_path / "junk.png").write_bytes(b"hello")
    with pytest.raises(ValueError, match=r"junk\.png"):
        read_image(tmp_path / "junk.png")
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        read_image(tmp_path / "missing.png")
    np.save(tmp_path / "v.npy", np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="unsupported dtype"):
        read_image(tmp_path / "v.npy")
    assert read_image(png).dtype == np.uint16  # 16-bit round trip


def test_cli_expand_writes_config_and_reports_errors(tmp_path, capsys):
    from quintet.cli import main

    _make_cls(tmp_path / "in")
    rc = main(
        ["medaugment", "expand", f"input={tmp_path / 'in'}", f"out={tmp_path / 'out'}", "layout=folder"]
    )
    assert rc == 0
    assert (tmp_path / "out/medaugment_expand.yaml").is_file()
    assert len(list((tmp_path / "out/none").iterdir())) == 15
    rc = main(["medaugment", "expand", f"input={tmp_path / 'in'}", f"out={tmp_path / 'in/x'}"])
    assert rc == 1 and "inside the input folder" in capsys.readouterr().err
