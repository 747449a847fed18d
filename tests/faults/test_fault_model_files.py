"""Model files: edited, truncated, foreign or malicious files are refused naming the file; nothing runs code.

Validation function: :func:`quintet.train.load_model_file` (``weights_only=True`` and the ``state_sha256``
content hash), behind :func:`quintet.load_model`, so behind every verb that takes ``-m``. Generated datasets:
:func:`quintet.io.verify_dataset` (``dataset.sha256.json`` of ``data relax-pairs`` / ``defect-pairs``; called by
``RelaxPairDataset``: ``deeprelax train/eval``, ``definet train/eval``) and
:func:`quintet.atomistic.datasets.verify_trajectory` (the sha256 in a ``data md`` summary; ``TrajectoryDataset``,
``leignn train/eval``).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch


def _edited(model: Path, tmp_path: Path) -> Path:
    d = torch.load(model, weights_only=True)
    name = next(iter(d["state_dict"]))
    d["state_dict"][name].view(-1)[0] += 1e-3  # one weight changed, the stored hash kept
    torch.save(d, tmp_path / "edited.pt")
    return tmp_path / "edited.pt"


class _Evil:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/quintet-faults-pwned"),))


BAD = {
    "one weight edited": (_edited, "do not match the file's content hash"),
    "truncated": (lambda m, t: (t / "cut.pt").write_bytes(m.read_bytes()[: len(m.read_bytes()) // 2]) and t / "cut.pt", "cut.pt"),
    "random bytes": (lambda m, t: (t / "rand.pt").write_bytes(bytes(range(256)) * 8) and t / "rand.pt", "rand.pt"),
    "a pickle that runs code": (
        lambda m, t: (t / "evil.pt").write_bytes(pickle.dumps({"state_dict": _Evil()})) and t / "evil.pt",
        "evil.pt",
    ),
    "a torch file of another kind": (lambda m, t: torch.save({"w": torch.zeros(2)}, t / "other.pt") or t / "other.pt", "other.pt"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_model_file_is_refused_naming_it(case: str, model: Path, cu_cif: Path, tmp_path: Path, cli_error) -> None:
    make, message = BAD[case]
    path = make(model, tmp_path)
    err = cli_error(["deeprelax", "predict", "-m", str(path), str(cu_cif), "-o", str(tmp_path / "o")])
    assert str(path) in err and message in err
    assert not (tmp_path / "o").exists()
    assert not Path("/tmp/quintet-faults-pwned").exists()


def test_generated_pairs_carry_hashes_and_an_edited_pair_file_is_refused(cu_pairs: Path, tmp_path: Path, cli_error) -> None:
    """``data relax-pairs`` writes dataset.sha256.json; one edited CIF is refused by name, before training."""
    import json
    import shutil

    from quintet.io import DATASET_MANIFEST

    data = tmp_path / "pairs"
    shutil.copytree(cu_pairs, data)
    data.chmod(0o755)
    listed = json.loads((data / DATASET_MANIFEST).read_text())["files"]
    assert "meta.csv" in listed and sum(k.endswith("_relaxed.cif") for k in listed) == 4
    victim = sorted(data.glob("CIF/*_relaxed.cif"))[0]
    victim.chmod(0o644)
    victim.write_text(victim.read_text().replace("Cu", "Cu", 1) + "\n")  # one extra byte
    err = cli_error(["deeprelax", "train", "--data", str(data), "-o", str(tmp_path / "run"), "train.max_epochs=1"])
    assert victim.name in err and "differs from the hash" in err
    assert not (tmp_path / "run").exists()


def test_a_generated_trajectory_edited_after_the_fact_is_refused(tmp_path: Path, cli_error) -> None:
    from quintet.cli import main

    out = tmp_path / "md" / "cu.extxyz"
    argv = ["data", "md", "structure=Cu:fcc:3.61", "supercell=[2,2,2]", "steps=20", "stride=10", "oracle=emt"]
    assert main([*argv, f"out={out}", "equilibration_steps=0"]) == 0
    from quintet.atomistic.datasets import TrajectoryDataset

    assert len(TrajectoryDataset(out)) == 2  # as written: accepted
    out.write_text(out.read_text().replace("energy=", "energy=1", 1))
    err = cli_error(["leignn", "train", f"data.path={out}", "data.n_train=1", "data.n_val=1", "-o", str(tmp_path / "r")])
    assert "cu.extxyz" in err and "differs from the hash" in err
