"""DeepRelax: one-shot crystal relaxation with uncertainty (distance prediction + distance-geometry solve).

``quintet.deeprelax.relax(structures, model=...)`` relaxes ASE ``Atoms`` or pymatgen ``Structure``s in one
call. Modules: ``model`` (network), ``solve`` (batched coordinate solve), ``inference`` (forward + solve),
``task`` (trainer task), ``jobs`` (train / evaluate / predict / load), ``cli``. See ``docs/deeprelax.md``.
"""

from quintet._lazy import lazy_api

__getattr__, __dir__, __all__ = lazy_api(
    __name__, {"relax": "jobs", "load_deeprelax": "jobs", "train": "jobs", "evaluate": "jobs", "predict": "jobs"}
)
