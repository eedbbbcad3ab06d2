"""Child processes that never outlive trtq: each runs as the leader of its own process group.

trtq bench starts two kinds of programs that start programs of their own: trtllm-serve (MPI
workers for tp > 1) and the load generator (AIPerf's worker processes). Each is started in its own
session, so its whole tree shares one process group, and stopped as a group — SIGTERM, then
SIGKILL after a grace period — on success, on failure and on interruption alike. Stopping only the
direct child (what `subprocess.run` does on Ctrl-C) leaves the grandchildren running.

Python's default SIGTERM action kills the interpreter without running any `finally`, so
`signals_stop_children` turns SIGTERM and SIGHUP into an exception while trtq has children: the
`finally` blocks stop every group, then trtq exits 128 + the signal number, as a shell reports it.

The leader is waited for without being reaped (waitid WNOWAIT) until its group has been killed: a
reaped leader's process id, which is also the group id, could be handed to an unrelated process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import IO

from trtq.errors import ExternalToolError

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class StopSignal(BaseException):
    """SIGTERM or SIGHUP arrived: unwinds like KeyboardInterrupt so that every `finally` runs."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def signals_stop_children() -> Iterator[None]:
    """While inside: SIGTERM/SIGHUP raise StopSignal; on leaving by one, exit 128 + signal number."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return

    def raise_stop(signum, _frame):
        raise StopSignal(signum)

    previous = {sig: signal.signal(sig, raise_stop) for sig in FORWARDED_SIGNALS}
    try:
        yield
    except StopSignal as stop:
        import sys

        print(f"trtq: stopped by {signal.Signals(stop.signum).name}; stopped everything it started", file=sys.stderr)
        raise SystemExit(128 + stop.signum) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _leader_exited(process: subprocess.Popen) -> bool:
    """True once the leader has exited; it stays unreaped (a zombie) so its group id stays ours."""
    if process.returncode is not None:
        return True
    try:
        info = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def wait_leader(process: subprocess.Popen, timeout_s: float | None = None, poll_s: float = 0.05) -> bool:
    """Wait (without reaping) until the leader exits; False when `timeout_s` passed first."""
    if timeout_s is None:
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
        return True
    deadline = time.monotonic() + timeout_s
    while not _leader_exited(process):
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
    return True


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_group(process: subprocess.Popen, grace_s: float) -> None:
    """Stop the leader's whole group: SIGTERM, up to `grace_s` for the leader, then SIGKILL; reap."""
    if process.returncode is None:
        if not _leader_exited(process):
            _killpg(process.pid, signal.SIGTERM)
            wait_leader(process, grace_s)
        # Whatever is left in the group (children of a leader that exited, or a leader that ignored
        # SIGTERM) is killed while the unreaped leader still holds the group id.
        _killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=max(grace_s, 1.0))


def start_group(command: list[str], stdout: IO | int | None, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `command` (an argument list) as the leader of a new session and process group."""
    return subprocess.Popen(
        command, stdout=stdout, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env
    )


def run_group(command: list[str], stdout: IO, env: dict[str, str] | None = None, grace_s: float = 10.0) -> int:
    """Run `command` to completion in its own group; its group is stopped however this returns. Exit status."""
    try:
        process = start_group(command, stdout, env)
    except OSError as exc:
        raise ExternalToolError(f"{command[0]} could not start: {exc}") from None
    try:
        wait_leader(process)
    finally:
        stop_group(process, grace_s)
    return process.returncode
