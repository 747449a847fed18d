"""The one style of package ``__init__`` files: a docstring and a lazy public API.

``__getattr__, __dir__, __all__ = lazy_api(__name__, {"name": "module", ...})`` makes
``quintet.<system>.name`` import ``quintet.<system>.module`` on first use, so importing a package
(for example to run ``quintet <system> --help``) costs nothing until its API is used (PEP 562).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_api(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package`` exposing ``names`` (name -> submodule)."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{names[name]}"), name)

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__, sorted(names)
