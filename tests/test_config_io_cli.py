"""Foundation: typed configs (YAML + overrides, unknown keys listed), atomic writes that leave
nothing behind on failure, fingerprints, and the CLI frame (help for every system)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from quintet.cli import SYSTEMS, main
from quintet.config import ConfigError, config_to_dict, load_config, parse_overrides, save_config
from quintet.io import (
    atomic_open,
    atomic_save_json,
    atomic_write_text,
    check_resume_record,
    file_sha256,
    fingerprint,
    load_json,
)


@dataclass
class Inner:
    lr: float = 1e-3
    layers: int = 2
    dims: tuple[int, int] = (3, 4)


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    name: str = "run"
    mode: Literal["a", "b"] = "a"
    limit: float | None = None
    flags: list[str] = field(default_factory=list)
    out: Path = Path("runs")
    verbose: bool = False


def test_defaults_yaml_and_overrides(tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("inner:\n  lr: 0.01\nname: fromfile\n")
    cfg = load_config(
        Outer,
        cfg_file,
        ["inner.layers=5", "mode=b", "limit=none", "flags=[x,y]", "verbose=true", "inner.dims=[1,2]"],
    )
    assert cfg.inner.lr == 0.01 and cfg.inner.layers == 5 and cfg.inner.dims == (1, 2)
    assert cfg.name == "fromfile" and cfg.mode == "b" and cfg.limit is None
    assert cfg.flags == ["x", "y"] and cfg.verbose is True and cfg.out == Path("runs")
    # the saved config reloads to the same object
    saved = save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(Outer, saved) == cfg
    assert yaml.safe_load(saved.read_text())["inner"]["layers"] == 5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["inner.lrr=1"], "unknown config key.*inner.lrr.*valid keys: dims, layers, lr"),
        (["nope=1"], "unknown config key.*nope"),
        (["inner.layers=2.5"], "inner.layers: expected an integer"),
        (["mode=c"], "mode: 'c' is not one of"),
        (["verbose=maybe"], "verbose: expected a boolean"),
        (["inner.dims=[1,2,3]"], "expected 2 values"),
        (["no_equals_sign"], "key=value"),
    ],
)
def test_bad_overrides_are_clear_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(Outer, None, overrides)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("inner: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Outer, bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("colour: red\n")
    with pytest.raises(ConfigError, match=r"unknown.yaml: unknown config key\(s\) colour"):
        load_config(Outer, unknown)


def test_parse_overrides_nesting() -> None:
    assert parse_overrides(["a.b.c=1", "a.d=x", "e=0.5"]) == {"a": {"b": {"c": 1}, "d": "x"}, "e": 0.5}
    assert config_to_dict(Outer())["out"] == "runs"


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_open(target, "w") as fh:
        fh.write("half-written")
        raise RuntimeError("crash in the middle")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]  # no temp file left behind
    atomic_save_json(tmp_path / "x.json", {"a": [1, 2]})
    assert load_json(tmp_path / "x.json") == {"a": [1, 2]}
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match=r"broken\.json: malformed JSON"):
        load_json(tmp_path / "broken.json")


def test_fingerprint_tracks_content(tmp_path: Path) -> None:
    f = tmp_path / "data.bin"
    f.write_bytes(b"abc")
    a = fingerprint("x", 1, files=[f])
    assert a == fingerprint("x", 1, files=[f])
    assert a != fingerprint("x", 2, files=[f])
    f.write_bytes(b"abd")
    assert a != fingerprint("x", 1, files=[f])


def test_cli_help_lists_every_system(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    text = capsys.readouterr().out
    for name in ("leignn", "deeprelax", "definet", "fedaux", "medaugment", "data", "demo"):
        assert name in text


@pytest.mark.parametrize("system", sorted(SYSTEMS))
def test_each_system_has_help(system: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([system, "--help"])
    assert exc.value.code == 0
    assert f"quintet {system}" in capsys.readouterr().out


def test_console_script_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "quintet.cli", "--version"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "quintet" in proc.stdout


def test_cli_reports_user_errors_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["leignn", "train", f"data.path={tmp_path / 'missing.extxyz'}", f"out={tmp_path / 'run'}"])
    assert rc == 1
    assert "missing.extxyz" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["not-a-system"])


def test_atomic_files_honour_the_umask(tmp_path: Path) -> None:
    import os

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644


def test_resume_record_refuses_to_mix_runs_and_warns_on_unrecorded_folders(tmp_path: Path) -> None:
    model = tmp_path / "m.pt"
    model.write_bytes(b"weights")
    rec = {"model": file_sha256(model), "solve": {"steps": 40}, "fmax": 0.05}
    assert rec["model"] == hashlib.sha256(b"weights").hexdigest()
    check_resume_record(tmp_path, rec, resuming=False)  # a fresh folder: just recorded
    assert load_json(tmp_path / "run.json") == rec
    check_resume_record(tmp_path, dict(rec), resuming=True)  # same run: resumes
    with pytest.raises(ValueError, match=r"other fmax, solve .*resume=false"):
        check_resume_record(tmp_path, {**rec, "solve": {"steps": 100}, "fmax": 0.01}, resuming=True)
    assert load_json(tmp_path / "run.json") == rec  # the refused run wrote nothing
    check_resume_record(tmp_path, {**rec, "fmax": 0.01}, resuming=False)  # starting over replaces the record
    assert load_json(tmp_path / "run.json")["fmax"] == 0.01
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    with pytest.warns(RuntimeWarning, match="no run.json"):
        check_resume_record(legacy, rec, resuming=True)
    with pytest.raises(FileNotFoundError, match="no such file"):
        file_sha256(tmp_path / "missing.pt")
