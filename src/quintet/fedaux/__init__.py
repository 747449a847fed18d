"""FedAux: personalised federated learning of GNNs on subgraphs held by different owners (in-process and Flower).

``quintet.fedaux.run(RunConfig(...))`` runs one experiment in-process. Modules: ``data``, ``models``,
``aggregation`` (pure functions), ``algorithms``, ``simulate``, ``flower``, ``deploy``, ``cli``.
See ``docs/fedaux.md``.
"""

from quintet._lazy import lazy_api

__getattr__, __dir__, __all__ = lazy_api(
    __name__, {"run": "simulate", "RunConfig": "simulate", "load_client_models": "simulate"}
)
