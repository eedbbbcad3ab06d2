"""The `trtllm-serve` lifecycle: start on a free local port, wait for /health, always stop.

The server runs in its own session (process group), so Ctrl-C in the terminal reaches trtq
only; trtq then stops the whole group (SIGTERM, then SIGKILL after a grace period) in a
`finally`, on success, on failure, on KeyboardInterrupt and on SIGTERM/SIGHUP (see
trtq/bench/process_group.py) alike: no orphan server, including the MPI workers trtllm-serve
spawns for tp > 1.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from trtq.bench.process_group import start_group, stop_group
from trtq.errors import ExternalToolError, MissingToolError

HEALTH_PATH = "/health"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def healthy(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (local URL we built)
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


@contextlib.contextmanager
def running_server(
    command: list[str],
    health_url: str,
    log_path: Path,
    startup_timeout_s: float = 1800.0,
    grace_s: float = 15.0,
    poll_s: float = 1.0,
    env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen]:
    """Start `command` (an argument list), wait until `health_url` answers 2xx, yield, then stop it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w", encoding="utf-8")
    try:
        try:
            process = start_group(command, log, env)
        except FileNotFoundError:
            raise MissingToolError(f"{command[0]} not found on PATH: run inside the container in docker/") from None
        try:
            deadline = time.monotonic() + startup_timeout_s
            while not healthy(health_url):
                if process.poll() is not None:
                    raise ExternalToolError(
                        f"{Path(command[0]).name} exited with status {process.returncode} before {health_url} "
                        f"answered; log: {log_path}"
                    )
                if time.monotonic() > deadline:
                    raise ExternalToolError(
                        f"{Path(command[0]).name} did not answer {health_url} within {startup_timeout_s:g} s; "
                        f"log: {log_path}"
                    )
                time.sleep(poll_s)
            yield process
        finally:
            stop_group(process, grace_s)
    finally:
        log.close()
