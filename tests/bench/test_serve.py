"""trtllm-serve lifecycle, exercised with a real fake-server process (tests/servers/fake_health_server.py)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from trtq.bench.serve import free_port, healthy, running_server
from trtq.errors import ExternalToolError, MissingToolError

ROOT = Path(__file__).resolve().parents[2]


def _command(port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tests.servers.fake_health_server", "--port", str(port), *extra]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): read its state.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(autouse=True)
def _repo_root_cwd(monkeypatch):
    monkeypatch.chdir(ROOT)  # `python -m tests.servers...` resolves from the repository root


def test_server_is_healthy_inside_and_gone_with_its_children_after(tmp_path):
    port = free_port()
    pid_file = tmp_path / "child.pid"
    url = f"http://127.0.0.1:{port}/health"
    with running_server(_command(port, "--delay", "1.0", "--child-pid-file", str(pid_file)), url,
                        tmp_path / "server.log", startup_timeout_s=30, poll_s=0.2) as process:
        assert healthy(url)
        server_pid, child_pid = process.pid, int(pid_file.read_text())
        assert _alive(child_pid)
    assert not healthy(url)
    assert _wait_dead(server_pid) and _wait_dead(child_pid)


@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt])
def test_failure_or_ctrl_c_inside_still_stops_the_server(tmp_path, failure):
    port = free_port()
    pid_file = tmp_path / "child.pid"
    url = f"http://127.0.0.1:{port}/health"
    with pytest.raises(failure):
        with running_server(_command(port, "--child-pid-file", str(pid_file)), url, tmp_path / "server.log",
                            startup_timeout_s=30, poll_s=0.2) as process:
            server_pid, child_pid = process.pid, int(pid_file.read_text())
            raise failure()
    assert _wait_dead(server_pid) and _wait_dead(child_pid)


def test_a_server_that_ignores_sigterm_is_killed(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/health"
    start = time.monotonic()
    with running_server(_command(port, "--ignore-term"), url, tmp_path / "server.log",
                        startup_timeout_s=30, grace_s=1.0, poll_s=0.2) as process:
        server_pid = process.pid
    assert _wait_dead(server_pid)
    assert time.monotonic() - start < 20


def test_server_exiting_before_health_is_an_error_naming_the_log(tmp_path):
    port = free_port()
    pid_file = tmp_path / "child.pid"
    log = tmp_path / "server.log"
    with pytest.raises(ExternalToolError, match=r"exited with status 3 .*log: .*server\.log"):
        with running_server(_command(port, "--delay", "60", "--exit-after", "0.5", "--child-pid-file", str(pid_file)),
                            f"http://127.0.0.1:{port}/health", log, startup_timeout_s=30, poll_s=0.2):
            pass
    assert _wait_dead(int(pid_file.read_text()))


def test_startup_timeout_is_an_error_and_stops_the_server(tmp_path):
    port = free_port()
    pid_file = tmp_path / "child.pid"
    with pytest.raises(ExternalToolError, match="did not answer"):
        with running_server(_command(port, "--delay", "60", "--child-pid-file", str(pid_file)),
                            f"http://127.0.0.1:{port}/health", tmp_path / "server.log",
                            startup_timeout_s=2, poll_s=0.2):
            pass
    assert _wait_dead(int(pid_file.read_text()))


def test_missing_server_binary_is_one_line(tmp_path):
    with pytest.raises(MissingToolError, match="not found on PATH"):
        with running_server(["trtllm-serve-does-not-exist"], "http://127.0.0.1:9/health", tmp_path / "s.log"):
            pass
