"""The two documented commands that failed before the one grammar, run end to end.

``quintet fedaux deploy-local ... --workdir runs/deploy`` was rejected and crashed without the flag;
``quintet deeprelax predict --finish-with sevenn`` was offered by ``--help`` and failed with "unknown oracle".
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from quintet.cli import main
from quintet.io import read_csv

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data" / "regression"


def _documented(prefix: str) -> list[str]:
    """The README's command line that starts with ``prefix``, as argv (without ``quintet``)."""
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith(prefix):
            return shlex.split(line, comments=True)[1:]
    raise AssertionError(f"README shows no command starting with {prefix!r}")


@pytest.mark.slow
def test_deeprelax_predict_finishes_with_sevennet(tmp_path: Path) -> None:
    pytest.importorskip("sevenn", reason="SevenNet is in the 'oracles' extra")
    one = tmp_path / "in"
    one.mkdir()
    (one / "cu.cif").write_bytes((DATA / "deeprelax_in" / "emt_s0_00000_unrelaxed.cif").read_bytes())
    argv = ["deeprelax", "predict", str(one), "-m", str(DATA / "deeprelax.pt"), "--finish-with", "sevenn"]
    assert main([*argv, "--fmax", "0.1", "-o", str(tmp_path / "out")]) == 0
    (row,) = read_csv(tmp_path / "out" / "predictions.csv")
    assert row["finish_with"] == "sevenn" and row["finish_converged"] == "True" and float(row["finish_fmax"]) <= 0.1
    assert (tmp_path / "out" / row["finished_output"]).is_file()


@pytest.mark.integration
def test_documented_deploy_local_runs_on_loopback(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    argv = _documented("quintet fedaux deploy-local")
    assert argv[argv.index("-o") + 1] == "runs/deploy"
    argv[argv.index("-o") + 1] = str(tmp_path / "deploy")
    assert main(argv) == 0
    assert (tmp_path / "deploy" / "summary.json").is_file() and (tmp_path / "deploy" / "logs").is_dir()
    assert len(list((tmp_path / "deploy" / "models").glob("client_*.pt"))) == 4
