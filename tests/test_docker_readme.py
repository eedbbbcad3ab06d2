"""docker/README.md's container test command sets every variable the NGC tests need, or they skip there too."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_container_test_command_sets_every_required_test_variable():
    readme = (ROOT / "docker" / "README.md").read_text(encoding="utf-8")
    [command] = [line for line in readme.splitlines() if "pytest -m ngc" in line]
    directories = re.search(r"pytest -m ngc ([^']+)", command).group(1).split()
    # A variable read without a default (os.environ.get("X")) is one the test skips without.
    required = set()
    for directory in directories:
        for path in (ROOT / directory).rglob("test_*.py"):
            required |= set(re.findall(r"os\.environ\.get\(\"(TRTQ_TEST_\w+)\"\)", path.read_text(encoding="utf-8")))
    assert {"TRTQ_TEST_CHECKPOINT", "TRTQ_TEST_ENGINE"} <= required
    set_here = set(re.findall(r"\b(TRTQ_TEST_\w+)=", command))
    assert required <= set_here, f"the container command in docker/README.md never sets {sorted(required - set_here)}"
    # The engine it names is one the command builds first.
    engine = re.search(r"TRTQ_TEST_ENGINE=(\S+)", command).group(1)
    assert re.search(rf"trtq build \S+ .*-o {re.escape(engine)}\b", command), command
