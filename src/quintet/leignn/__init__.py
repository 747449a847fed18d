"""LEIGNN: lightweight equivariant interatomic potential (energy, forces, stress) usable from ASE.

``atoms.calc = quintet.leignn.calculator("best.pt")`` in one call. Modules: ``model``, ``task``, ``run``
(train / eval / load), ``md``, ``calc`` (the ASE calculator), ``cli``. See ``docs/leignn.md``.
"""

from quintet._lazy import lazy_api

__getattr__, __dir__, __all__ = lazy_api(
    __name__,
    {"LEIGNN": "model", "LEIGNNModelConfig": "model", "calculator": "calc", "LEIGNNCalculator": "calc",
     "load_model": "run", "train": "run", "evaluate": "run"},
)  # fmt: skip
