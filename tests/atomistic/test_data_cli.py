"""``quintet data ...``: verbs run end to end, save their config, and report bad input cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from quintet.atomistic.structures import read_structures
from quintet.cli import main


def test_md_info_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "md.extxyz"
    rc = main(
        [
            "data",
            "md",
            f"out={out}",
            "supercell=[2,2,2]",
            "vacancies=1",
            "steps=40",
            "stride=10",
            "equilibration_steps=0",
            "seed=3",
        ]
    )
    assert rc == 0 and len(read_structures(out)) == 4
    saved = yaml.safe_load((tmp_path / "md.config.yaml").read_text())
    assert saved["seed"] == 3 and saved["supercell"] == [2, 2, 2]
    capsys.readouterr()
    assert main(["data", "info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (
        info["structures"] == 4
        and info["atoms_max"] == 31
        and info["elements"] == ["Cu"]
        and info["has_forces"]
    )
    assert main(["data", "split", str(out), "fractions=[0.5,0.25,0.25]"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts == {"train": 2, "val": 1, "test": 1}
    assert (tmp_path / "md_splits" / "split.json").is_file()


def test_defect_pairs_then_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["data", "defect-pairs", f"out={tmp_path}", "supercell=[2,2,2]", "n=2", "relax_host=false"])
    assert rc == 0
    capsys.readouterr()
    assert main(["data", "inspect", str(tmp_path / "Cu")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["layout"] == "2dmd" and info["structures"] == 2 and info["atoms_max"] == 32
    assert info["vacancies"] + info["substitutions"] >= 2


def test_config_file_and_bad_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "rp.yaml"
    cfg.write_text(f"out: {tmp_path / 'rp'}\nn: 1\ncell_filter: unitcell\nprototypes: ['Ni:fcc:3.52']\n")
    assert main(["data", "relax-pairs", "-c", str(cfg)]) == 0
    assert (tmp_path / "rp" / "CIF" / "emt_s0_00000_relaxed.cif").is_file()
    capsys.readouterr()
    assert main(["data", "md", "temprature_K=300"]) == 1
    err = capsys.readouterr().err
    assert "unknown config key(s) temprature_K" in err and "temperature_K" in err
    assert main(["data", "md", "oracle=nope", f"out={tmp_path / 'x.extxyz'}", "steps=10", "stride=5"]) == 1
    assert "unknown oracle 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "x.extxyz").exists()
    assert main(["data", "info", str(tmp_path / "missing")]) == 1
    assert "missing: no such file or folder" in capsys.readouterr().err


def test_oracles_listing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "oracles"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith("emt") and "available" in text.splitlines()[0]
    assert {line.split()[0] for line in text.splitlines()} == {"emt", "chgnet", "sevennet", "xtb"}
