"""DefiNet: one-shot relaxed geometries of point-defect supercells (vacancies, substitutions).

``quintet.definet.relax(structures, pristine=..., model=...)`` in one call. Modules: ``model``, ``layers``,
``task``, ``run`` (train / load), ``predict`` (predict / eval), ``labelling``, ``cli``. See ``docs/definet.md``.
"""

from quintet._lazy import lazy_api

__getattr__, __dir__, __all__ = lazy_api(
    __name__,
    {"relax": "predict", "evaluate_model": "predict", "load_definet": "run", "train": "run"},
)
