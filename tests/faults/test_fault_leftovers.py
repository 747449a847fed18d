"""Clean failure: no partial outputs or temp files survive a failure, and no command writes into its input data.

Functions: :func:`quintet.atomistic.pipeline.clean_on_failure` (``deeprelax predict``, ``definet predict``),
:func:`quintet.io.remove_stale_temps` (``medaugment expand``, predict verbs, ``data relax-pairs`` on resume),
:func:`quintet.atomistic.datasets.split_cache_dir` (``deeprelax train``, ``definet train``, ``leignn train``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from quintet.atomistic.structures import write_structure
from quintet.cli import main


def _listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


@pytest.mark.parametrize("existing", [False, True])
def test_a_failed_predict_leaves_no_config_or_run_record(
    existing: bool, model: Path, cu_cif: Path, tmp_path: Path, cli_error
) -> None:
    bad = cu_cif.parent / "zz_bad.xyz"
    bad.write_text("2\n\nCu 0 0 0\nCu 0 0 0.2\n")
    out = tmp_path / "o"
    if existing:
        out.mkdir()
        (out / "mine.txt").write_text("user file")
    err = cli_error(["deeprelax", "predict", "-m", str(model), str(cu_cif.parent), "-o", str(out), "--strict"])
    assert "zz_bad.xyz" in err
    if existing:
        assert _listing(out) == ["mine.txt"]
    else:
        assert not out.exists()


def test_a_predict_failing_after_a_batch_keeps_finished_work_and_resumes(
    model: Path, cu_cif: Path, tmp_path: Path, capsys
) -> None:
    from quintet.deeprelax.jobs import PredictJob, predict

    lone = bulk("Cu", "sc", a=20.0)  # no neighbour within the cutoff: refused when its batch runs
    write_structure(cu_cif.parent / "zz_lone.cif", lone)
    job = PredictJob(model=str(model), inputs=[str(cu_cif.parent)], out=str(tmp_path / "o"), batch_size=1)
    with pytest.raises(ValueError, match=r"zz_lone\.cif: no two atoms within the model's 6\.0 Å cutoff"):
        predict(job)
    assert (tmp_path / "o" / "cu.cif").is_file()  # the finished structure stays (a rerun resumes)
    (cu_cif.parent / "zz_lone.cif").unlink()
    predict(job)
    assert "resuming: 1 structures" in capsys.readouterr().out


def test_training_never_writes_into_its_data(model: Path, cu_pairs: Path, tmp_path: Path, monkeypatch) -> None:
    """``model`` was trained on ``cu_pairs``: its splits went to the cache, the data folder is as generated."""
    assert not (cu_pairs / "split.json").exists()
    assert not any((cu_pairs / f"{s}.csv").exists() for s in ("train", "val", "test"))
    before = _listing(cu_pairs)
    monkeypatch.setenv("QUINTET_CACHE", str(tmp_path / "cache"))
    from quintet.atomistic.datasets import RelaxPairDataset, split_cache_dir

    RelaxPairDataset(cu_pairs, split="train")
    assert _listing(cu_pairs) == before
    assert (split_cache_dir(cu_pairs) / "split.json").is_file()


def test_definet_train_splits_go_to_the_cache(tmp_path: Path, monkeypatch) -> None:
    from quintet.definet.run import DataConfig, load_pairs

    assert main(["data", "defect-pairs", f"out={tmp_path / 'data'}", "supercell=[2,2,2]", "n=3", "relax_host=false"]) == 0
    before = _listing(tmp_path / "data")
    monkeypatch.setenv("QUINTET_CACHE", str(tmp_path / "cache"))
    for split in ("train", "val", "test"):
        load_pairs(DataConfig(root=str(tmp_path / "data")), split)
    assert _listing(tmp_path / "data") == before
    assert list((tmp_path / "cache" / "splits").glob("*/split.json"))


def test_leignn_splits_go_to_the_cache_even_when_the_data_is_writable(tmp_path: Path, monkeypatch) -> None:
    import torch
    from ase.io import write

    from quintet.atomistic.datasets import split_cache_dir
    from quintet.leignn.data import DataConfig, load_splits

    rng = np.random.default_rng(0)
    frames = []
    for _ in range(6):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
        atoms.info["energy"] = float(rng.normal())
        atoms.arrays["forces"] = rng.normal(size=(len(atoms), 3))
        frames.append(atoms)
    data = tmp_path / "data"
    data.mkdir()
    write(data / "cu.extxyz", frames)
    monkeypatch.setenv("QUINTET_CACHE", str(tmp_path / "cache"))
    cfg = DataConfig(path=str(data / "cu.extxyz"), n_train=4, n_val=1)
    first = load_splits(cfg, 4.0, None, torch.float64)
    assert _listing(data) == ["cu.extxyz"]
    assert (split_cache_dir(data / "cu_splits") / "split.json").is_file()
    again = load_splits(cfg, 4.0, None, torch.float64)  # the saved split is reused
    assert [first[s].indices for s in ("train", "val", "test")] == [again[s].indices for s in ("train", "val", "test")]


def test_splits_shipped_with_the_data_are_still_used(cu_pairs: Path, tmp_path: Path) -> None:
    from quintet.atomistic.datasets import RelaxPairDataset

    data = tmp_path / "data"
    shutil.copytree(cu_pairs, data)
    ids = RelaxPairDataset(data).ids
    (data / "train.csv").write_text("atoms_id\n" + "\n".join(ids[:3]) + "\n")
    (data / "test.csv").write_text(f"atoms_id\n{ids[3]}\n")
    assert RelaxPairDataset(data, split="test").ids == [ids[3]]


def test_expand_removes_orphan_temp_files_on_rerun(tmp_path: Path) -> None:
    from quintet.medaugment.data import write_image

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        write_image(tmp_path / "in" / c / f"{c}0.png", rng.integers(0, 256, size=(16, 16, 3)).astype(np.uint8))
    argv = ["medaugment", "expand", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "layout=folder", "num_branches=2"]
    assert main(argv) == 0
    orphan = tmp_path / "out" / "a" / ".a0_1.png.abc123.tmp"  # what a kill during an atomic write leaves
    orphan.write_bytes(b"half")
    (tmp_path / "out" / ".medaugment" / "done" / ".x.json.q.tmp").write_bytes(b"{")
    assert main(argv) == 0
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_training_removes_a_killed_runs_temp_files(cu_pairs: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    orphan = run / ".last.ckpt.k3j9x.tmp"  # what a kill during the checkpoint's atomic write leaves
    orphan.write_bytes(b"half a checkpoint")
    argv = ["deeprelax", "train", "--data", str(cu_pairs), "data.fractions=[1.0,0.0,0.0]", "model.hidden=8"]
    argv += ["model.num_layers=1", "train.max_epochs=1", "train.monitor=train/loss", "train.progress=false"]
    assert main([*argv, "loss.solve_in_val=false", "-o", str(run)]) == 0
    assert not orphan.exists() and (run / "last.ckpt").is_file()
