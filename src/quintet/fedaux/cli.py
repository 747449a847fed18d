"""``quintet fedaux <verb>``: partition, run (in-process), flower-sim, flower-app, deploy-local."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quintet.cli import Verb

__all__ = ["VERBS"]


def _partition(cfg: Any) -> str:
    from quintet.fedaux.data import write_shards
    from quintet.fedaux.simulate import load_data, partition_provenance

    clients, info = load_data(cfg.data)
    out = Path(cfg.out)
    write_shards(clients, info, out, partition_provenance(cfg.data))
    lines = [
        f"{cfg.data.dataset}: {info['num_nodes']} nodes (LCC), {info['num_classes']} classes, {len(clients)} clients"
        f" -> {len(clients)} shards (client_<id>.pt + partition.json)"
    ]
    for c in clients:
        lines.append(
            f"  client {c.client_id:>3}: {c.num_nodes:>6} nodes {c.edge_index.shape[1] // 2:>7} edges  "
            f"train/val/test {int(c.train_mask.sum())}/{int(c.val_mask.sum())}/{int(c.test_mask.sum())}"
        )
    return "\n".join(lines)


def _result_line(cfg: Any, res: Any, where: str) -> str:
    return (
        f"{cfg.algo.name} {where}: test acc at best val round {res.best_round}: {res.test_at_best_val:.2f}% "
        f"(final {res.final_test:.2f}%)"
    )


def _run(cfg: Any) -> str:
    from quintet.fedaux.simulate import run

    return _result_line(cfg, run(cfg), "in-process")


def _flower_sim(cfg: Any) -> str:
    from quintet.fedaux.flower import flower_simulate

    return _result_line(cfg, flower_simulate(cfg), "on Flower's simulation engine")


def _flower_app(cfg: Any) -> str:
    from quintet.fedaux.flower import write_flower_app

    app = write_flower_app(Path(cfg.out) / "app", cfg)
    return (
        f"Flower app in {app} (hyperparameters in its [tool.flwr.app.config]); write the shards with "
        f"`quintet fedaux partition -o SHARDS`, start a SuperLink and {cfg.data.num_clients} SuperNodes with "
        f'--node-config "data-path=SHARDS/client_<i>.pt", then: flwr run {app} CONNECTION'
    )


def _deploy_local(cfg: Any) -> str:
    from quintet.fedaux.deploy import run_loopback_deployment

    res = run_loopback_deployment(cfg, Path(cfg.out) / "logs")
    where = f"on a loopback SuperLink + {cfg.data.num_clients} SuperNodes (logs in {Path(cfg.out) / 'logs'})"
    return _result_line(cfg, res, where)


def _verbs() -> list[Verb]:
    from quintet.fedaux.flower import FlowerConfig
    from quintet.fedaux.simulate import RunConfig

    common = {"out": "out", "seed": "seed", "flags": {"--data": "data.root", "--rounds": "rounds"}}
    part_example = "quintet fedaux partition --data ../shared/data/planetoid data.num_clients=10 -o shards/cora10"
    example = "quintet fedaux run --data ../shared/data/planetoid data.num_clients=10 algo.name=fedaux -o runs/cora10"
    return [
        Verb("partition", "cut the graph into clients and write one shard per client (client_<id>.pt) into <out>",
             RunConfig, _partition, example=part_example, **common),
        Verb("run", "deterministic in-process federated run: metrics.csv, clients.csv, curves.png, models/",
             RunConfig, _run, example=example, **common),
        Verb("flower-sim", "the same run on Flower's simulation engine (Ray)", FlowerConfig, _flower_sim, **common),
        Verb("flower-app", "write a Flower app folder (<out>/app) for a SuperLink/SuperNode deployment",
             FlowerConfig, _flower_app, **common),
        Verb("deploy-local", "real deployment on loopback: shards, then SuperLink + K SuperNodes each reading only "
             "its shard + flwr run (shards, app and logs in <out>/logs; models in <out>/models)",
             FlowerConfig, _deploy_local, **common),
    ]  # fmt: skip


VERBS = _verbs()
