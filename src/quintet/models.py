"""One loader for every model file: ``quintet.load_model(path or pretrained name)``.

Every trained model is one file format (:func:`quintet.train.save_model`): the weights, their content
hash, the resolved config and ``extra = {"system": ..., "model": {...architecture...}}``. The file
says which system it belongs to; the system's ``from_model_file`` rebuilds the network (unknown
architecture fields are errors, not silently dropped). Files of earlier versions migrate in one
place, :func:`quintet.train.checkpoint.migrate`.

Pretrained models ship inside the package under ``quintet/pretrained/<name>/`` (``model.pt``,
``card.json`` with the file's SHA-256, ``card.md``); :func:`shipped_models` lists them and
``quintet models`` prints their cards.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quintet.cli import Verb

__all__ = ["BUILDERS", "VERB", "build", "choose_model", "default_model", "load_model", "load_weights", "resolve_model", "shipped_models"]

#: system -> ``module:function`` that rebuilds its network from a loaded model file dict
BUILDERS = {
    "deeprelax": "quintet.deeprelax.jobs:from_model_file",
    "definet": "quintet.definet.run:from_model_file",
    "leignn": "quintet.leignn.run:from_model_file",
}

PRETRAINED = Path(__file__).parent / "pretrained"


def shipped_models() -> dict[str, dict[str, Any]]:
    """The pretrained models in the package: name -> its card (``card.json``)."""
    out: dict[str, dict[str, Any]] = {}
    if not PRETRAINED.is_dir():
        return out
    for d in sorted(p for p in PRETRAINED.iterdir() if (p / "model.pt").is_file()):
        card = d / "card.json"
        out[d.name] = json.loads(card.read_text(encoding="utf-8")) if card.is_file() else {}
    return out


def default_model(system: str) -> str | None:
    """The pretrained model a system's predict verb uses when none is given (the card's ``default_for``)."""
    for name, card in shipped_models().items():
        if system in (card.get("default_for") or []):
            return name
    return None


def choose_model(model: str | Path | None, system: str) -> str:
    """``model``, or the shipped model a system's predict uses when none is given.

    Raises:
        ValueError: no model given and none shipped for ``system`` (the message says how to give one).
    """
    if model not in (None, ""):
        return str(model)
    name = default_model(system)
    if name is None:
        raise ValueError(f"no model given and no pretrained {system} model is installed: pass -m <best.pt>")
    return name


def resolve_model(name_or_path: str | Path) -> Path:
    """A model file path from a path or a pretrained name; a shipped file is checked against its card's hash.

    Raises:
        FileNotFoundError: neither a file nor a shipped name (the message lists the shipped names).
        ValueError: a shipped file whose bytes do not match its card (corrupted installation).
    """
    from quintet.io import file_sha256

    p = Path(name_or_path)
    if p.is_file():
        return p
    shipped = shipped_models()
    name = str(name_or_path)
    if p.suffix or len(p.parts) > 1:
        raise FileNotFoundError(f"model file {p} does not exist")
    if name not in shipped:
        names = ", ".join(shipped) or "none in this installation"
        raise FileNotFoundError(f"{name}: no such model file or pretrained model (shipped: {names})")
    path = PRETRAINED / name / "model.pt"
    want = shipped[name].get("sha256") or shipped[name].get("model_sha256")
    if want and file_sha256(path) != want:
        raise ValueError(
            f"pretrained model {name} ({path}) does not match the SHA-256 in its card: the installation is "
            "corrupted; reinstall quintet"
        )
    return path


def build(net: Any, config: Any, d: dict[str, Any], path: str | Path, dtype: Any = None) -> Any:
    """``net(config(**extra.model))`` (cast to ``dtype`` first, when given) with the file's weights, eval mode:
    the body of every system's ``from_model_file`` (an architecture field this version does not know is an
    error naming the file)."""
    from quintet.config import from_dict

    try:
        cfg = from_dict(config, d["extra"]["model"])
    except ValueError as exc:
        raise ValueError(f"{path}: its {net.__name__} architecture is not valid here: {exc}") from exc
    model = net(cfg)
    return load_weights(model if dtype is None else model.to(dtype), d, path)


def load_weights(model: Any, d: dict[str, Any], path: str | Path) -> Any:
    """``model.load_state_dict`` of a loaded file, naming the file when the weights do not fit; eval mode."""
    try:
        model.load_state_dict(d["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[-1].strip()
        raise ValueError(f"{path}: its weights do not fit the architecture it declares ({first})") from exc
    return model.eval()


def load_model(name_or_path: str | Path, system: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Load any quintet model file (or pretrained name); returns ``(model in eval mode, file dict)``.

    Args:
        name_or_path: a ``best.pt`` path or a shipped name such as ``"definet-2d"``.
        system: if given, the file must belong to this system.

    Raises:
        FileNotFoundError, ValueError: a missing, corrupted or foreign file (named in the message).
    """
    from quintet.train import load_model_file

    path = resolve_model(name_or_path)
    d = load_model_file(path)
    found = d["extra"].get("system")
    if found not in BUILDERS:
        raise ValueError(f"{path}: not a model file of {', '.join(BUILDERS)} (its system is {found!r})")
    if system is not None and found != system:
        raise ValueError(f"{path}: a {found} model file, but a {system} model is needed here")
    module, _, func = BUILDERS[found].partition(":")
    model = getattr(importlib.import_module(module), func)(d, path)
    return model, d


@dataclass
class ModelsJob:
    """``quintet models [NAME]``: list the pretrained models, or print one model's card."""

    name: str | None = None


def _models(job: ModelsJob) -> str:
    shipped = shipped_models()
    if job.name is not None:
        resolve_model(job.name)  # unknown names list the shipped ones; a corrupted file is named
        card = PRETRAINED / job.name / "card.md"
        return card.read_text(encoding="utf-8") if card.is_file() else json.dumps(shipped[job.name], indent=2)
    if not shipped:
        return "no pretrained models are installed"
    lines = [f"{'name':<18} {'system':<10} {'default for':<12} summary"]
    for name, card in shipped.items():
        default = ",".join(card.get("default_for") or []) or "-"
        lines.append(f"{name:<18} {card.get('system', '?'):<10} {default:<12} {card.get('summary', '')}")
    return "\n".join(lines) + "\n\n`quintet models NAME` prints a model's card."


VERB = Verb(
    "models", "list the pretrained models shipped with quintet, or print one model's card", ModelsJob, _models,
    inputs="name", example="quintet models definet-2d",
)  # fmt: skip
