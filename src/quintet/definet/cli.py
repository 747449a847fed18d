"""``quintet definet <verb>``: train, predict, eval, label.

Every verb is a thin wrapper over one typed function (:mod:`quintet.definet.run`,
:mod:`quintet.definet.predict`, :mod:`quintet.definet.labelling`) taking a dataclass config built
from defaults ← ``-c file.yaml`` ← ``key=value`` overrides ← the named options below. Positional
arguments without ``=`` are input structure files/folders (predict, label).
"""

from __future__ import annotations

import argparse

from quintet.cli import COMPILE_HELP, add_config_arguments

__all__ = ["configure"]


def _split_positionals(items: list[str]) -> tuple[list[str], list[str]]:
    overrides = [i for i in items if "=" in i]
    inputs = [i for i in items if "=" not in i]
    return inputs, overrides


def _options(args: argparse.Namespace, names: dict[str, str]) -> list[str]:
    out = []
    for attr, key in names.items():
        val = getattr(args, attr, None)
        if val is not None:
            out.append(f"{key}={val}")
    return out


def _host_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pristine", default=None, help="pristine supercell file (CIF/POSCAR/extxyz)")
    p.add_argument("--unit-cell", default=None, help="pristine unit-cell file (with --supercell)")
    p.add_argument("--supercell", default=None, help="repetitions of the unit cell, e.g. 5,5,1")
    p.add_argument("--tol", type=float, default=None, help="site-matching tolerance, Å (default 0.3)")


def _supercell(args: argparse.Namespace) -> list[str]:
    if args.supercell is None:
        return []
    parts = [s for s in str(args.supercell).replace("x", ",").split(",") if s.strip()]
    return [f"supercell=[{','.join(parts)}]"]


def _inputs_override(inputs: list[str]) -> list[str]:
    return [f"inputs=[{','.join(repr(i) for i in inputs)}]"] if inputs else []


def _train(args: argparse.Namespace) -> int:
    from quintet.config import load_config
    from quintet.definet.run import TrainJob, train

    over = list(args.overrides) + _options(args, {"data": "data.root", "out": "out_dir"})
    job = load_config(TrainJob, args.config, over)
    res = train(job)
    print(f"best model: {res.best_path} (best {job.train.monitor} = {res.best_metric})")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from quintet.config import load_config
    from quintet.definet.predict import PredictJob, predict

    inputs, over = _split_positionals(list(args.overrides))
    over += _inputs_override(inputs) + _supercell(args)
    over += _options(
        args,
        {
            "model": "model",
            "pristine": "pristine",
            "unit_cell": "unit_cell",
            "tol": "tol",
            "out": "out_dir",
            "finish_with": "finish_with",
            "finish_optimizer": "finish_optimizer",
            "batch_size": "batch_size",
            "max_atoms": "max_atoms",
        },
    )
    if args.compile:
        over.append("compile=true")
    job = load_config(PredictJob, args.config, over)
    path = predict(job)
    print(f"predictions: {path}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    import json

    from quintet.config import load_config
    from quintet.definet.predict import EvalJob, evaluate_model

    over = list(args.overrides) + _options(
        args,
        {
            "model": "model",
            "data": "data.root",
            "split": "split",
            "out": "out_dir",
            "finish_with": "finish_with",
            "finish_optimizer": "finish_optimizer",
            "finish_limit": "finish_limit",
        },
    )
    if args.compile:
        over.append("compile=true")
    job = load_config(EvalJob, args.config, over)
    summary = evaluate_model(job)
    print(json.dumps(summary, indent=2))
    return 0


def _label(args: argparse.Namespace) -> int:
    from quintet.config import load_config
    from quintet.definet.labelling import LabelJob, label_files

    inputs, over = _split_positionals(list(args.overrides))
    over += _inputs_override(inputs) + _supercell(args)
    over += _options(args, {"pristine": "pristine", "unit_cell": "unit_cell", "tol": "tol", "out": "out_dir"})
    job = load_config(LabelJob, args.config, over)
    rows = label_files(job)
    for r in rows:
        print(
            f"{r['id']}: {r['n_substitutions']} substitution(s) {r['substitutions']}, "
            f"{r['n_vacancies']} vacancy(ies) {r['vacancies']}"
        )
    return 0


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``train``, ``predict``, ``eval`` and ``label`` verbs."""
    subs = parser.add_subparsers(dest="verb", metavar="verb")

    p = subs.add_parser("train", help="train on 2DMD-layout host folders (several hosts at once)")
    add_config_arguments(p)
    p.add_argument("--data", default=None, help="folder of host folders (data.root)")
    p.add_argument("--out", default=None, help="run folder (out_dir)")
    p.set_defaults(func=_train)

    p = subs.add_parser("predict", help="one-shot relaxed structures for defect files/folders")
    add_config_arguments(p)
    p.add_argument("--model", default=None, help="model file (best.pt)")
    _host_options(p)
    p.add_argument("--out", default=None, help="output folder")
    p.add_argument("--finish-with", default=None, choices=["none", "emt", "chgnet", "sevenn"])
    p.add_argument("--finish-optimizer", default=None, choices=["fire", "bfgs"], help="default fire")
    p.add_argument("--batch-size", type=int, default=None, help="most structures per batch (default 8)")
    p.add_argument("--max-atoms", type=int, default=None, help="most atoms per batch (default 4096)")
    p.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    p.set_defaults(func=_predict)

    p = subs.add_parser("eval", help="coordinate MAE, local MAE near defects and oracle steps vs the dummy")
    add_config_arguments(p)
    p.add_argument("--model", default=None, help="model file (best.pt)")
    p.add_argument("--data", default=None, help="folder of host folders (data.root)")
    p.add_argument("--split", default=None, choices=["train", "val", "test", "all"])
    p.add_argument("--out", default=None, help="output folder")
    p.add_argument("--finish-with", default=None, choices=["none", "emt", "chgnet", "sevenn"])
    p.add_argument("--finish-optimizer", default=None, choices=["fire", "bfgs"], help="default fire")
    p.add_argument("--finish-limit", type=int, default=None, help="structures relaxed by the oracle")
    p.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    p.set_defaults(func=_eval)

    p = subs.add_parser("label", help="label vacancies/substitutions against the pristine host")
    add_config_arguments(p)
    _host_options(p)
    p.add_argument("--out", default=None, help="write labels.csv and labelled extxyz files here")
    p.set_defaults(func=_label)
