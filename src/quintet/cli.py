"""``quintet <system> <verb>``: the command-line entry point.

Each system owns a small ``quintet.<system>.cli`` module with a ``configure(parser)`` function that
adds its verbs (``train``, ``eval``, ``run`` ...) as sub-commands; every verb is a thin wrapper over
one typed Python function. Systems are imported lazily, so ``quintet --help`` is instant and a
missing optional extra only affects the system that needs it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from quintet import __version__
from quintet.runtime import tune_cpu_allocator

__all__ = ["SYSTEMS", "add_config_arguments", "main"]


@dataclass(frozen=True)
class _System:
    module: str
    help: str
    extra: str


SYSTEMS: dict[str, _System] = {
    "leignn": _System(
        "quintet.leignn.cli", "lightweight equivariant interatomic potential: train, eval, md", "materials"
    ),
    "deeprelax": _System(
        "quintet.deeprelax.cli", "one-shot crystal relaxation with uncertainty", "materials"
    ),
    "definet": _System("quintet.definet.cli", "one-shot relaxation of point-defect supercells", "materials"),
    "fedaux": _System(
        "quintet.fedaux.cli", "personalised subgraph federated learning (in-process and Flower)", "fl"
    ),
    "medaugment": _System("quintet.medaugment.cli", "medically safe automatic image augmentation", "imaging"),
    "data": _System(
        "quintet.atomistic.cli", "generate and inspect atomistic data with any ASE calculator", "materials"
    ),
    "demo": _System("quintet.demo", "run every available system on small embedded data, write a report", ""),
}


#: help text of the ``--compile`` flag of the inference verbs (:class:`quintet.atomistic.nn.CompiledModel`)
COMPILE_HELP = (
    "run the network through torch.compile: a one-off compile on the first batch (tens of seconds), "
    "then a faster forward pass; for large jobs (falls back to eager, with a warning, if compiling fails)"
)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the shared ``-c/--config FILE`` option and ``key=value`` override arguments."""
    parser.add_argument("-c", "--config", default=None, help="YAML config file (keys as in the dataclass)")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="override any config key, e.g. train.lr=1e-3"
    )


def _top_parser() -> argparse.ArgumentParser:
    lines = [f"  {name:<11} {s.help}" for name, s in SYSTEMS.items()]
    parser = argparse.ArgumentParser(
        prog="quintet",
        description="quintet: LEIGNN, DeepRelax, DefiNet, FedAux and MedAugment in one toolkit.",
        epilog="systems:\n" + "\n".join(lines) + "\n\nRun `quintet <system> --help` for its verbs.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"quintet {__version__}")
    parser.add_argument("system", nargs="?", choices=list(SYSTEMS), help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``quintet`` console script; returns the process exit code."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not argv:
        top.print_help()
        return 0
    if argv[0].startswith("-"):
        top.parse_args(argv)
        return 0
    name = argv[0]
    if name not in SYSTEMS:
        top.error(f"unknown system {name!r}; choose from {', '.join(SYSTEMS)}")
    system = SYSTEMS[name]
    try:
        module = importlib.import_module(system.module)
    except ImportError as exc:
        hint = (
            f" (install it with: pip install -c constraints.txt -e '.[{system.extra}]')"
            if system.extra
            else ""
        )
        print(f"quintet {name}: cannot import {system.module}: {exc}{hint}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog=f"quintet {name}", description=system.help)
    module.configure(parser)
    args = parser.parse_args(argv[1:])
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    tune_cpu_allocator()  # keep freed tensor memory for reuse (QUINTET_MALLOC_TUNING=0: glibc defaults)
    try:
        result = func(args)
    except KeyboardInterrupt:
        print("interrupted; everything written so far is kept", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        if os.environ.get("QUINTET_DEBUG"):
            raise
        print(f"quintet {name}: error: {exc}", file=sys.stderr)
        return 1
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
