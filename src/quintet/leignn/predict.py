"""``quintet leignn predict``: energy, forces and stress of every structure in a file, folder or glob.

The shared inference pipeline (:mod:`quintet.atomistic.pipeline`, the same as DeepRelax's and DefiNet's
``predict``) finds the inputs, batches them, keeps the resumable ``predictions.csv`` and writes each result
as ``<out>/<id>.extxyz`` carrying the predicted energy, forces and (conservative models of periodic cells)
stress, which ASE, MACE and NequIP tools read as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = ["PredictJob", "predict"]


@dataclass
class PredictJob:
    """``quintet leignn predict``.

    Attributes:
        model: a model file, pretrained name or exported TorchScript file (``quintet leignn export``).
        inputs: structure files, folders or globs (extxyz/traj/db frames each give one structure).
        out: output folder (``<id>.extxyz`` with the predictions, ``predictions.csv``, ``config.yaml``).
        device: ``cpu`` or ``cuda``.
        batch_size / max_atoms: batch bounds of the pipeline.
        output_format: ``extxyz`` (the only format that carries forces and stress).
        resume: skip structures already listed with their output present.
        shard: ``K/N`` for the tasks of a cluster job array (``quintet leignn merge`` joins the tables).
    """

    model: str = ""
    inputs: list[str] = field(default_factory=list)
    out: str = "leignn_predictions"
    device: str = "cpu"
    batch_size: int = 32
    max_atoms: int | None = 4096
    output_format: Literal["extxyz"] = "extxyz"
    resume: bool = True
    shard: str | None = None


def _record(job: PredictJob) -> dict[str, Any]:
    from quintet.io import file_sha256
    from quintet.models import resolve_model

    return {"model": file_sha256(resolve_model(job.model)), "output_format": job.output_format}


def _labelled(items: list[Any], calc: Any) -> list[tuple[Any, dict[str, Any]]]:
    """Each structure with the model's energy, forces (and stress) on a single-point calculator."""
    from ase.calculators.singlepoint import SinglePointCalculator

    out = []
    for item in items:
        atoms = item.atoms.copy()
        atoms.calc = calc
        results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        if "stress" in calc.implemented_properties and atoms.pbc.all():
            results["stress"] = atoms.get_stress()
        atoms.calc = SinglePointCalculator(atoms, **results)
        cols = {
            "energy_eV": round(float(results["energy"]), 6),
            "energy_per_atom_eV": round(float(results["energy"]) / len(atoms), 6),
            "max_force_eV_A": round(float(np.linalg.norm(results["forces"], axis=1).max()), 6),
        }
        out.append((atoms, cols))
    return out


def predict(job: PredictJob) -> Path:
    """Predict every input; returns the path of ``predictions.csv``."""
    from quintet.atomistic.pipeline import predict_job
    from quintet.leignn.calc import calculator

    if not job.model:
        raise ValueError("no model: pass -m <best.pt or exported .pt>")

    def setup() -> Any:
        calc = calculator(job.model, job.device)
        return (lambda chunk: _labelled(chunk, calc)), None

    return predict_job(job, _record, setup, "leignn predict", relaxes=False)
