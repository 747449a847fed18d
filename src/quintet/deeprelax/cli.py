"""``quintet deeprelax {train,eval,predict}``: thin wrappers over :mod:`quintet.deeprelax.jobs`."""

from __future__ import annotations

import argparse
import json

from quintet.cli import COMPILE_HELP, add_config_arguments

__all__ = ["configure"]


def _train(args: argparse.Namespace) -> int:
    from quintet.config import load_config
    from quintet.deeprelax.jobs import TrainJob, train

    job = load_config(TrainJob, args.config, args.overrides)
    path = train(job)
    print(f"best model: {path}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from quintet.config import load_config
    from quintet.deeprelax.jobs import EvalJob, evaluate

    over = list(args.overrides)
    if args.model:
        over.append(f"model={args.model[0]}")
    if args.compile:
        over.append("compile=true")
    job = load_config(EvalJob, args.config, over)
    job.ensemble = list(job.ensemble) + args.model[1:]
    summary = evaluate(job)
    print(json.dumps(summary, indent=2))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from quintet.config import load_config
    from quintet.deeprelax.jobs import PredictJob, predict

    over = list(args.overrides)
    if args.model:
        over.append(f"model={args.model[0]}")
    for flag, key in (
        ("out", "out"),
        ("finish_with", "finish_with"),
        ("fmax", "fmax"),
        ("finish_optimizer", "finish_optimizer"),
        ("output_format", "output_format"),
    ):
        val = getattr(args, flag)
        if val is not None:
            over.append(f"{key}={val}")
    if args.batch_size is not None:
        over.append(f"batch_size={args.batch_size}")
    if args.max_atoms is not None:
        over.append(f"max_atoms={args.max_atoms}")
    if args.compile:
        over.append("compile=true")
    job = load_config(PredictJob, args.config, over)
    job.ensemble = list(job.ensemble) + args.model[1:]
    if args.input:
        job.inputs = list(job.inputs) + list(args.input)
    if not job.inputs:
        raise ValueError("no inputs: pass -i FILE|FOLDER|GLOB (repeatable) or inputs=[...]")
    path = predict(job)
    print(f"predictions: {path}")
    return 0


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``train``, ``eval`` and ``predict`` verbs."""
    sub = parser.add_subparsers(dest="verb", metavar="{train,eval,predict}")

    p = sub.add_parser(
        "train", help="train on relaxation pairs (custom/2DMD layout, ASE db, or generated EMT pairs)"
    )
    add_config_arguments(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="coordinate/cell/volume/distance errors next to the dummy baseline")
    p.add_argument(
        "-m", "--model", action="append", default=[],
        help="model file (best.pt); repeat for a deep ensemble (members trained with other train.seed)",
    )  # fmt: skip
    p.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    add_config_arguments(p)
    p.set_defaults(func=_eval)

    p = sub.add_parser(
        "predict", help="relax CIF/POSCAR/extxyz files in one shot (optionally finish with a calculator)"
    )
    p.add_argument(
        "-m", "--model", action="append", default=[],
        help="model file (best.pt); repeat for a deep ensemble (members trained with other train.seed)",
    )  # fmt: skip
    p.add_argument("-i", "--input", action="append", default=[], help="file, folder or glob (repeatable)")
    p.add_argument("-o", "--out", default=None, help="output folder (relaxed CIFs + predictions.csv)")
    p.add_argument(
        "--finish-with", dest="finish_with", choices=["none", "emt", "chgnet", "sevenn"], default=None
    )
    p.add_argument(
        "--fmax", type=float, default=None, help="force threshold of the finishing relaxation, eV/Å"
    )
    p.add_argument(
        "--finish-optimizer", dest="finish_optimizer", choices=["fire", "bfgs"], default=None,
        help="optimizer of the finishing relaxation (default fire)",
    )  # fmt: skip
    p.add_argument(
        "--format", dest="output_format", choices=["cif", "extxyz"], default=None,
        help="output files (default cif); extxyz also carries each atom's uncertainty (array uncertainty_A)",
    )  # fmt: skip
    p.add_argument(
        "--batch-size",
        dest="batch_size",
        type=int,
        default=None,
        help="most structures per batch (default 64)",
    )
    p.add_argument(
        "--max-atoms", dest="max_atoms", type=int, default=None, help="most atoms per batch (default 2048)"
    )
    p.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    add_config_arguments(p)
    p.set_defaults(func=_predict)
