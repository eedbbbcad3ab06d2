"""A stand-in for the AIPerf executable in process-lifecycle tests: it starts a child, like AIPerf's workers.

    python tests/servers/fake_loadgen.py profile ... --concurrency C ... --artifact-dir DIR ...

Takes AIPerf's command line (only --artifact-dir and --concurrency are read). Environment:
FAKE_LOADGEN_PID_DIR, where it writes `loadgen-<pid>` and `worker-<pid>` files naming itself and its
child; FAKE_LOADGEN_MODE: `hang` (run until stopped), `fail` (exit 1, leaving the worker running), or
`ok` (write tests/fixtures/bench/aiperf_c2's export for the concurrency asked, exit 0, leaving the worker
running: a load generator that leaks a process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "bench" / "aiperf_c2" / "profile_export_aiperf.json"


def _arg(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def main(argv: list[str]) -> int:
    pid_dir = Path(os.environ["FAKE_LOADGEN_PID_DIR"])
    mode = os.environ.get("FAKE_LOADGEN_MODE", "hang")
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    pid_dir.mkdir(parents=True, exist_ok=True)
    (pid_dir / f"worker-{worker.pid}").write_text(str(worker.pid))
    (pid_dir / f"loadgen-{os.getpid()}").write_text(str(os.getpid()))
    if mode == "fail":
        print("fake load generator: failing on purpose", flush=True)
        return 1
    if mode == "ok":
        export = json.loads(FIXTURE.read_text())
        concurrency = int(_arg(argv, "--concurrency"))
        for phase in export["input_config"]["phases"]:
            if phase.get("kind", phase.get("name")) == "profiling":
                phase["concurrency"] = concurrency
        out = Path(_arg(argv, "--artifact-dir"))
        out.mkdir(parents=True, exist_ok=True)
        (out / FIXTURE.name).write_text(json.dumps(export))
        return 0
    print("fake load generator: running until stopped", flush=True)
    time.sleep(600)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
