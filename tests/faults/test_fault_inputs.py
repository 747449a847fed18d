"""Numeric files, output paths, data paths, structure specs, oracles and configs a user can get wrong:
each ends in one error line naming the file or key (exit code 1, no traceback) and nothing is written.

Validation functions: ``quintet.atomistic.datasets._npz_arrays`` (``TrajectoryDataset``: ``leignn train``,
``data info/split``), :func:`quintet.io.check_output_path` (every verb with an ``out`` key, before it runs),
``RelaxPairDataset`` (``--data``), ``oracle.build_structure`` (``data md``), ``oracle.get_calculator``
(``data md``, ``data relax-pairs``, ``--finish-with``), :func:`quintet.config.load_config` (every verb).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from quintet.atomistic.datasets import TrajectoryDataset

Z = np.array([29, 29])
R = np.array([[[0.0, 0.0, 0.0], [0.0, 0.0, 2.5]]] * 2)

NPZ = {
    "not a zip": (lambda p: p.write_bytes(b"PK\x03\x04 garbage"), "not a readable npz file"),
    "empty": (lambda p: p.write_bytes(b""), "not a readable npz file"),
    "truncated zip": (lambda p: (np.savez(p, R=R, z=Z), p.write_bytes(p.read_bytes()[:60])), "not a readable npz"),
    "pickled object array": (lambda p: np.savez(p, R=np.array([R], dtype=object), z=Z), "never loads"),
    "string array": (lambda p: np.savez(p, R=R, z=np.array(["Cu", "Cu"])), "not numeric"),
    "missing z": (lambda p: np.savez(p, R=R), "needs keys R and z"),
    "wrong R shape": (lambda p: np.savez(p, R=np.zeros((2, 3, 2)), z=Z), "R has shape"),
    "NaN energy": (lambda p: np.savez(p, R=R, z=Z, E=np.array([0.0, np.nan])), "(frame 1): non-finite (NaN/inf) E"),
    "inf force": (
        lambda p: np.savez(p, R=R, z=Z, F=np.where(np.arange(12).reshape(2, 2, 3) == 7, np.inf, 0.0)),
        "(frame 1): non-finite (NaN/inf) F",
    ),
    "NaN position": (lambda p: np.savez(p, R=np.where(R == 2.5, np.nan, R), z=Z), "non-finite (NaN/inf) R"),
    "energies for another frame count": (lambda p: np.savez(p, R=R, z=Z, E=np.zeros(3)), "E has 3 values"),
}


@pytest.mark.parametrize("case", sorted(NPZ))
def test_malformed_npz_is_refused_naming_the_file_never_suggesting_pickle(case: str, tmp_path: Path) -> None:
    make, message = NPZ[case]
    path = tmp_path / "traj.npz"
    make(path)
    with pytest.raises(ValueError) as err:
        TrajectoryDataset(path)
    text = str(err.value)
    assert text.startswith(str(path)) and message in text and "allow_pickle=True" not in text


def test_npz_members_are_never_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "evil.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("R.npy", b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, 'shape': (1,), }" + b" " * 50)
        zf.writestr("z.npy", b"")
    with pytest.raises(ValueError, match=r"evil\.npz"):
        TrajectoryDataset(path)


# ---- output paths ---------------------------------------------------------------------------------------

OUT_VERBS = {
    "deeprelax predict": lambda m, cif, o: ["deeprelax", "predict", "-m", str(m), str(cif), "-o", o],
    "deeprelax train": lambda m, cif, o: ["deeprelax", "train", "--data", str(cif.parent), "-o", o],
    "definet predict": lambda m, cif, o: ["definet", "predict", "-m", str(m), str(cif), "-o", o, "--pristine", str(cif)],
    "medaugment expand": lambda m, cif, o: ["medaugment", "expand", str(cif.parent), "-o", o],
    "data relax-pairs": lambda m, cif, o: ["data", "relax-pairs", f"out={o}", "n=1"],
    "data md (a file output)": lambda m, cif, o: ["data", "md", f"out={o}/md.extxyz", "steps=2", "stride=1"],
}


@pytest.mark.parametrize("verb", sorted(OUT_VERBS))
@pytest.mark.parametrize("where", ["is a file", "under a file"])
def test_output_that_is_or_lies_under_a_file_is_refused_before_running(
    verb: str, where: str, model: Path, cu_cif: Path, tmp_path: Path, cli_error
) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("keep me")
    out = str(blocker) if where == "is a file" else str(blocker / "sub")
    if verb.startswith("data md") and where == "is a file":
        out = str(blocker)  # md.extxyz under the file
    err = cli_error(OUT_VERBS[verb](model, cu_cif, out))
    assert "the output" in err and str(blocker) in err and "give a folder path" in err
    assert blocker.read_text() == "keep me"


# ---- data paths, structure specs, oracles -------------------------------------------------------------------


@pytest.mark.parametrize("system", ["deeprelax", "definet"])
def test_data_given_a_file_says_so(system: str, cu_cif: Path, tmp_path: Path, cli_error) -> None:
    err = cli_error([system, "train", "--data", str(cu_cif), "-o", str(tmp_path / "run")])
    assert f"{cu_cif}: a file" in err or (f"{cu_cif}" in err and "folder" in err)
    assert "does not exist" not in err and "no such" not in err


@pytest.mark.parametrize(
    "spec,message",
    [
        ("Xx:fcc:3.6", "unknown element 'Xx'"),
        ("Qq2:mx2", "unknown element 'Qq'"),
        ("Cu:fcx:3.6", "unknown crystal 'fcx'"),
        ("Cu:fcc:abc", "could not convert string to float"),
        ("XxO3:perovskite", "perovskite 'XxO3'"),
        ("Xx", "neither a file"),
        ("missing.cif", "no such structure file"),
    ],
)
def test_md_bad_structure_spec_is_one_line_and_writes_nothing(
    spec: str, message: str, tmp_path: Path, cli_error
) -> None:
    err = cli_error(["data", "md", f"structure={spec}", f"out={tmp_path / 'md' / 'x.extxyz'}", "steps=2", "stride=1"])
    assert spec.split(":")[0] in err and message in err
    assert not (tmp_path / "md").exists()


@pytest.mark.parametrize("oracle", ["collections:OrderedDict", "pathlib:Path", "nope.module:Calc", "ase:NoSuchThing"])
@pytest.mark.parametrize("verb", ["relax-pairs", "md"])
def test_an_oracle_that_is_not_a_calculator_is_refused_and_leaves_nothing(
    oracle: str, verb: str, tmp_path: Path, cli_error
) -> None:
    out = tmp_path / "gen"
    target = f"out={out}" if verb == "relax-pairs" else f"out={out / 'md.extxyz'}"
    extra = ["n=1"] if verb == "relax-pairs" else ["steps=2", "stride=1"]
    err = cli_error(["data", verb, f"oracle={oracle}", target, *extra])
    assert oracle in err
    assert not out.exists()


# ---- non-finite config values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "md", "timestep_fs=nan"],
        ["data", "md", "temperature_K=inf"],
        ["data", "relax-pairs", "rattle=nan"],
        ["deeprelax", "predict", "fmax=nan", "x.cif"],
        ["deeprelax", "predict", "min_distance=-inf", "x.cif"],
        ["definet", "predict", "tol=nan", "x.cif"],
    ],
)
def test_non_finite_config_values_are_refused_naming_the_key(argv: list[str], tmp_path: Path, cli_error) -> None:
    key = argv[2].split("=")[0]
    err = cli_error([*argv, f"out={tmp_path / 'o'}"] if argv[0] == "data" else [*argv, "-o", str(tmp_path / "o")])
    assert key in err and ("finite" in err or "nan" in err.lower())
    assert not (tmp_path / "o").exists()
