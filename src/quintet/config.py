"""Typed dataclass configs: YAML files + ``key=value`` overrides, validated, saved next to outputs.

Every runnable job in quintet is described by a (possibly nested) dataclass. :func:`load_config`
builds one from defaults, an optional YAML file and command-line overrides such as
``train.lr=1e-3 model.hidden=64``. Unknown keys are errors that list the valid keys; values are
coerced to the annotated types (``int``, ``float``, ``bool``, ``str``, ``Path``, ``Literal``,
``Optional``, ``list``/``tuple`` and nested dataclasses) and a wrong type is an error naming the key.
:func:`save_config` writes the resolved config (YAML, atomically) so every run can be reproduced.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from quintet.io import atomic_write_text

__all__ = ["ConfigError", "config_to_dict", "from_dict", "load_config", "parse_overrides", "save_config"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override is invalid (unknown key, wrong type, bad value)."""


def _coerce_union(value: Any, tp: Any, key: str) -> Any:
    args = get_args(tp)
    is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null", "~"))
    if is_none and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(value, arg, key)
        except ConfigError as exc:
            errors.append(str(exc))
    raise ConfigError(f"{key}: cannot interpret {value!r} as {tp}: {'; '.join(errors)}")


def _coerce_literal(value: Any, tp: Any, key: str) -> Any:
    choices = get_args(tp)
    for c in choices:
        if value == c or (isinstance(value, str) and str(c) == value):
            return c
    raise ConfigError(f"{key}: {value!r} is not one of {list(choices)}")


def _coerce_sequence(value: Any, tp: Any, key: str) -> Any:
    origin = get_origin(tp)
    if isinstance(value, str):
        value = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
    if not isinstance(value, list | tuple):
        value = [value]
    args = get_args(tp)
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(args) != len(value):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    inner = args[0] if args else Any
    items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    return tuple(items) if origin is tuple or tp is tuple else items


def _coerce_mapping(value: Any, tp: Any, key: str) -> Any:
    if isinstance(value, str):
        value = yaml.safe_load(value)
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected a mapping, got {value!r}")
    return dict(value)


def _coerce_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
        return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ConfigError(f"{key}: expected a boolean, got {value!r}")


def _coerce_int(value: Any, key: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            f = float(value)
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
        if f.is_integer():
            return int(f)
    raise ConfigError(f"{key}: expected an integer, got {value!r}")


def _coerce_scalar(value: Any, tp: Any, key: str) -> Any:
    if tp is bool:
        return _coerce_bool(value, key)
    if tp is int:
        return _coerce_int(value, key)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{key}: {value!r} is not a finite number")
        return number
    if tp is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if tp is Path:
        if isinstance(value, str | Path):
            return Path(value)
        raise ConfigError(f"{key}: expected a path, got {value!r}")
    return value


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` as the annotated type ``tp`` of config key ``key`` (a wrong type names the key)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        return _coerce_union(value, tp, key)
    if origin is Literal:
        return _coerce_literal(value, tp, key)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        return _coerce_sequence(value, tp, key)
    if origin in (dict, Mapping) or tp is dict:
        return _coerce_mapping(value, tp, key)
    return _coerce_scalar(value, tp, key)


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) mapping; unknown keys raise :class:`ConfigError`."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        valid = ", ".join(sorted(fields))
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; valid keys: {valid}"
        )
    kwargs = {name: _coerce(val, hints[name], prefix + name) for name, val in data.items()}
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{prefix or cls.__name__}: {exc}") from exc
    return obj  # type: ignore[return-value]


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML-safe dict of a dataclass config (paths become strings, tuples lists)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, list | tuple):
            return [conv(x) for x in v]
        if isinstance(v, Mapping):
            return {str(k): conv(x) for k, x in v.items()}
        return v

    return conv(cfg)


def _set_dotted(d: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    cur = d
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=x"]`` into a nested dict; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str | int | float | bool) or value is None or isinstance(value, list | dict):
            pass
        else:
            value = raw
        _set_dotted(out, key, value)
    return out


def _merge(base: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in new.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    base: T | None = None,
    fixed: Mapping[str, Any] | None = None,
) -> T:
    """Defaults of ``cls`` (or ``base``) ← YAML file ``path`` ← ``key=value`` overrides ← ``fixed``.

    ``fixed`` maps dotted keys to values taken as they are (not parsed as YAML): the named
    command-line options and positional inputs.

    Raises:
        ConfigError: unknown keys (the message lists the valid ones), wrong types, unreadable YAML.
    """
    data: dict[str, Any] = config_to_dict(base if base is not None else cls())
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML ({exc})") from exc
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{p}: the top level must be a mapping of keys")
        try:
            from_dict(cls, loaded)  # validate keys against the file's own content first
        except ConfigError as exc:
            raise ConfigError(f"{p}: {exc}") from exc
        data = _merge(data, loaded)
    if overrides:
        data = _merge(data, parse_overrides(overrides))
    if fixed:
        named: dict[str, Any] = {}
        for key, value in fixed.items():
            _set_dotted(named, key, value)
        data = _merge(data, named)
    return from_dict(cls, data)


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically) and return the path."""
    path = Path(path)
    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return path
