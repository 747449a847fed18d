"""DeepRelax and DefiNet predictions are unchanged by the move to the shared pipeline.

The reference numbers were written by the code before the move (commit 7a40ca2) for the same model
files and inputs (see tests/data/regression/README.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from quintet.atomistic.structures import read_structure
from quintet.cli import main

DATA = Path(__file__).parent / "data" / "regression"


def test_deeprelax_predict_matches_the_reference(tmp_path: Path) -> None:
    ref = np.load(DATA / "reference_7a40ca2.npz")
    assert main(["deeprelax", "predict", str(DATA / "deeprelax_in"), "-m", str(DATA / "deeprelax.pt"), "-o", str(tmp_path)]) == 0
    for k in range(3):
        got = read_structure(tmp_path / f"emt_s0_0000{k}.cif")
        np.testing.assert_allclose(got.positions, ref[f"deeprelax/emt_s0_0000{k}/positions"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got.cell[:], ref[f"deeprelax/emt_s0_0000{k}/cell"], rtol=1e-5, atol=1e-5)


def test_definet_predict_matches_the_reference(tmp_path: Path) -> None:
    ref = np.load(DATA / "reference_7a40ca2.npz")
    argv = ["definet", "predict", str(DATA / "definet_in"), "-m", str(DATA / "definet.pt")]
    assert main([*argv, "--pristine", str(DATA / "host.cif"), "-o", str(tmp_path)]) == 0
    for k in range(3):
        got = read_structure(tmp_path / f"Cu_s0_000{k}.cif")
        np.testing.assert_allclose(got.positions, ref[f"definet/Cu_s0_000{k}/positions"], rtol=1e-5, atol=1e-5)
