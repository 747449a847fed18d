"""``quintet leignn train | eval | md`` — thin wrappers over :mod:`quintet.leignn.run` and ``md``."""

from __future__ import annotations

import argparse

from quintet.cli import add_config_arguments
from quintet.config import load_config

__all__ = ["configure"]


def _train(args: argparse.Namespace) -> int:
    from quintet.leignn.run import LEIGNNJob, train

    path = train(load_config(LEIGNNJob, args.config, args.overrides))
    print(f"best model: {path}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from quintet.leignn.run import EvalConfig, evaluate

    res = evaluate(load_config(EvalConfig, args.config, args.overrides))
    print(f"metrics: {res.json_path}  parity plot: {res.parity_png}")
    return 0


def _md(args: argparse.Namespace) -> int:
    from quintet.leignn.md import LEIGNNMDJob, md

    res = md(load_config(LEIGNNMDJob, args.config, args.overrides))
    print(
        f"{res.steps_done} steps ({res.steps_per_second:.1f} steps/s), {res.reason}; "
        f"trajectory {res.trajectory}, thermo {res.thermo_csv}"
    )
    return 1 if res.stopped_early else 0


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the LEIGNN verbs."""
    sub = parser.add_subparsers(dest="verb", metavar="{train,eval,md}")
    p = sub.add_parser(
        "train",
        help="train on extxyz / ASE db / MD17 npz (keys: data.*, model.*, loss.*, train.*, out, dtype)",
        description="Example: quintet leignn train data.path=aspirin.extxyz model.forces=conservative train.max_time_s=600",
    )
    add_config_arguments(p)
    p.set_defaults(func=_train)
    p = sub.add_parser(
        "eval",
        help="energy/force MAE and a parity plot on a split (keys: model, data.*, split, out)",
        description="Example: quintet leignn eval model=runs/leignn/best.pt data.path=aspirin.extxyz split=test",
    )
    add_config_arguments(p)
    p.set_defaults(func=_eval)
    p = sub.add_parser(
        "md",
        help="NVE / Langevin / Nosé–Hoover / Berendsen MD through ASE (keys: model, structure, md.*)",
        description="Example: quintet leignn md model=best.pt structure=start.xyz md.ensemble=nve md.steps=5000",
    )
    add_config_arguments(p)
    p.set_defaults(func=_md)
