"""A one-node Ray cluster on loopback, started and stopped with the ``ray`` command beside
this Python: what the tests and ``benchmarks/bench_batch.py`` run ``iplap batch --ray``
against. For a trusted machine's tests and benchmarks, not for production.

Token authentication is set explicitly either way (``RAY_AUTH_MODE``), never left to Ray
2.60's default: ``ray start`` turns it on whenever ``~/.ray/auth_token`` exists (any earlier
``ray.init()`` without an address writes that file), while a driver given an explicit
address, as ``iplap batch --ray HOST:PORT`` is, sends no token unless ``RAY_AUTH_MODE=token``
is set in its environment, so a stray file in the home directory would make every client
fail with ``InvalidAuthToken``. Without a token the cluster takes any client that reaches it,
and its GCS and raylet ports listen on every interface whatever ``--node-ip-address`` says
(seen with ``ss -ltn``): give ``token`` where that matters, and :func:`auth_env` of it to the
clients (read when ``ray`` is imported: a process that imported it already keeps its mode).
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


def auth_env(token: str | None) -> dict[str, str]:
    """The variables that make a Ray process use ``token`` (or no token authentication)."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token} if token else {"RAY_AUTH_MODE": "disabled"}


def _daemon_env(token: str | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **auth_env(token), **(extra or {})}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_loopback_cluster(temp_dir: Path, *, num_cpus: int, object_store_bytes: int, token: str | None = None,
                           env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Start the head node, its files and log (``start.log``) under ``temp_dir``, with token
    authentication if ``token`` is given; its workers see this process's environment and
    ``env``. Returns its address, ``127.0.0.1:PORT``."""
    port = free_port()
    temp_dir.mkdir(parents=True, exist_ok=True)
    # The cluster's daemons outlive `ray start` and keep its stdout and stderr: a file, not a
    # pipe, or they die of SIGPIPE once nobody reads it.
    log_path = temp_dir / "start.log"
    with open(log_path, "w") as log:
        started = subprocess.run([_ray_command(), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                                  f"--num-cpus={num_cpus}", "--include-dashboard=false", "--disable-usage-stats",
                                  f"--object-store-memory={object_store_bytes}", f"--temp-dir={temp_dir}"],
                                 stdout=log, stderr=subprocess.STDOUT, env=_daemon_env(token, env), timeout=timeout)
    if started.returncode != 0:
        raise RuntimeError(f"`ray start` failed ({started.returncode}):\n{log_path.read_text()[-3000:]}")
    return f"127.0.0.1:{port}"


def stop_loopback_cluster(timeout: float = 300) -> None:
    """``ray stop --force``: stops every Ray daemon of this user on this machine."""
    subprocess.run([_ray_command(), "stop", "--force"], capture_output=True, env=_daemon_env(None), timeout=timeout)
