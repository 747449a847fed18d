"""FedAux: personalised subgraph federated learning (in-process and on Flower), with five baselines.

Modules: :mod:`~quintet.fedaux.data` (graphs, partitions, shards), :mod:`~quintet.fedaux.models`,
:mod:`~quintet.fedaux.strategies` (one object per method), :mod:`~quintet.fedaux.algorithms` (the client
update), :mod:`~quintet.fedaux.loop` (the one round loop), :mod:`~quintet.fedaux.simulate` (in-process runs),
:mod:`~quintet.fedaux.flower` / :mod:`~quintet.fedaux.deploy` (Flower), :mod:`~quintet.fedaux.api`
(``run``), :mod:`~quintet.fedaux.cli`. See ``docs/fedaux.md``.
"""

from quintet.fedaux.api import run

__all__ = ["run"]
