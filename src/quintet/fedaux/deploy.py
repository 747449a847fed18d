"""A real Flower deployment on loopback: one SuperLink, K SuperNodes, ``flwr run`` (Flower 1.42).

This is the documented recipe (docs/fedaux.md) as a function, used by the integration test and by
``quintet fedaux deploy-local``. Every process is started by this function and stopped by it (by PID).

Steps:
1. ``flower-superlink --insecure --disable-runtime-dependency-installation --port P`` (HTTP on 127.0.0.1:P).
2. For i in 0..K-1: ``flower-supernode --insecure --superlink 127.0.0.1:P --port Q_i
   --node-config "partition-id=i num-partitions=K"``.
3. ``$FLWR_HOME/config.toml`` gets a ``[superlink.<name>]`` connection (address, insecure).
4. ``flwr run <app-dir> <name> --stream`` with the app folder of :func:`~quintet.fedaux.flower.write_flower_app`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from quintet.fedaux.flower import FlowerConfig, write_flower_app
from quintet.fedaux.simulate import SimResult

__all__ = ["free_port", "run_loopback_deployment"]


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


def run_loopback_deployment(cfg: FlowerConfig, workdir: str | Path, timeout_s: float = 600.0) -> SimResult:
    """Run ``cfg`` as a SuperLink + ``cfg.data.num_clients`` SuperNodes deployment on 127.0.0.1.

    Args:
        cfg: the run (its ``out`` receives the server's outputs).
        workdir: folder for the app, ``FLWR_HOME`` and the process logs.
        timeout_s: limit for the whole run.

    Returns:
        The server's result, read back from ``cfg.out``.
    """
    from quintet.fedaux.flower import _read_result

    work = Path(workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    cfg.out = Path(cfg.out).resolve()
    app = write_flower_app(work / "app", cfg)
    home = work / "flwr_home"
    home.mkdir(exist_ok=True)
    port = free_port()
    (home / "config.toml").write_text(
        f'[superlink.quintet-loopback]\naddress = "127.0.0.1:{port}"\ninsecure = true\n', encoding="utf-8"
    )
    env = dict(os.environ)
    env.update(
        FLWR_HOME=str(home),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        FLWR_TELEMETRY_ENABLED="0",
        RAY_USAGE_STATS_ENABLED="0",
    )
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        log = open(work / "superlink.log", "wb")  # noqa: SIM115 - closed in finally
        logs.append(log)
        procs.append(
            subprocess.Popen(
                [
                    _bin("flower-superlink"),
                    "--insecure",
                    "--disable-runtime-dependency-installation",
                    "--port",
                    str(port),
                ],
                cwd=work,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        _wait_port(port, 60)
        k = cfg.data.num_clients
        for i in range(k):
            log = open(work / f"supernode{i}.log", "wb")  # noqa: SIM115 - closed in finally
            logs.append(log)
            procs.append(
                subprocess.Popen(
                    [
                        _bin("flower-supernode"),
                        "--insecure",
                        "--superlink",
                        f"127.0.0.1:{port}",
                        "--port",
                        str(free_port()),
                        "--node-config",
                        f"partition-id={i} num-partitions={k}",
                    ],
                    cwd=work,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        out = subprocess.run(
            [_bin("flwr"), "run", str(app), "quintet-loopback", "--stream"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        (work / "flwr_run.log").write_text(out.stdout + out.stderr, encoding="utf-8")
        if out.returncode != 0:
            raise RuntimeError(f"flwr run failed ({out.returncode}); see {work / 'flwr_run.log'}")
        return _read_result(Path(cfg.out))
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        for f in logs:
            f.close()
