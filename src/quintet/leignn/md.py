"""``quintet leignn md``: molecular dynamics with a trained LEIGNN model through ASE."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from quintet.atomistic.md import MDConfig, MDResult, run_md

__all__ = ["LEIGNNMDJob", "md"]


@dataclass
class LEIGNNMDJob:
    """A model file (``best.pt``, or a file written by ``quintet leignn export``), a starting structure (any format ASE reads; ``index`` picks a frame) and the MD settings.

    ``compile=true`` runs the model through ``torch.compile`` (one-off compile at the first step; about 4×
    faster steps on a 108-atom periodic cell, slower on small molecules: see docs/leignn.md). ``skin``: the
    Verlet buffer of the neighbour list, Å (rebuilt only when an atom has moved more than half of it; 0: a
    fresh list every step).
    """

    model: str = ""
    structure: str = ""
    index: int = -1
    device: str = "cpu"
    compile: bool = False
    skin: float = 0.5
    md: MDConfig = field(default_factory=MDConfig)


def _calculator(job: LEIGNNMDJob) -> tuple[Any, Callable[[torch.Tensor], None]]:
    """The calculator for ``job.model`` (a training model file or an exported TorchScript file) and
    a check that raises, naming them, for elements the model was not trained on."""
    from quintet.leignn.calc import LEIGNNCalculator
    from quintet.leignn.export import exported_calculator, is_exported

    if not is_exported(job.model):
        calc = LEIGNNCalculator.from_checkpoint(job.model, job.device, compile=job.compile, skin=job.skin)
        return calc, calc.model.check_elements
    if job.compile:
        raise ValueError(
            f"{job.model}: compile=true applies to model files, not to an exported TorchScript file"
        )
    calc = exported_calculator(job.model, job.device)
    known = set(calc.model.meta["atomic_numbers"])

    def check(z: torch.Tensor) -> None:
        from ase.data import chemical_symbols

        new = sorted(set(z.tolist()) - known)
        if new:
            names = ", ".join(chemical_symbols[int(k)] for k in new)
            raise ValueError(f"element(s) {names} were not in this model's training data ({job.model})")

    return calc, check


def md(job: LEIGNNMDJob) -> MDResult:
    """Run the MD job; see :func:`quintet.atomistic.md.run_md`.

    The frame index is resolved (``-1`` becomes the last frame's number), printed, and saved with the
    model and structure paths in ``<md.out>/run_config.yaml``, so ``quintet leignn md -c`` on that file
    repeats the run.
    """
    from quintet.atomistic.structures import read_structures
    from quintet.config import save_config

    if not job.model or not job.structure:
        raise ValueError("both model=<model file> and structure=<structure file> are required")
    calc, check = _calculator(job)
    frames = read_structures(job.structure, index=":")
    if not frames:
        raise ValueError(f"{job.structure}: no structure found")
    if not -len(frames) <= job.index < len(frames):
        raise ValueError(f"{job.structure}: index={job.index} but the file has {len(frames)} frames")
    index = job.index % len(frames)
    atoms = frames[index].copy()
    check(torch.tensor(atoms.get_atomic_numbers()))
    print(f"MD from frame {index} of {len(frames)} in {job.structure} ({len(atoms)} atoms)")
    Path(job.md.out).mkdir(parents=True, exist_ok=True)
    save_config(replace(job, index=index), Path(job.md.out) / "run_config.yaml")
    return run_md(atoms, calc, job.md)
