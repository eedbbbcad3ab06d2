"""`trtq` with the AIPerf executable replaced by a stand-in, for process-lifecycle tests.

    TRTQ_TEST_LOADGEN=/path/to/stand-in python -m tests.servers.trtq_with_loadgen bench ...

trtq prefers the aiperf installed beside its interpreter, which a PATH entry cannot shadow; this
runs the real CLI (signal handling included) with only that lookup pointed at the stand-in.
"""

from __future__ import annotations

import os
import sys

from trtq.bench import loadgen

_real_find = loadgen._find_executable
loadgen._find_executable = lambda name: os.environ["TRTQ_TEST_LOADGEN"] if name == "aiperf" else _real_find(name)

if __name__ == "__main__":
    from trtq.cli import main

    raise SystemExit(main(sys.argv[1:]))
