"""``quintet fedaux <verb>``: partition, run (in-process), flower-sim, flower-app (deployment folder).

Every verb is a thin wrapper over one typed function taking a dataclass config loaded with
``-c cfg.yaml key=value ...``; the resolved config is saved next to the outputs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from quintet.cli import add_config_arguments
from quintet.config import load_config, save_config

__all__ = ["configure"]


def _overrides(args: argparse.Namespace) -> list[str]:
    extra = list(args.overrides)
    if getattr(args, "data_root", None):
        extra.append(f"data.root={args.data_root}")
    return extra


def _partition(args: argparse.Namespace) -> int:
    from quintet.fedaux.simulate import RunConfig, load_data

    cfg = load_config(RunConfig, args.config, _overrides(args))
    clients, info = load_data(cfg.data)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg.data, out / "partition_config.yaml")
    print(
        f"{cfg.data.dataset}: {info['num_nodes']} nodes (LCC), {info['num_classes']} classes, {len(clients)} clients"
    )
    for c in clients:
        print(
            f"  client {c.client_id:>3}: {c.num_nodes:>6} nodes {c.edge_index.shape[1] // 2:>7} edges  "
            f"train/val/test {int(c.train_mask.sum())}/{int(c.val_mask.sum())}/{int(c.test_mask.sum())}"
        )
    return 0


def _run(args: argparse.Namespace) -> int:
    from quintet.fedaux.simulate import RunConfig, run

    cfg = load_config(RunConfig, args.config, _overrides(args))
    res = run(cfg)
    print(
        f"{cfg.algo.name}: test acc at best val round {res.best_round}: {res.test_at_best_val:.2f}%  "
        f"(final {res.final_test:.2f}%, {res.seconds:.1f} s) -> {cfg.out_dir}"
    )
    return 0


def _flower_sim(args: argparse.Namespace) -> int:
    from quintet.fedaux.flower import FlowerConfig, flower_simulate

    cfg = load_config(FlowerConfig, args.config, _overrides(args))
    res = flower_simulate(cfg)
    print(
        f"{cfg.algo.name} on Flower: test acc at best val round {res.best_round}: {res.test_at_best_val:.2f}% "
        f"-> {cfg.out_dir}"
    )
    return 0


def _flower_app(args: argparse.Namespace) -> int:
    from quintet.fedaux.flower import FlowerConfig, write_flower_app

    cfg = load_config(FlowerConfig, args.config, _overrides(args))
    app = write_flower_app(args.app_dir, cfg)
    print(
        f"Flower app written to {app}; start a SuperLink and {cfg.data.num_clients} SuperNodes, then: flwr run {app}"
    )
    return 0


def _deploy_local(args: argparse.Namespace) -> int:
    from quintet.fedaux.deploy import run_loopback_deployment
    from quintet.fedaux.flower import FlowerConfig

    cfg = load_config(FlowerConfig, args.config, _overrides(args))
    res = run_loopback_deployment(cfg, args.workdir)
    print(
        f"{cfg.algo.name} on a loopback SuperLink + {cfg.data.num_clients} SuperNodes: test acc at best val round "
        f"{res.best_round}: {res.test_at_best_val:.2f}% -> {cfg.out_dir} (logs in {args.workdir})"
    )
    return 0


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the fedaux verbs to ``parser``."""
    sub = parser.add_subparsers(dest="verb")
    specs = [
        ("partition", _partition, "build (and cache) the client partitions and print their sizes"),
        ("run", _run, "deterministic in-process federated run: metrics.csv, clients.csv, curves.png"),
        ("flower-sim", _flower_sim, "the same run on Flower's simulation engine (Ray)"),
        ("flower-app", _flower_app, "write a Flower app folder for a SuperLink/SuperNode deployment"),
        ("deploy-local", _deploy_local, "real deployment on loopback: SuperLink + K SuperNodes + flwr run"),
    ]
    for name, func, help_ in specs:
        p = sub.add_parser(name, help=help_, description=help_)
        add_config_arguments(p)
        p.add_argument(
            "--data-root", default=None, help="folder with the Planetoid raw files (ind.cora.* ...)"
        )
        if name == "flower-app":
            p.add_argument(
                "--app-dir", required=True, help="folder to write pyproject.toml + fedaux.yaml into"
            )
        p.set_defaults(func=func)
