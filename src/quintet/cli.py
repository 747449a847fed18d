"""``quintet <system> <verb> [INPUT ...] [-c config.yaml] [key=value ...]``: the one command grammar.

Each system owns a small ``quintet.<system>.cli`` module with a ``VERBS`` list of :class:`Verb`
(``quintet demo`` has one ``VERB``): its typed job dataclass, the function that runs it, and which
config keys the shared named options set. Every verb therefore has the same options where they apply:

- positional ``INPUT`` arguments (words without ``=``) fill the verb's input key;
- ``-m/--model`` (repeatable where the verb takes an ensemble), ``-o/--out``, ``--device``, ``--seed``;
- ``-c/--config FILE``, ``key=value`` overrides, ``--print-config`` (print the resolved config, exit);
- ``--threads N`` (default: the cores this process may use; oracle finishing runs in worker processes
  of one thread each) and ``--debug`` (show the traceback of an error);
- verb-specific flags, each only another spelling of one config key.

``--help`` lists every key with its default; an old spelling of a key or flag is answered with the
new one. Systems are imported lazily, so ``quintet --help`` is instant and a missing optional extra
only affects the system that needs it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin, get_type_hints

from quintet import __version__
from quintet.config import ConfigError, config_to_dict, load_config
from quintet.runtime import torch_threads, tune_cpu_allocator

__all__ = ["RENAMED", "SYSTEMS", "Verb", "add_verbs", "build_job", "job_keys", "main"]


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
    "models": _System("quintet.models", "list the pretrained models (and their cards)", ""),
    "report": _System("quintet.report", "render benchmark results into one self-contained HTML page", ""),
}


#: old key or flag -> how it is spelled now (answered in the error instead of "unknown key")
RENAMED: dict[str, str] = {
    "out_dir": "-o/--out (key out)",
    "output": "-o/--out (key out)",
    "--output": "-o/--out",
    "--data-root": "--data (key data.root)",
    "--workdir": "-o/--out (the deployment's logs go to <out>/logs)",
    "-i": "positional INPUT arguments (quintet <system> predict FILE|FOLDER|GLOB ...)",
    "--input": "positional INPUT arguments (quintet <system> predict FILE|FOLDER|GLOB ...)",
    "max_steps": "finish_steps (the oracle finish's step limit)",
}


@dataclass(frozen=True)
class Verb:
    """One ``quintet <system> <verb>``.

    Args:
        name: the verb.
        help: one line for ``quintet <system> --help``.
        job: the typed job dataclass (its fields are the verb's keys).
        run: ``run(job)``; returns a line (or a dict, printed as JSON) to show before the outputs line.
        inputs: key filled by positional INPUT arguments (a list key takes many, a scalar key one).
        model: key of ``-m/--model``; ensemble: list key that takes the second and later ``-m``.
        out: key of ``-o/--out``; the last line printed says where the outputs are.
        device / seed: keys of ``--device`` / ``--seed``.
        flags: verb-specific flags, ``{"--finish-with": "finish_with"}``; a bool key makes a switch.
        aliases: other names of the verb.
        example: one example command for the help text.
        exit_code: ``exit_code(result)`` maps the run's result to the process exit code (default 0).
    """

    name: str
    help: str
    job: type
    run: Callable[[Any], Any]
    inputs: str | None = None
    model: str | None = None
    ensemble: str | None = None
    out: str | None = None
    device: str | None = None
    seed: str | None = None
    flags: Mapping[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    example: str = ""
    exit_code: Callable[[Any], int] | None = None


def _hint(cls: type, dotted: str) -> Any:
    """The annotated type of ``a.b.c`` in dataclass ``cls``."""
    tp: Any = cls
    for part in dotted.split("."):
        if not (dataclasses.is_dataclass(tp) and part in {f.name for f in dataclasses.fields(tp)}):
            raise KeyError(f"{cls.__name__} has no key {dotted!r}")
        tp = get_type_hints(tp)[part]
    return tp


def _is_list(tp: Any) -> bool:
    return get_origin(tp) in (list, tuple) or tp in (list, tuple)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append((prefix + k, v))
    return out


def job_keys(cls: type) -> list[tuple[str, Any]]:
    """Every key of a job dataclass, dotted, with its default."""
    return _flatten(config_to_dict(cls()))


def _keys_epilog(verb: Verb) -> str:
    lines = [f"  {k}={v!r}" for k, v in job_keys(verb.job)]
    head = f"example:\n  {verb.example}\n\n" if verb.example else ""
    return head + "keys (key=value, defaults shown):\n" + "\n".join(lines)


class _Renamed(argparse.Action):
    """A removed flag: fail with the new spelling."""

    def __call__(self, parser: argparse.ArgumentParser, ns: Any, values: Any, option: str | None = None):
        parser.error(f"{option} was renamed: use {RENAMED[str(option)]}")


def _add_common(p: argparse.ArgumentParser, verb: Verb) -> None:
    if verb.inputs is not None:
        many = _is_list(_hint(verb.job, verb.inputs))
        what = "files, folders or globs" if many else "one file or folder"
        words, helptext = "INPUT ... key=value", f"INPUT: {what} (key {verb.inputs}); key=value: any key below"
    else:
        words, helptext = "key=value", "override any key listed below"
    p.add_argument("words", nargs="*", metavar=words, help=helptext)
    p.add_argument("-c", "--config", default=None, metavar="FILE", help="YAML file of keys (as listed below)")
    if verb.model:
        more = f"; repeat for an ensemble (key {verb.ensemble})" if verb.ensemble else ""
        p.add_argument(
            "-m", "--model", action="append", default=[], metavar="FILE", help=f"model file (key {verb.model}){more}"
        )  # fmt: skip
    named = {"out": "-o/--out", "device": "--device", "seed": "--seed"}
    for attr, spelled in named.items():
        key = getattr(verb, attr)
        if key:
            meta = {"out": "DIR"}.get(attr, attr.upper())
            p.add_argument(*spelled.split("/"), dest=f"opt_{attr}", default=None, metavar=meta, help=f"key {key}")
    for flag, key in verb.flags.items():
        tp = _hint(verb.job, key)
        if tp is bool:
            p.add_argument(flag, dest=f"flag_{key}", action="store_const", const="true", help=f"key {key}=true")
        else:
            choices = [str(c) for c in get_args(tp)] if get_origin(tp) is Literal else None
            p.add_argument(
                flag, dest=f"flag_{key}", default=None, choices=choices, metavar=None if choices else "VALUE",
                help=f"key {key}",
            )  # fmt: skip
    p.add_argument("--print-config", action="store_true", help="print the resolved config (YAML) and exit")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads (default: the cores available)")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    taken = {a for act in p._actions for a in act.option_strings}
    for old in RENAMED:
        if old.startswith("-") and old not in taken:
            p.add_argument(old, action=_Renamed, nargs="?", help=argparse.SUPPRESS)


def _split(args: argparse.Namespace, verb: Verb) -> tuple[list[str], list[str]]:
    """Positional words: ``key=value`` overrides vs INPUTs (argparse cannot tell them apart)."""
    words = list(args.words)
    overrides = [w for w in words if "=" in w and not os.path.exists(w)]
    inputs = [w for w in words if w not in overrides]
    if inputs and verb.inputs is None:
        raise ConfigError(f"unexpected argument(s) {inputs}: this verb takes key=value arguments only")
    return inputs, overrides


def _check_renamed(overrides: Sequence[str], verb: Verb) -> None:
    for item in overrides:
        key = item.split("=", 1)[0].strip().replace("-", "_")
        if key in RENAMED:
            try:
                _hint(verb.job, key)
            except KeyError:
                raise ConfigError(f"key {key!r} was renamed: use {RENAMED[key]}") from None


def build_job(verb: Verb, args: argparse.Namespace) -> Any:
    """The verb's typed job from defaults <- ``-c`` file <- ``key=value`` <- named options and INPUTs."""
    inputs, overrides = _split(args, verb)
    _check_renamed(overrides, verb)
    fixed: dict[str, Any] = {}
    for attr in ("out", "device", "seed"):
        val = getattr(args, f"opt_{attr}", None)
        if val is not None:
            fixed[getattr(verb, attr)] = val
    for key in verb.flags.values():
        val = getattr(args, f"flag_{key}", None)
        if val is not None:
            fixed[key] = val
    models = list(getattr(args, "model", []) or [])
    if models:
        fixed[verb.model] = models[0]  # type: ignore[index]
        if len(models) > 1:
            if verb.ensemble is None:
                raise ConfigError("-m/--model was given more than once; this verb takes one model")
            fixed[verb.ensemble] = models[1:]
    if inputs:
        many = _is_list(_hint(verb.job, verb.inputs))  # type: ignore[arg-type]
        if not many and len(inputs) > 1:
            raise ConfigError(f"one input expected (key {verb.inputs}), got {len(inputs)}: {inputs}")
        fixed[verb.inputs] = inputs if many else inputs[0]  # type: ignore[index]
    return load_config(verb.job, args.config, overrides, fixed=fixed)


def _runner(verb: Verb) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        import json

        import yaml

        job = build_job(verb, args)
        if args.print_config:
            print(yaml.safe_dump(config_to_dict(job), sort_keys=False), end="")
            return 0
        _check_out(verb, job)
        result = verb.run(job)
        if isinstance(result, Mapping):
            print(json.dumps(result, indent=2, default=str))
        elif isinstance(result, str):
            print(result)
        if verb.out:
            print(f"outputs: {_get(job, verb.out)}")
        return verb.exit_code(result) if verb.exit_code else 0

    return run


def _check_out(verb: Verb, job: Any) -> None:
    """An output path under a file (or a file where a folder is meant) is refused before the verb runs."""
    from quintet.io import check_output_path

    key = verb.out or ("out" if hasattr(job, "out") else None)
    value = _get(job, key) if key else None
    if isinstance(value, str | os.PathLike) and str(value):
        check_output_path(value, key)  # type: ignore[arg-type]


def _get(job: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        job = getattr(job, part)
    return job


def configure_verb(p: argparse.ArgumentParser, verb: Verb) -> None:
    """Give parser ``p`` the options of ``verb`` and make it run the verb."""
    p.description = verb.help
    p.epilog = _keys_epilog(verb)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    _add_common(p, verb)
    p.set_defaults(func=_runner(verb))


def add_verbs(parser: argparse.ArgumentParser, verbs: Sequence[Verb]) -> dict[str, argparse.ArgumentParser]:
    """Add ``verbs`` to a system's parser as sub-commands; returns verb name -> its parser."""
    sub = parser.add_subparsers(dest="verb", metavar="{" + ",".join(v.name for v in verbs) + "}")
    parsers: dict[str, argparse.ArgumentParser] = {}
    for verb in verbs:
        p = sub.add_parser(verb.name, aliases=list(verb.aliases), help=verb.help)
        configure_verb(p, verb)
        parsers.update({n: p for n in (verb.name, *verb.aliases)})
    return parsers


def threads(n: int | None) -> contextlib.AbstractContextManager[None]:
    """The one thread rule: ``--threads N`` sets torch's CPU threads for the verb (restored afterwards);
    without it torch's default stays, one thread per core available. Oracle finishes use one thread."""
    if n is not None and n < 1:
        raise ValueError(f"--threads must be at least 1, got {n}")
    return torch_threads(n)


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


def parse(argv: Sequence[str]) -> tuple[str, argparse.Namespace | None]:
    """Parse ``quintet <system> ...`` into (system, namespace); namespace is None when only help was shown.

    Raises ``SystemExit`` (argparse) on a command line the grammar rejects. Used by :func:`main` and by
    the test that parses every command the docs show.
    """
    argv = list(argv)
    top = _top_parser()
    if not argv or argv[0].startswith("-"):
        top.parse_args(argv)
        top.print_help()
        return "", None
    name = argv[0]
    if name not in SYSTEMS:
        top.error(f"unknown system {name!r}; choose from {', '.join(SYSTEMS)}")
    system = SYSTEMS[name]
    try:
        module = importlib.import_module(system.module)
    except ImportError as exc:
        hint = f" (install it with: pip install -c constraints.txt -e '.[{system.extra}]')" if system.extra else ""
        raise ImportError(f"quintet {name}: cannot import {system.module}: {exc}{hint}") from exc
    parser = argparse.ArgumentParser(prog=f"quintet {name}", description=system.help)
    if hasattr(module, "VERB"):
        configure_verb(parser, module.VERB)
        return name, parser.parse_intermixed_args(argv[1:])
    subs = add_verbs(parser, module.VERBS)
    if len(argv) > 1 and argv[1] in subs:
        return name, subs[argv[1]].parse_intermixed_args(argv[2:])
    parser.parse_args(argv[1:])  # help, or an unknown verb (argparse names the valid ones)
    parser.print_help()
    return name, None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``quintet`` console script; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        name, args = parse(argv)
    except ImportError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if args is None:
        return 0
    debug = args.debug or bool(os.environ.get("QUINTET_DEBUG"))
    tune_cpu_allocator()  # keep freed tensor memory for reuse (QUINTET_MALLOC_TUNING=0: glibc defaults)
    try:
        with threads(args.threads):
            return args.func(args)
    except KeyboardInterrupt:
        print("interrupted; everything written so far is kept", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError, KeyError, OSError) as exc:
        if debug:
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"quintet {name}: error: {msg} (--debug shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
