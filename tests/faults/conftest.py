"""Shared inputs of the fault suite: a tiny DeepRelax model (with its training domain), clean structures,
and ``cli_error``, which runs the CLI in this process and checks it failed cleanly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch


@pytest.fixture
def cli_error(capsys: pytest.CaptureFixture[str]) -> Callable[[list[str]], str]:
    """``cli_error(argv)`` runs ``quintet argv`` in this process: it must exit 1 with an error line naming
    what is wrong and no traceback; returns stderr."""
    from quintet.cli import main

    def run(argv: list[str]) -> str:
        capsys.readouterr()
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 1, err
        assert "Traceback" not in err and "error: " in err
        return err

    return run


@pytest.fixture(scope="session")
def cu_pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four strained, rattled Cu cells and their EMT minima (DeepRelax custom layout)."""
    from quintet.atomistic.oracle import RelaxPairsConfig, make_relax_pairs

    out = tmp_path_factory.mktemp("faults") / "pairs"
    make_relax_pairs(
        RelaxPairsConfig(
            out=out, n=4, prototypes=["Cu:fcc:3.61"], elements=[], substitute_fraction=0.0, strain=0.03,
            rattle=0.05, cell_filter="unitcell", oracle="emt", seed=3,
        ),
        progress=False,
    )  # fmt: skip
    out.chmod(0o555)  # the suite checks that nothing writes into data
    return out


@pytest.fixture(scope="session")
def model(cu_pairs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny DeepRelax model file trained one epoch on Cu (its domain: elements ["Cu"])."""
    from quintet.deeprelax.jobs import DataConfig, TrainJob, train
    from quintet.deeprelax.model import ModelConfig
    from quintet.train import TrainConfig

    base = tmp_path_factory.mktemp("model")
    job = TrainJob(
        data=DataConfig(root=str(cu_pairs), layout="custom", fractions=(1.0, 0.0, 0.0)),
        model=ModelConfig(hidden=8, num_layers=1, num_rbf=8),
        train=TrainConfig(
            max_epochs=1, batch_size=4, progress=False, early_stop_patience=None, accelerator="cpu",
            monitor="train/loss",
        ),
        out=str(base / "run"),
    )  # fmt: skip
    job.loss.solve_in_val = False
    torch.manual_seed(0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QUINTET_CACHE", str(base / "cache"))
        return train(job)


@pytest.fixture
def cu_cif(tmp_path: Path) -> Path:
    """One clean 4-atom Cu cell as CIF, in its own folder."""
    from ase.build import bulk

    from quintet.atomistic.structures import write_structure

    folder = tmp_path / "in"
    folder.mkdir()
    return write_structure(folder / "cu.cif", bulk("Cu", "fcc", a=3.62, cubic=True))
