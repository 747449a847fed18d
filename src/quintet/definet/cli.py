"""``quintet definet <verb>``: train, predict, eval, label.

Every verb is one typed job (:mod:`quintet.definet.run`, :mod:`quintet.definet.predict`,
:mod:`quintet.definet.labelling`) built by the shared grammar of :mod:`quintet.cli`.
"""

from __future__ import annotations

from typing import Any

from quintet.cli import Verb

__all__ = ["VERBS"]


def _train(job: Any) -> str:
    from quintet.definet.run import train

    res = train(job)
    return f"best model: {res.best_path} (best {job.train.monitor} = {res.best_metric})"


def _predict(job: Any) -> str:
    from quintet.definet.predict import predict

    return f"predictions: {predict(job)}"


def _evaluate(job: Any) -> dict[str, Any]:
    from quintet.definet.predict import evaluate_model

    return evaluate_model(job)


def _label(job: Any) -> str:
    from quintet.definet.labelling import label_files

    return "\n".join(
        f"{r['id']}: {r['n_substitutions']} substitution(s) {r['substitutions']}, "
        f"{r['n_vacancies']} vacancy(ies) {r['vacancies']}"
        for r in label_files(job)
    )


def _verbs() -> list[Verb]:
    from quintet.atomistic.pipeline import merge_verb
    from quintet.definet.labelling import LabelJob
    from quintet.definet.predict import EvalJob, PredictJob
    from quintet.definet.run import TrainJob

    host = {"--pristine": "pristine", "--unit-cell": "unit_cell", "--supercell": "supercell", "--tol": "tol"}
    finish = {"--finish-with": "finish_with", "--finish-optimizer": "finish_optimizer", "--fmax": "fmax"}
    batch = {"--batch-size": "batch_size", "--max-atoms": "max_atoms", "--compile": "compile"}
    scale = {"--shard": "shard", "--format": "output_format"}
    return [
        Verb("train", "train on 2DMD-layout host folders (several hosts at once)", TrainJob, _train,
             out="out", seed="train.seed", device="train.accelerator", flags={"--data": "data.root"},
             example="quintet definet train --data ../shared/data/materials/defects2d -o runs/definet"),
        Verb("predict", "one-shot relaxed structures for defect files/folders", PredictJob, _predict,
             inputs="inputs", model="model", out="out", flags={**host, **finish, **scale, "--strict": "strict", **batch},
             example="quintet definet predict my_defects/ -m runs/definet/best.pt --pristine MoS2_supercell.cif"),
        Verb("eval", "coordinate MAE, local MAE near defects and oracle steps vs the dummy", EvalJob, _evaluate,
             model="model", out="out",
             flags={"--data": "data.root", "--split": "split", "--finish-limit": "finish_limit", **finish, **batch}),
        Verb("label", "label vacancies/substitutions against the pristine host", LabelJob, _label,
             inputs="inputs", out="out", flags=host,
             example="quintet definet label my_defect.cif --unit-cell MoS2.cif --supercell 5,5,1"),
        merge_verb("definet"),
    ]  # fmt: skip


VERBS = _verbs()
