"""FedAux: personalised subgraph federated learning (in-process and on Flower), with five baselines.

``quintet.fedaux.run(data, num_clients=..., rounds=..., algorithm=...)`` runs one experiment in one call.
Modules: ``data`` (graphs, partitions, shards), ``models``, ``strategies`` (one object per method),
``algorithms`` (the client update), ``loop`` (the one round loop), ``simulate`` (in-process runs),
``flower`` / ``deploy`` (Flower), ``api`` (``run``), ``cli``. See ``docs/fedaux.md``.
"""

from quintet._lazy import lazy_api

__getattr__, __dir__, __all__ = lazy_api(
    __name__, {"run": "api", "RunConfig": "simulate", "load_client_models": "simulate"}
)
