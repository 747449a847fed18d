"""DeepRelax: one-shot crystal relaxation with uncertainty (distance prediction + distance-geometry solve).

Modules: :mod:`~quintet.deeprelax.model` (network), :mod:`~quintet.deeprelax.solve` (batched coordinate
solve), :mod:`~quintet.deeprelax.relax` (forward + solve), :mod:`~quintet.deeprelax.task` (trainer task),
:mod:`~quintet.deeprelax.jobs` (train / evaluate / predict), :mod:`~quintet.deeprelax.cli`. See ``docs/deeprelax.md``.
"""
