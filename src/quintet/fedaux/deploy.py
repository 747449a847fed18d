"""A real Flower deployment on loopback with node-local data: one SuperLink, K SuperNodes, ``flwr run``.

This is the documented recipe (docs/fedaux.md) as a function, used by the integration test and by
``quintet fedaux deploy-local``. Every process is started by this function and stopped by it (by PID).

Steps:
1. ``quintet fedaux partition``: one shard per client (``<work>/shards/client_<i>.pt``); the only step that
   sees the whole graph.
2. ``flower-superlink --insecure --disable-runtime-dependency-installation --port P`` (HTTP on 127.0.0.1:P).
3. For i in 0..K-1: ``flower-supernode --insecure --superlink 127.0.0.1:P --port Q_i
   --node-config "data-path=<work>/shards/client_<i>.pt out-dir=<out>"``: each node reads only its shard.
4. ``$FLWR_HOME/config.toml`` gets a ``[superlink.<name>]`` connection (address, insecure).
5. ``flwr run <work>/app <name> --stream --run-config "out='<out>'"`` with the copyable app folder of
   :func:`~quintet.fedaux.flower.write_flower_app` (hyperparameters in its run config, no paths).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from quintet.fedaux.data import load_shards, write_shards
from quintet.fedaux.flower import FlowerConfig, read_result, write_flower_app
from quintet.fedaux.loop import SimResult
from quintet.fedaux.simulate import load_data, partition_provenance

__all__ = ["free_port", "run_loopback_deployment", "supernode_cmd", "write_partition"]

_CONNECTION = "quintet-loopback"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin(name: str) -> str:
    exe = Path(sys.executable).parent / name
    if exe.is_file():
        return str(exe)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found next to {sys.executable} or on PATH (install quintet[fl])")
    return found


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def write_partition(cfg: FlowerConfig, folder: Path) -> list[Path]:
    """Partition ``cfg.data`` into shards in ``folder`` (checked by reading them back); return the paths."""
    clients, info = load_data(cfg.data)
    if len(clients) != cfg.data.num_clients:
        raise ValueError(
            f"data.num_clients={cfg.data.num_clients} but the partition has {len(clients)} clients"
        )
    paths = write_shards(clients, info, folder, partition_provenance(cfg.data))
    load_shards(folder)  # every shard verified before any process starts
    cfg.num_features, cfg.num_classes = info["num_features"], info["num_classes"]
    return paths


def _start(stack: ExitStack, cmd: list[str], work: Path, env: dict[str, str], log: Path) -> None:
    fh = stack.enter_context(open(log, "wb"))  # noqa: SIM115 - closed by the stack
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=fh, stderr=subprocess.STDOUT)
    stack.callback(_stop, proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _env(home: Path) -> dict[str, str]:
    """The processes' environment: ``FLWR_HOME``, this Python's ``bin`` first on PATH, PYTHONPATH made absolute
    (the processes run in the work folder)."""
    env = dict(os.environ)
    if env.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.pathsep.join(
            str(Path(p).resolve()) for p in env["PYTHONPATH"].split(os.pathsep) if p
        )
    env.update(
        FLWR_HOME=str(home),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        FLWR_TELEMETRY_ENABLED="0",
        RAY_USAGE_STATS_ENABLED="0",
    )
    return env


def _existing_partition(cfg: FlowerConfig, folder: Path) -> list[Path]:
    clients, info = load_shards(folder)
    cfg.data.num_clients = len(clients)
    cfg.num_features, cfg.num_classes = info["num_features"], info["num_classes"]
    return [folder / f"client_{c.client_id}.pt" for c in clients]


def supernode_cmd(port: int, shard: Path, out: Path, extra_config: str = "") -> list[str]:
    """The ``flower-supernode`` command of one node on loopback: SuperLink at ``127.0.0.1:port``, the node
    reading only ``shard`` and saving its model under ``out``; ``extra_config``: more ``key=value`` node
    config entries (TOML values)."""
    config = f'data-path="{shard}" out-dir="{out}" {extra_config}'.strip()
    return [_bin("flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{port}", "--port",
            str(free_port()), "--node-config", config]  # fmt: skip


def run_loopback_deployment(
    cfg: FlowerConfig,
    workdir: str | Path,
    timeout_s: float = 600.0,
    shards: str | Path | None = None,
    app: str | Path | None = None,
    node_config: dict[int, str] | None = None,
    nodes: list[int] | None = None,
) -> SimResult:
    """Run ``cfg`` as a SuperLink + one SuperNode per shard on 127.0.0.1.

    Args:
        cfg: the run (its ``out`` receives the server's outputs and, from each node, ``models/``).
        workdir: folder for the shards, the app, ``FLWR_HOME`` (its ``config.toml`` names the SuperLink's
            address) and the process logs.
        timeout_s: limit for the whole run.
        shards: a folder written by ``quintet fedaux partition`` (default: partition ``cfg.data`` into
            ``workdir/shards``); ``cfg.data`` is then not read at all.
        app: an app folder to run instead of the one written from ``cfg`` (e.g. with another ClientApp).
        node_config: extra node-config entries per node index (``{1: 'key="value"'}``).
        nodes: the node indices to start (default: all); others can join later with :func:`supernode_cmd`.

    Returns:
        The server's result, read back from ``cfg.out``.
    """
    work = Path(workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    cfg.out = Path(cfg.out).resolve()
    paths = _existing_partition(cfg, Path(shards)) if shards else write_partition(cfg, work / "shards")
    app = Path(app) if app is not None else write_flower_app(work / "app", cfg)
    home = work / "flwr_home"
    home.mkdir(exist_ok=True)
    port = free_port()
    (home / "config.toml").write_text(
        f'[superlink.{_CONNECTION}]\naddress = "127.0.0.1:{port}"\ninsecure = true\n', encoding="utf-8"
    )
    env = _env(home)
    with ExitStack() as stack:
        link = [
            _bin("flower-superlink"),
            "--insecure",
            "--disable-runtime-dependency-installation",
            "--port",
            str(port),
        ]
        _start(stack, link, work, env, work / "superlink.log")
        _wait_port(port, 60)
        for i, shard in enumerate(paths):
            if nodes is None or i in nodes:
                node = supernode_cmd(port, shard, Path(cfg.out), (node_config or {}).get(i, ""))
                _start(stack, node, work, env, work / f"supernode{i}.log")
        run = [_bin("flwr"), "run", str(app), _CONNECTION, "--stream", "--run-config", f"out='{cfg.out}'"]
        out = subprocess.run(run, cwd=work, env=env, capture_output=True, text=True, timeout=timeout_s)
        (work / "flwr_run.log").write_text(out.stdout + out.stderr, encoding="utf-8")
        if out.returncode != 0:
            raise RuntimeError(f"flwr run failed ({out.returncode}); see {work / 'flwr_run.log'}")
    return read_result(Path(cfg.out))
