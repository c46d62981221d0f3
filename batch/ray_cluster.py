"""A one-node Ray cluster on loopback, started and stopped with the ``ray`` command beside
this Python: what the tests and ``benchmarks/bench_batch.py`` run ``iplap batch --ray``
against. Not for production clusters: it has no token authentication (see below).

Token authentication is turned off explicitly (``RAY_AUTH_MODE=disabled``). Ray 2.60's
``ray start`` turns it on whenever ``~/.ray/auth_token`` exists (any earlier ``ray.init()``
without an address writes that file), while a driver given an explicit address, as
``iplap batch --ray HOST:PORT`` is, never sends the token unless ``RAY_AUTH_MODE=token`` is
set: a stray file in the home directory would make every client fail with
``InvalidAuthToken``. The cluster listens on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from .. import IplapError


def _ray_command() -> str:
    ray = Path(sys.executable).with_name("ray")
    if not ray.exists():
        raise IplapError(f"no `ray` command beside {sys.executable}: pip install 'iplap[ray]'")
    return str(ray)


def loopback_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a loopback cluster's daemons (no usage stats, no token
    authentication) with ``extra`` on top."""
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", **(extra or {})}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_loopback_cluster(temp_dir: Path, *, num_cpus: int, object_store_bytes: int,
                           env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Start the head node, its files and log (``start.log``) under ``temp_dir``; its workers
    see ``loopback_env(env)``. Returns its address, ``127.0.0.1:PORT``."""
    port = free_port()
    temp_dir.mkdir(parents=True, exist_ok=True)
    # The cluster's daemons outlive `ray start` and keep its stdout and stderr: a file, not a
    # pipe, or they die of SIGPIPE once nobody reads it.
    log_path = temp_dir / "start.log"
    with open(log_path, "w") as log:
        started = subprocess.run([_ray_command(), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                                  f"--num-cpus={num_cpus}", "--include-dashboard=false", "--disable-usage-stats",
                                  f"--object-store-memory={object_store_bytes}", f"--temp-dir={temp_dir}"],
                                 stdout=log, stderr=subprocess.STDOUT, env=loopback_env(env), timeout=timeout)
    if started.returncode != 0:
        raise RuntimeError(f"`ray start` failed ({started.returncode}):\n{log_path.read_text()[-3000:]}")
    return f"127.0.0.1:{port}"


def stop_loopback_cluster(timeout: float = 300) -> None:
    """``ray stop --force``: stops every Ray daemon of this user on this machine."""
    subprocess.run([_ray_command(), "stop", "--force"], capture_output=True, env=loopback_env(), timeout=timeout)
