"""A stand-in for trtllm-serve in lifecycle tests: /health after a delay, plus a child process.

    python -m tests.servers.fake_health_server --port P [--delay S] [--child-pid-file F] [--exit-after S]

The child (a sleeping process in the same process group, like trtllm-serve's MPI workers) proves that
stopping the server stops its whole group. --ignore-term makes the server ignore SIGTERM, so the
lifecycle code has to escalate to SIGKILL.
"""

from __future__ import annotations

import argparse
import http.server
import signal
import subprocess
import sys
import threading
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before /health answers 200")
    parser.add_argument("--child-pid-file")
    parser.add_argument("--exit-after", type=float, help="exit with status 3 after this many seconds")
    parser.add_argument("--ignore-term", action="store_true")
    args = parser.parse_args()
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    if args.child_pid_file:
        with open(args.child_pid_file, "w") as handle:
            handle.write(str(child.pid))
    ready_at = time.monotonic() + args.delay

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server API)
            ok = self.path == "/health" and time.monotonic() >= ready_at
            self.send_response(200 if ok else 503)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", args.port), Handler)
    if args.exit_after is not None:
        def stop():
            time.sleep(args.exit_after)
            child.kill()
            import os
            os._exit(3)
        threading.Thread(target=stop, daemon=True).start()
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
