"""Domain of applicability: the elements a model was trained on travel in its file; input outside them is
flagged (``in_domain``/``domain_reason``) and warned about, ``--strict`` refuses it before anything is written.

Validation function: :class:`quintet.atomistic.pipeline.Domain` (``deeprelax predict``, ``definet predict``);
the domain is written by ``deeprelax train`` and ``definet train`` (:func:`quintet.atomistic.datasets.training_domain`).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from ase.build import bulk

from quintet.atomistic.structures import write_structure
from quintet.cli import main


def _rows(path: Path) -> dict[str, dict[str, str]]:
    return {r["id"]: r for r in csv.DictReader(path.read_text().splitlines())}


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    write_structure(folder / "cu.cif", bulk("Cu", "fcc", a=3.62, cubic=True))
    mixed = bulk("Cu", "fcc", a=3.62, cubic=True)
    mixed[0].symbol = "Au"
    write_structure(folder / "cuau.cif", mixed)
    write_structure(folder / "ni.cif", bulk("Ni", "fcc", a=3.52, cubic=True))
    return folder


def test_the_model_file_records_its_training_elements(model: Path) -> None:
    d = torch.load(model, weights_only=True)
    assert d["extra"]["domain"] == {"elements": ["Cu"]}


def test_out_of_domain_inputs_are_flagged_and_warned(model: Path, inputs: Path, tmp_path: Path, capsys) -> None:
    assert main(["deeprelax", "predict", "-m", str(model), str(inputs), "-o", str(tmp_path / "o")]) == 0
    rows = _rows(tmp_path / "o" / "predictions.csv")
    assert rows["cu"]["in_domain"] == "True" and rows["cu"]["domain_reason"] == ""
    assert rows["cuau"]["in_domain"] == "False"
    assert rows["cuau"]["domain_reason"] == "elements Au not in the training set"
    assert rows["ni"]["domain_reason"] == "elements Ni not in the training set"
    assert "warning: 2 structure(s) outside the domain" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["cuau.cif", "ni.cif"])
def test_strict_refuses_before_anything_is_written(model: Path, inputs: Path, tmp_path: Path, bad: str, cli_error) -> None:
    argv = ["deeprelax", "predict", "-m", str(model), str(inputs / "cu.cif"), str(inputs / bad)]
    err = cli_error([*argv, "-o", str(tmp_path / "o"), "--strict"])
    assert f"{inputs / bad}: outside the domain of {model}" in err and "not in the training set" in err
    assert not (tmp_path / "o").exists()


def test_strict_accepts_inputs_inside_the_domain(model: Path, inputs: Path, tmp_path: Path) -> None:
    assert main(["deeprelax", "predict", "-m", str(model), str(inputs / "cu.cif"), "-o", str(tmp_path / "o"), "--strict"]) == 0
    assert _rows(tmp_path / "o" / "predictions.csv")["cu"]["in_domain"] == "True"


@pytest.fixture
def old_model(model: Path, tmp_path: Path) -> Path:
    """The same model file as written before domains were recorded (the weights' hash is unchanged)."""
    d = torch.load(model, weights_only=True)
    del d["extra"]["domain"]
    path = tmp_path / "old.pt"
    torch.save(d, path)
    return path


def test_old_model_files_leave_in_domain_empty_with_a_note(old_model: Path, inputs: Path, tmp_path: Path, capsys) -> None:
    assert main(["deeprelax", "predict", "-m", str(old_model), str(inputs / "ni.cif"), "-o", str(tmp_path / "o")]) == 0
    row = _rows(tmp_path / "o" / "predictions.csv")["ni"]
    assert row["in_domain"] == "" and "records no training domain" in row["domain_reason"]
    assert "note: " in capsys.readouterr().err


def test_strict_with_an_old_model_file_is_refused(old_model: Path, inputs: Path, tmp_path: Path, cli_error) -> None:
    err = cli_error(["deeprelax", "predict", "-m", str(old_model), str(inputs / "cu.cif"), "-o", str(tmp_path / "o"), "--strict"])
    assert "records no training domain" in err and "--strict" in err
    assert not (tmp_path / "o").exists()


def test_an_ensemble_domain_is_what_every_member_saw(model: Path) -> None:
    from quintet.atomistic.pipeline import Domain

    a = {"extra": {"domain": {"elements": ["Cu", "Ni"]}}}
    b = {"extra": {"domain": {"elements": ["Cu"]}}}
    dom = Domain.of([a, b])
    assert dom.columns(bulk("Ni"))["in_domain"] is False and dom.columns(bulk("Cu"))["in_domain"] is True
    assert Domain.of([a, {"extra": {}}]).elements is None


def test_defect_training_sets_record_their_labels(tmp_path: Path) -> None:
    from quintet.atomistic.datasets import RelaxPairDataset, training_domain

    assert main(["data", "defect-pairs", f"out={tmp_path}", "supercell=[2,2,2]", "n=2", "relax_host=false"]) == 0
    dom = training_domain(RelaxPairDataset(tmp_path / "Cu", layout="2dmd"))
    assert "Cu" in dom["elements"] and 0 in dom["defect_labels"] and len(dom["defect_labels"]) >= 2


@pytest.fixture(scope="module")
def definet_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A DefiNet model trained a few steps on synthetic MoS2 defects; returns (model file, host folder)."""
    from quintet.definet.model import DefiNetConfig
    from quintet.definet.run import DataConfig, TrainJob, train
    from quintet.definet.synthetic import write_2dmd
    from quintet.train import TrainConfig

    root = tmp_path_factory.mktemp("defects")
    write_2dmd(root, "MoS2", 10, seed=0)
    job = TrainJob(
        data=DataConfig(root=str(root)),
        model=DefiNetConfig(hidden=8, num_layers=1, num_rbf=8, cutoff=4.5, max_neighbors=None),
        train=TrainConfig(max_epochs=1, steps_per_epoch=2, batch_size=4, early_stop_patience=None, progress=False),
        out=str(root / "run"),
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QUINTET_CACHE", str(root / "cache"))
        return train(job).best_path, root / "MoS2"


def test_definet_flags_substitutions_by_unseen_elements(definet_model, tmp_path: Path, cli_error) -> None:
    import ase.io

    model, host = definet_model
    dom = torch.load(model, weights_only=True)["extra"]["domain"]
    assert {"Mo", "S"} <= set(dom["elements"]) and 0 in dom["defect_labels"]
    src = sorted((host / "CIF").glob("*_unrelaxed.cif"))[0]
    folder = tmp_path / "in"
    folder.mkdir()
    atoms = ase.io.read(src)
    write_structure(folder / "seen.cif", atoms)
    atoms[0].symbol = "Au"  # a substitution by an element the model never saw
    write_structure(folder / "unseen.cif", atoms)
    argv = ["definet", "predict", str(folder), "-m", str(model), "--pristine", str(host / "MoS2_pristine_supercell.cif")]
    assert main([*argv, "-o", str(tmp_path / "o")]) == 0
    rows = _rows(tmp_path / "o" / "predictions.csv")
    assert rows["seen"]["in_domain"] == "True"
    assert rows["unseen"]["in_domain"] == "False" and "Au" in rows["unseen"]["domain_reason"]
    err = cli_error([*argv, "-o", str(tmp_path / "strict"), "--strict"])
    assert "unseen.cif: outside the domain" in err and not (tmp_path / "strict").exists()


def test_the_one_call_api_flags_the_domain_too(model: Path) -> None:
    from quintet.deeprelax import relax

    cu, ni = relax([bulk("Cu", "fcc", a=3.62, cubic=True), bulk("Ni", "fcc", a=3.52, cubic=True)], model=model)
    assert cu.info["in_domain"] is True and ni.info["in_domain"] is False
    assert ni.info["domain_reason"] == "elements Ni not in the training set"
    assert cu.info["plausible"] in (True, False) and "plausibility_reason" in ni.info  # the relaxers' flags too
