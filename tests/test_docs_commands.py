"""Every ``quintet ...`` command the README and docs/ show is parsed by the real CLI.

A command line the docs show and the grammar rejects (unknown flag, unknown key, wrong type, a
renamed option) fails this suite; so does a doc that shows no command at all (the extractor broke).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from quintet.cli import SYSTEMS as REGISTRY
from quintet.cli import build_job, parse

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```")
INLINE = re.compile(r"`(quintet [^`]+)`")
SYSTEMS = tuple(REGISTRY)


def _block_commands(text: str) -> list[str]:
    """``quintet`` lines inside fenced code blocks, with ``\\`` continuations joined."""
    out: list[str] = []
    in_block, pending = False, ""
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            in_block, pending = not in_block, ""
            continue
        if not in_block:
            continue
        s = pending + " " + line.strip() if pending else line.strip().removeprefix("$ ")
        if s.endswith("\\"):
            pending = s[:-1]
            continue
        pending = ""
        if s.startswith("quintet "):
            out.append(s)
    return out


def commands(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    found = _block_commands(text) + [m.group(1) for m in INLINE.finditer(text)]
    return [c for c in found if c.split()[1].split("/")[0] in SYSTEMS and "..." not in c and "<" not in c]


def _argv(command: str) -> list[str]:
    words = shlex.split(command, comments=True)
    assert words[0] == "quintet"
    return words[1:]


CASES = [(p.name, c) for p in DOCS for c in commands(p)]


def test_the_docs_show_commands() -> None:
    assert len(CASES) >= 40, f"only {len(CASES)} commands found in the docs: the extractor broke"
    for doc in ("README.md", "deeprelax.md", "definet.md", "fedaux.md", "leignn.md", "medaugment.md"):
        assert any(name == doc for name, _ in CASES), f"no quintet command found in {doc}"


@pytest.mark.parametrize(("doc", "command"), CASES, ids=[f"{d}:{c[:60]}" for d, c in CASES])
def test_documented_command_parses(doc: str, command: str) -> None:

    argv = _argv(command)
    try:
        name, args = parse(argv)
    except SystemExit as exc:  # argparse rejected it
        pytest.fail(f"{doc}: `{command}` is rejected by the CLI (exit {exc.code})")
    if args is None:  # a --help line
        return
    if args.config is None:
        module = __import__(REGISTRY[name].module, fromlist=["x"])
        verbs = [module.VERB] if hasattr(module, "VERB") else module.VERBS
        verb = next(v for v in verbs if v.name == argv[1] or argv[1] in v.aliases) if len(verbs) > 1 else verbs[0]
        build_job(verb, args)  # unknown or mistyped keys raise ConfigError
