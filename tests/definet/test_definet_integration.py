"""Integration on the CHGNet-relaxed 2D defect sets in ../shared (skipped when absent)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from quintet.atomistic import keys as K
from quintet.atomistic.defects import SUBSTITUTION, VACANCY, label_defects
from quintet.atomistic.structures import read_structure
from quintet.definet.model import DefiNetConfig
from quintet.definet.run import DataConfig, TrainJob, load_pairs, train
from quintet.train import TrainConfig

pytestmark = pytest.mark.integration

HOSTS = ("MoS2", "WSe2", "MoSe2", "hBN")


@pytest.mark.parametrize("host", HOSTS)
def test_labels_match_meta_and_the_dataset(shared_data, host, tmp_path):
    folder = shared_data / "materials" / "defects2d" / host
    pristine = read_structure(folder / f"{host}_pristine_supercell.cif")
    meta = list(csv.DictReader((folder / "meta.csv").read_text().splitlines()))[:8]
    ds = load_pairs(DataConfig(root=str(folder), split_dir=str(tmp_path)), None, None)
    index = {i: k for k, i in enumerate(ds.ids)}
    for row in meta:
        atoms = read_structure(folder / "CIF" / f"{row['atoms_id']}_unrelaxed.cif")
        lab = label_defects(
            atoms.numbers,
            atoms.positions,
            np.asarray(atoms.cell),
            atoms.pbc,
            pristine.numbers,
            pristine.positions,
            np.asarray(pristine.cell),
        )
        kinds = row["defects"].split(";")
        assert lab.num_vacancies == sum(k.startswith("vac") for k in kinds), row
        assert int((lab.labels == SUBSTITUTION).sum()) == sum(k.startswith("sub") for k in kinds), row
        rec = ds[index[row["atoms_id"]]]
        assert rec[K.DEFECT].tolist() == lab.labels.tolist()
        np.testing.assert_allclose(
            rec[K.POSITIONS][lab.labels == VACANCY].numpy(), lab.positions[lab.labels == VACANCY], atol=1e-4
        )


def test_short_training_on_real_mos2_beats_the_dummy(shared_data, tmp_path):
    job = TrainJob(
        data=DataConfig(
            root=str(shared_data / "materials" / "defects2d"),
            hosts=["MoS2"],
            split_dir=str(tmp_path / "splits"),
            max_train=96,
        ),
        model=DefiNetConfig(hidden=16, num_layers=2, num_rbf=12),
        train=TrainConfig(
            max_epochs=4,
            steps_per_epoch=20,
            batch_size=8,
            lr=2e-3,
            ema_decay=0.0,
            early_stop_patience=None,
            monitor="val/coord_mae",
            progress=False,
        ),
        out=str(tmp_path / "run"),
    )
    torch.manual_seed(0)
    res = train(job)
    best = min(r["val/coord_mae"] for r in res.history)
    assert best < 0.9 * res.history[0]["val/dummy_coord_mae"]
