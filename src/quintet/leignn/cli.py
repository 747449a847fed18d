"""``quintet leignn train | eval | export | md``: verbs of :mod:`quintet.leignn.run`, ``.export`` and ``.md``."""

from __future__ import annotations

from typing import Any

from quintet.cli import Verb

__all__ = ["VERBS"]


def _train(job: Any) -> str:
    from quintet.leignn.run import train

    return f"best model: {train(job)}"


def _evaluate(job: Any) -> str:
    from quintet.leignn.run import evaluate

    res = evaluate(job)
    return f"metrics: {res.json_path}  parity plot: {res.parity_png}"


def _export(job: Any) -> str:
    from quintet.leignn.export import export

    return f"TorchScript model: {export(job)} (load it with torch.jit.load; docs/leignn.md, section Export)"


def _md(job: Any) -> Any:
    from quintet.leignn.md import md

    res = md(job)
    print(f"{res.steps_done} steps ({res.steps_per_second:.1f} steps/s), {res.reason}")
    return res


def _predict(job: Any) -> str:
    from quintet.leignn.predict import predict

    return f"predictions: {predict(job)}"


def _verbs() -> list[Verb]:
    from quintet.atomistic.pipeline import merge_verb
    from quintet.leignn.export import ExportJob
    from quintet.leignn.md import LEIGNNMDJob
    from quintet.leignn.predict import PredictJob as LEIGNNPredictJob
    from quintet.leignn.run import EvalConfig, LEIGNNJob

    return [
        Verb("train", "train on extxyz / ASE db / MD17 npz (keys: data.*, model.*, loss.*, train.*, out, dtype, init_from)",
             LEIGNNJob, _train, out="out", seed="train.seed", device="train.accelerator",
             flags={"--data": "data.path", "--train-file": "data.train_file", "--valid-file": "data.valid_file",
                    "--test-file": "data.test_file", "--init-from": "init_from"},
             example="quintet leignn train --data aspirin.extxyz model.forces=conservative -o runs/aspirin"),
        Verb("eval", "energy/force MAE and a parity plot on a split", EvalConfig, _evaluate,
             model="model", out="out", device="device", flags={"--data": "data.path", "--split": "split"},
             example="quintet leignn eval -m runs/aspirin/best.pt --data aspirin.extxyz --split test"),
        Verb("export", "TorchScript file that runs without quintet (plain torch.jit.load), for MD codes",
             ExportJob, _export, model="model", out="out",
             example="quintet leignn export -m runs/aspirin/best.pt -o model.pt"),
        Verb("predict", "energy, forces and stress of every structure in files/folders/globs -> <id>.extxyz",
             LEIGNNPredictJob, _predict, inputs="inputs", model="model", out="out", device="device",
             flags={"--shard": "shard", "--batch-size": "batch_size"},
             example="quintet leignn predict frames.extxyz -m runs/aspirin/best.pt -o predicted"),
        merge_verb("leignn"),
        Verb("md", "NVE / NVT (Langevin, Nosé-Hoover, Berendsen) / NPT MD through ASE", LEIGNNMDJob, _md,
             inputs="structure", model="model", out="md.out", device="device", seed="md.seed",
             flags={"--compile": "compile"}, exit_code=lambda res: 1 if res.stopped_early else 0,
             example="quintet leignn md start.xyz -m best.pt md.ensemble=nve md.steps=5000"),
    ]  # fmt: skip


VERBS = _verbs()
