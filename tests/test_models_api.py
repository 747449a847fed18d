"""One model-file loader for every system, content hashes, pretrained names, and the one-call APIs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import quintet
from quintet.train import load_model_file, save_model
from quintet.train.checkpoint import migrate

DATA = Path(__file__).parent / "data" / "regression"


def test_load_model_dispatches_on_the_file_and_migrates_old_deeprelax_files(tmp_path: Path) -> None:
    dr, d = quintet.load_model(DATA / "deeprelax.pt")
    dn, _ = quintet.load_model(DATA / "definet.pt")
    assert type(dr).__name__ == "DeepRelax" and type(dn).__name__ == "DefiNet" and not dr.training
    assert d["extra"]["system"] == "deeprelax"
    # a file in the old DeepRelax layout (architecture under deeprelax_model, no cell scale fields)
    old = save_model(tmp_path / "old.pt", d["state_dict"], {}, extra={"deeprelax_model": d["extra"]["model"]})
    again, d2 = quintet.load_model(old)
    assert d2["extra"]["system"] == "deeprelax" and type(again).__name__ == "DeepRelax"
    assert migrate({"deeprelax_model": {"hidden": 8}}) == {
        "system": "deeprelax",
        "model": {"hidden": 8, "cell_uncertainty": False, "detach_base_cell": False, "canonical_cell": False},
    }
    # files from before the canonical basis saw cells as written; newer files keep what they say
    assert dr.cfg.canonical_cell is False and again.cfg.canonical_cell is False
    new = {"system": "deeprelax", "model": {"hidden": 8, "canonical_cell": True}}
    assert migrate(new)["model"]["canonical_cell"] is True
    # weights that do not fit the architecture name the file
    save_model(tmp_path / "bad.pt", {"x": torch.zeros(1)}, {}, extra=d2["extra"])
    with pytest.raises(ValueError, match=r"bad\.pt: its weights do not fit"):
        quintet.load_model(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="a definet model file, but a deeprelax model is needed"):
        quintet.load_model(DATA / "definet.pt", system="deeprelax")


def test_a_flipped_byte_or_an_unknown_field_is_refused(tmp_path: Path) -> None:
    d = load_model_file(DATA / "definet.pt")
    state = {k: v.clone() for k, v in d["state_dict"].items()}
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 4)
    path = save_model(tmp_path / "m.pt", state, {}, extra=d["extra"])
    raw = bytearray(path.read_bytes())
    needle = state[key].reshape(-1)[:4].numpy().tobytes()
    at = bytes(raw).find(needle)
    assert at > 0
    raw[at] ^= 0x01  # one bit of one weight
    (tmp_path / "flipped.pt").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="content hash"):
        quintet.load_model(tmp_path / "flipped.pt")
    extra = {**d["extra"], "model": {**d["extra"]["model"], "hiden": 8}}
    save_model(tmp_path / "unknown.pt", state, {}, extra=extra)
    with pytest.raises(ValueError, match=r"unknown\.pt.*hiden"):
        quintet.load_model(tmp_path / "unknown.pt")
    save_model(tmp_path / "foreign.pt", state, {}, extra={"system": "nonesuch"})
    with pytest.raises(ValueError, match="its system is 'nonesuch'"):
        quintet.load_model(tmp_path / "foreign.pt")


def test_pretrained_names_resolve_and_are_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import quintet.models as M
    from quintet.io import file_sha256

    with pytest.raises(FileNotFoundError, match="no such model file or pretrained model"):
        quintet.load_model("no-such-model")
    shipped = tmp_path / "pretrained"
    (shipped / "tiny").mkdir(parents=True)
    shutil.copy(DATA / "definet.pt", shipped / "tiny" / "model.pt")
    card = f'{{"system": "definet", "default_for": ["definet"], "sha256": "{file_sha256(DATA / "definet.pt")}"}}'
    (shipped / "tiny" / "card.json").write_text(card)
    monkeypatch.setattr(M, "PRETRAINED", shipped)
    assert M.default_model("definet") == "tiny" and M.default_model("deeprelax") is None
    assert type(quintet.load_model("tiny")[0]).__name__ == "DefiNet"
    (shipped / "tiny" / "model.pt").write_bytes((DATA / "definet.pt").read_bytes() + b"\0")
    with pytest.raises(ValueError, match=r"tiny.*reinstall"):
        quintet.load_model("tiny")


def test_deeprelax_relax_returns_the_type_it_was_given_with_uncertainty() -> None:
    from ase.build import bulk
    from pymatgen.core import Lattice, Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    import quintet.deeprelax as dr
    from quintet.atomistic.structures import read_structure

    atoms = read_structure(next((DATA / "deeprelax_in").glob("*.cif")))
    out = dr.relax(atoms, model=DATA / "deeprelax.pt")
    assert out.info["uncertainty_A"] > 0 and out.arrays["uncertainty_A"].shape == (len(atoms),)
    structure = AseAtomsAdaptor.get_structure(atoms)
    (got,) = dr.relax([structure], model=DATA / "deeprelax.pt")
    assert isinstance(got, Structure) and got.properties["uncertainty_A"] == pytest.approx(out.info["uncertainty_A"])
    np.testing.assert_allclose(got.cart_coords, out.positions, atol=1e-5)
    assert len(got.site_properties["uncertainty_A"]) == len(atoms)
    disordered = Structure(Lattice.cubic(3.6), [{"Cu": 0.5, "Au": 0.5}], [[0, 0, 0]])
    with pytest.raises(ValueError, match="disordered or partially occupied"):
        dr.relax(disordered, model=DATA / "deeprelax.pt")
    with pytest.raises(ValueError, match=r"expected an ase\.Atoms"):
        dr.relax("Cu.cif", model=DATA / "deeprelax.pt")
    assert bulk("Cu").info == {}  # inputs are not modified


def test_definet_relax_in_one_call_matches_the_predict_verb() -> None:
    import quintet.definet as dn
    from quintet.atomistic.structures import read_structure

    ref = np.load(DATA / "reference_7a40ca2.npz")
    atoms = read_structure(DATA / "definet_in" / "Cu_s0_0000_unrelaxed.cif")
    out = dn.relax(atoms, pristine=DATA / "host.cif", model=DATA / "definet.pt")
    np.testing.assert_allclose(out.get_positions(wrap=True), ref["definet/Cu_s0_0000/positions"], rtol=1e-5, atol=1e-4)
    assert out.info["n_vacancies"] + out.info["n_substitutions"] >= 1


@pytest.mark.parametrize("package", ["quintet", "quintet.train", "quintet.leignn", "quintet.deeprelax",
                                     "quintet.definet", "quintet.fedaux", "quintet.medaugment"])
def test_no_api_name_is_shadowed_by_a_submodule(package: str) -> None:
    """``quintet.leignn.calculator`` must stay the function even after ``import quintet.leignn.<module>``."""
    import importlib

    mod = importlib.import_module(package)
    folder = Path(mod.__file__).parent
    clashes = [n for n in mod.__all__ if (folder / f"{n}.py").is_file() or (folder / n).is_dir()]
    assert clashes == []


def test_packages_expose_their_api_lazily() -> None:
    import quintet.leignn
    import quintet.train

    assert callable(quintet.leignn.calculator) and "calculator" in dir(quintet.leignn)
    assert quintet.train.save_model is save_model
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        quintet.leignn.nope  # noqa: B018


def test_predict_verbs_use_the_shipped_default_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import quintet.models as M
    from quintet.cli import main
    from quintet.io import file_sha256, read_csv

    shipped = tmp_path / "pretrained"
    for name, system in (("dr-tiny", "deeprelax"), ("dn-tiny", "definet")):
        (shipped / name).mkdir(parents=True)
        shutil.copy(DATA / f"{system}.pt", shipped / name / "model.pt")
        card = f'{{"system": "{system}", "default_for": ["{system}"], "sha256": "{file_sha256(DATA / f"{system}.pt")}"}}'
        (shipped / name / "card.json").write_text(card)
    monkeypatch.setattr(M, "PRETRAINED", tmp_path / "nothing_installed")
    assert main(["deeprelax", "predict", str(DATA / "deeprelax_in"), "-o", str(tmp_path / "dr")]) == 1
    assert not (tmp_path / "dr").exists()
    monkeypatch.setattr(M, "PRETRAINED", shipped)
    assert main(["deeprelax", "predict", str(DATA / "deeprelax_in"), "-o", str(tmp_path / "dr")]) == 0
    assert len(read_csv(tmp_path / "dr" / "predictions.csv")) == 3
    assert "model: dr-tiny" in (tmp_path / "dr" / "config.yaml").read_text()
    argv = ["definet", "predict", str(DATA / "definet_in"), "--pristine", str(DATA / "host.cif"), "-o", str(tmp_path / "dn")]
    assert main(argv) == 0 and len(read_csv(tmp_path / "dn" / "predictions.csv")) == 3
    assert main(["models"]) == 0


def test_the_shipped_models_load_verify_and_are_the_predict_defaults() -> None:
    import quintet.models as M

    shipped = M.shipped_models()
    assert {"definet-2d", "deeprelax-bulk"} <= set(shipped)
    assert M.default_model("definet") == "definet-2d" and M.default_model("deeprelax") == "deeprelax-bulk"
    for name, card in shipped.items():
        model, d = quintet.load_model(name)  # the file matches its card's SHA-256 and its own weight hash
        assert d["extra"]["system"] == card["system"] and d["extra"]["domain"]["elements"]
        assert not model.training


def test_the_shipped_deeprelax_model_does_not_depend_on_the_cell_setting() -> None:
    """The shipped check (atomistic.testing) on deeprelax-bulk: a rattled perovskite and a rattled wurtzite written
    with cell rows a1, a2, a1 + a3 or a1 + a2, a2, a3 relax to the same crystal as in their plain cells."""
    from ase import Atoms
    from ase.build import bulk

    import quintet.deeprelax as dr
    from quintet.atomistic.testing import assert_cell_setting_consistent

    rng = np.random.default_rng(0)
    perovskite = Atoms("SrTiO3", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5],
                       [0, 0.5, 0.5]], cell=[3.9, 3.9, 3.9], pbc=True)  # fmt: skip
    for atoms in (perovskite, bulk("ZnO", "wurtzite", a=3.25, c=5.2)):
        atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
        for t in (((1, 0, 0), (0, 1, 0), (1, 0, 1)), ((1, 1, 0), (0, 1, 0), (0, 0, 1))):
            assert_cell_setting_consistent(lambda a: dr.relax(a, model="deeprelax-bulk"), atoms, t, atol=1e-3)
