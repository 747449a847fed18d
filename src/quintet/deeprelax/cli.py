"""``quintet deeprelax {train,eval,calibrate,predict}``: the verbs of :mod:`quintet.deeprelax.jobs`."""

from __future__ import annotations

from typing import Any

from quintet.cli import Verb

__all__ = ["VERBS"]


def _train(job: Any) -> str:
    from quintet.deeprelax.jobs import train

    return f"best model: {train(job)}"


def _evaluate(job: Any) -> dict[str, float]:
    from quintet.deeprelax.jobs import evaluate

    return evaluate(job)


def _calibrate(job: Any) -> str:
    from quintet.deeprelax.jobs import calibrate

    res = calibrate(job)
    return (
        f"coverage {res['coverage_before']:.1%} before, nominal {res['coverage_nominal']:.1%}; "
        f"σ factor {res['uncertainty_scale']:.3g}; calibrated model: {job.out}"
    )


def _predict(job: Any) -> str:
    from quintet.deeprelax.jobs import predict

    if not job.inputs:
        raise ValueError("no inputs: pass FILE|FOLDER|GLOB arguments (or inputs=[...])")
    return f"predictions: {predict(job)}"


def _verbs() -> list[Verb]:
    from quintet.atomistic.pipeline import merge_verb
    from quintet.deeprelax.jobs import CalibrateJob, EvalJob, PredictJob, TrainJob

    finish = {"--finish-with": "finish_with", "--fmax": "fmax", "--finish-optimizer": "finish_optimizer"}
    batch = {"--batch-size": "batch_size", "--max-atoms": "max_atoms", "--compile": "compile"}
    scale = {"--shard": "shard", "--format": "output_format"}
    return [
        Verb(
            "train", "train on relaxation pairs (custom/2DMD layout, ASE db, or generated EMT pairs)",
            TrainJob, _train, out="out", seed="train.seed", device="train.accelerator",
            flags={"--data": "data.root", "--init-from": "init_from"},
            example="quintet deeprelax train --data pairs -o runs/dr train.max_time_s=1800",
        ),
        Verb(
            "eval", "coordinate/cell/volume/distance errors next to the dummy baseline",
            EvalJob, _evaluate, model="model", ensemble="ensemble", out="out",
            flags={"--data": "data.root", "--split": "split", "--finish-limit": "finish_limit", **finish, **batch},
            example="quintet deeprelax eval -m runs/dr/best.pt --data pairs --split test -o runs/dr/eval",
        ),
        Verb(
            "calibrate", "rescale the reported uncertainty so its bands hold their nominal share (held-out pairs)",
            CalibrateJob, _calibrate, model="model", out="out",
            flags={"--data": "data.root", "--split": "split", "--batch-size": "batch_size", "--max-atoms": "max_atoms"},
            example="quintet deeprelax calibrate -m runs/dr/best.pt --data pairs --split val -o runs/dr/calibrated.pt",
        ),
        Verb(
            "predict", "relax CIF/POSCAR/extxyz files in one shot (optionally finish with a calculator)",
            PredictJob, _predict, inputs="inputs", model="model", ensemble="ensemble", out="out",
            flags={**finish, **scale, "--strict": "strict", **batch},
            example="quintet deeprelax predict 'unrelaxed/*.cif' -m runs/dr/best.pt -o relaxed --finish-with chgnet",
        ),
        merge_verb("deeprelax"),
    ]  # fmt: skip


VERBS = _verbs()
