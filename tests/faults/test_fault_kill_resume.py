"""kill -9 in the middle of a run, then the same command again: the outputs equal an uninterrupted run's
byte for byte (wall-clock columns aside) and no temporary file is left."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

import quintet
from quintet.atomistic.structures import write_structure

pytestmark = pytest.mark.slow

SRC = Path(quintet.__file__).resolve().parents[1]
CLI = "import sys; from quintet.cli import main; sys.exit(main(sys.argv[1:]))"

#: columns that hold wall-clock times (differ between any two runs)
TIME_COLUMNS = {"predict_s", "seconds", "finish_time_s"}


def spawn(argv: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    """``quintet argv`` in a subprocess (this checkout's sources), output discarded."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "QUINTET_CACHE": str(cwd / "cache")}
    return subprocess.Popen(
        [sys.executable, "-c", CLI, *argv], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _without_times(data: bytes) -> bytes:
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    buf = io.StringIO()
    if rows:
        keep = [c for c in rows[0] if c not in TIME_COLUMNS]
        w = csv.DictWriter(buf, keep, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue().encode()


def _outputs(folder: Path, skip: Callable[[str], bool]) -> dict[str, bytes]:
    return {k: _without_times(v) if k.endswith(".csv") else v for k, v in tree(folder).items() if not skip(k)}


def _kill_when(argv: list[str], cwd: Path, started: Callable[[], bool], timeout: float = 240.0) -> None:
    """Start ``quintet argv``, SIGKILL it as soon as ``started()`` (it must still be running then)."""
    proc = spawn(argv, cwd)
    t0 = time.monotonic()
    while not started():
        assert proc.poll() is None, f"ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        assert time.monotonic() - t0 < timeout, "no progress before the timeout"
        time.sleep(0.05)
    assert proc.poll() is None, "finished before the kill: give it more work"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _finish(argv: list[str], cwd: Path) -> None:
    proc = spawn(argv, cwd)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-2000:]


def test_predict_killed_then_rerun_matches_an_uninterrupted_run(model: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for k in range(24):
        cu = bulk("Cu", "fcc", a=3.55 + 0.004 * k, cubic=True)
        cu.rattle(0.05, seed=k)
        write_structure(src / f"s{k:02d}.cif", cu)
    argv = lambda out: ["deeprelax", "predict", "-m", str(model), str(src), "-o", str(out), "batch_size=1", "--threads", "1"]
    _finish(argv(tmp_path / "ref"), tmp_path)
    _kill_when(argv(tmp_path / "cut"), tmp_path, lambda: (tmp_path / "cut" / "predictions.csv").is_file())
    _finish(argv(tmp_path / "cut"), tmp_path)
    skip = lambda k: k == "config.yaml"
    assert _outputs(tmp_path / "cut", skip) == _outputs(tmp_path / "ref", skip)
    assert not list((tmp_path / "cut").rglob("*.tmp")) and not list((tmp_path / "cut").rglob(".*"))


def test_expand_killed_then_rerun_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    from quintet.medaugment.data import write_image

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        for k in range(20):
            write_image(tmp_path / "in" / c / f"{c}{k}.png", rng.integers(0, 256, size=(96, 96, 3)).astype(np.uint8))
    argv = lambda out: ["medaugment", "expand", str(tmp_path / "in"), "-o", str(out), "layout=folder", "workers=1"]
    _finish(argv(tmp_path / "ref"), tmp_path)
    done = tmp_path / "cut" / ".medaugment" / "done"
    _kill_when(argv(tmp_path / "cut"), tmp_path, lambda: done.is_dir() and any(done.iterdir()))
    _finish(argv(tmp_path / "cut"), tmp_path)
    skip = lambda k: k.endswith(".yaml")
    assert _outputs(tmp_path / "cut", skip) == _outputs(tmp_path / "ref", skip)
    assert not list((tmp_path / "cut").rglob("*.tmp"))


def test_relax_pairs_killed_then_rerun_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    argv = lambda out: [
        "data", "relax-pairs", "--oracle", "emt", f"out={out}", "n=10", "prototypes=[Cu:fcc:3.61]", "elements=[]",
        "substitute_fraction=0.0", "cell_filter=unitcell", "seed=5",
    ]  # fmt: skip
    _finish(argv(tmp_path / "ref"), tmp_path)
    cif = tmp_path / "cut" / "CIF"
    _kill_when(argv(tmp_path / "cut"), tmp_path, lambda: cif.is_dir() and len(list(cif.glob("*_relaxed.cif"))) >= 2)
    _finish(argv(tmp_path / "cut"), tmp_path)
    skip = lambda k: k.endswith((".yaml", ".json"))
    assert _outputs(tmp_path / "cut", skip) == _outputs(tmp_path / "ref", skip)
    assert not list((tmp_path / "cut").rglob("*.tmp"))


def _weights(path: Path) -> dict[str, bytes]:
    """Every tensor of a model file or checkpoint, as raw bytes (nested dicts flattened)."""
    import torch

    out: dict[str, bytes] = {}

    def walk(obj: object, key: str) -> None:
        if isinstance(obj, torch.Tensor):
            out[key] = obj.detach().cpu().contiguous().numpy().tobytes()
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{key}/{k}")
        elif isinstance(obj, list | tuple):
            for k, v in enumerate(obj):
                walk(v, f"{key}/{k}")

    walk(torch.load(path, map_location="cpu", weights_only=True), "")
    return out


def test_training_killed_then_rerun_matches_an_uninterrupted_run(cu_pairs: Path, tmp_path: Path) -> None:
    """``deeprelax train`` SIGKILLed after its first checkpoint, then run again: it resumes, and every
    weight and optimizer tensor of the final files, and the loss history, equal an uninterrupted run's."""
    argv = lambda out: [
        "deeprelax", "train", "--data", str(cu_pairs), "data.layout=custom", "data.fractions=[1.0,0.0,0.0]",
        "model.hidden=8", "model.num_layers=1", "model.num_rbf=8", "train.max_epochs=60", "train.batch_size=2",
        "train.early_stop_patience=null", "train.monitor=train/loss", "train.progress=false",
        "loss.solve_in_val=false", "--seed", "7", "-o", str(out), "--threads", "1",
    ]  # fmt: skip
    _finish(argv(tmp_path / "ref"), tmp_path)
    last = tmp_path / "cut" / "last.ckpt"
    _kill_when(argv(tmp_path / "cut"), tmp_path, last.is_file)
    import torch

    killed_at = torch.load(last, weights_only=True)["run"]["epoch"]
    assert 1 <= killed_at < 60, killed_at  # cut mid-run: the rerun must resume, not start over or skip
    _finish(argv(tmp_path / "cut"), tmp_path)
    for name in ("best.pt", "last.ckpt"):
        assert _weights(tmp_path / "cut" / name) == _weights(tmp_path / "ref" / name), name
    times = lambda k: "time" in k or k.endswith("_s")
    hist = lambda run: [{k: v for k, v in row.items() if not times(k)} for row in csv.DictReader((run / "history.csv").open())]
    assert hist(tmp_path / "cut") == hist(tmp_path / "ref")
    assert not list((tmp_path / "cut").rglob("*.tmp"))
