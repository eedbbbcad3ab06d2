"""`trtq bench` never leaves a process behind: real trtq, real stand-in server and load generator processes.

The server stand-in (tests/servers/fake_health_server.py behind a `trtllm-serve` on PATH) and the load
generator stand-in (tests/servers/fake_loadgen.py as AIPerf) each start a child of their own, as
trtllm-serve's MPI workers and AIPerf's workers do. Every process writes its PID; after trtq exits —
by SIGTERM, SIGINT, a failing load generator, or success — none of them may be alive.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.bench.test_serve import _alive

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = ROOT / "tests" / "build" / "checkpoints" / "fp8_only" / "hf"


def _write_build_record(engine: Path) -> None:
    """The build_record.json that `trtq build` (PyTorch backend, no GPU needed) writes for a test checkpoint."""
    from trtq.cli import main

    assert main(["build", str(CHECKPOINT), "--gpu", "H100", "-o", str(engine)]) == 0


def _executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def stand_ins(tmp_path):
    """(bin dir with `trtllm-serve`, the AIPerf stand-in, the PID directory)."""
    bin_dir, pids = tmp_path / "bin", tmp_path / "pids"
    bin_dir.mkdir()
    pids.mkdir()
    # trtllm-serve MODEL ... --host H --port P: only --port matters to the stand-in.
    _executable(bin_dir / "trtllm-serve", f"""#!{sys.executable}
import os, sys
port = sys.argv[sys.argv.index("--port") + 1]
open(os.path.join({str(pids)!r}, f"server-{{os.getpid()}}"), "w").write(str(os.getpid()))
os.execv(sys.executable, [sys.executable, "-m", "tests.servers.fake_health_server", "--port", port,
                          "--child-pid-file", os.path.join({str(pids)!r}, "server-child")])
""")
    loadgen = _executable(tmp_path / "aiperf", f'#!/bin/sh\nexec "{sys.executable}" '
                                               f'"{ROOT / "tests" / "servers" / "fake_loadgen.py"}" "$@"\n')
    return bin_dir, loadgen, pids


def _start_bench(tmp_path: Path, stand_ins, mode: str) -> subprocess.Popen:
    bin_dir, loadgen, pids = stand_ins
    engine = tmp_path / "engine"
    _write_build_record(engine)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "TRTQ_TEST_LOADGEN": str(loadgen),
           "FAKE_LOADGEN_PID_DIR": str(pids), "FAKE_LOADGEN_MODE": mode,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "tests.servers.trtq_with_loadgen", "bench", "--engine", str(engine),
               "--model", "smollm2-135m", "--tool", "aiperf", "--concurrency", "1,2", "--requests", "1",
               "--warmup", "0", "--startup-timeout", "120", "-o", str(tmp_path / "out")]
    # Its own session, like a shell job: a signal sent to trtq reaches trtq alone. SIGINT at its default, as in a
    # foreground job: a test run in the background (`make test &`) inherits SIGINT ignored, and a program started
    # with SIGINT ignored rightly keeps ignoring it (Python then installs no KeyboardInterrupt handler).
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"trtq exited ({process.returncode}) before {what}:\n{process.stdout.read()}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _started(pids: Path) -> dict[str, int]:
    return {p.name: int(p.read_text()) for p in pids.iterdir() if p.read_text().strip()}


def _survivors(started: dict[str, int], timeout: float = 5.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        alive = {name: pid for name, pid in started.items() if _alive(pid)}
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


@pytest.fixture
def cleanup():
    """Kill whatever a failing test leaves, so one failure does not leak into the next test."""
    started: list[dict[str, int]] = []
    yield started
    for group in started:
        for pid in group.values():
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_to_trtq_during_the_sweep_stops_server_and_load_generator(tmp_path, stand_ins, cleanup, sig, status):
    pids = stand_ins[2]
    process = _start_bench(tmp_path, stand_ins, "hang")
    everything = lambda: {"server-child", "loadgen", "worker"} <= {n.split("-")[0] if n != "server-child" else n
                                                                   for n in _started(pids)}
    _wait_for(everything, process, "the server and the load generator started")
    started = {**_started(pids), "trtq": process.pid}
    cleanup.append(started)
    assert all(_alive(pid) for pid in started.values()), started
    process.send_signal(sig)
    # Stopping takes seconds (grace periods of 10-15 s at most); the margin is for a loaded 2-core machine.
    output, _ = process.communicate(timeout=300)
    assert process.returncode == status, output
    assert _survivors(started) == {}, f"left running after {sig.name}:\n{output}"


def test_failing_load_generator_stops_its_leftovers_and_the_server(tmp_path, stand_ins, cleanup):
    process = _start_bench(tmp_path, stand_ins, "fail")
    output, _ = process.communicate(timeout=300)
    started = _started(stand_ins[2])
    cleanup.append(started)
    assert process.returncode == 2, output
    assert "aiperf exited with status 1 at concurrency 1" in output
    assert {"server-child", "worker"} <= {n.split("-")[0] if n != "server-child" else n for n in started}
    assert _survivors(started) == {}, output


def test_successful_sweep_leaves_nothing_running(tmp_path, stand_ins, cleanup):
    process = _start_bench(tmp_path, stand_ins, "ok")
    output, _ = process.communicate(timeout=300)
    started = _started(stand_ins[2])
    cleanup.append(started)
    assert process.returncode == 0, output
    # One load-generator run (and its leaked worker) per concurrency, one server for the sweep.
    assert sorted(n.split("-")[0] for n in started) == ["loadgen", "loadgen", "server", "server", "worker", "worker"]
    assert (tmp_path / "out" / "bench.parquet").is_file()
    assert _survivors(started) == {}, output
