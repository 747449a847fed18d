"""Model files: edited, truncated, foreign or malicious files are refused naming the file; nothing runs code.

Validation function: :func:`quintet.train.load_model_file` (``weights_only=True`` and the ``state_sha256``
content hash), behind :func:`quintet.load_model`, so behind every verb that takes ``-m``.
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
