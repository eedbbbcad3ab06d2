"""Every test directory contributes tests to a plain `pytest` run (the one `make test` and CI make).

A directory can silently drop out: pytest's default `norecursedirs` skips any directory named
`build`, so tests/build/ collected nothing for a long time while the suite still reported "passed".
This runs the same collection `make test` does and checks each directory holding test files.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"


def _test_directories() -> list[str]:
    directories = {p.parent.relative_to(ROOT).as_posix() for p in TESTS.rglob("test_*.py")}
    directories |= {p.parent.relative_to(ROOT).as_posix() for p in TESTS.rglob("*_test.py")}
    return sorted(directories)


@pytest.fixture(scope="module")
def collected() -> list[str]:
    """Node ids that a plain `pytest` from the repository root collects (its testpaths, its config)."""
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [line.strip() for line in result.stdout.splitlines() if "::" in line]


@pytest.mark.parametrize("directory", _test_directories())
def test_every_test_directory_collects_tests(collected, directory):
    files = sorted(p.name for p in (ROOT / directory).glob("test_*.py"))
    mine = [node for node in collected if node.split("::")[0].rsplit("/", 1)[0] == directory]
    assert mine, f"{directory} has test files ({', '.join(files)}) but a plain `pytest` collects none of them"


def test_the_directories_are_found():
    directories = _test_directories()
    # The check is only as good as its list: it must see the known directories, build among them.
    assert {"tests", "tests/build", "tests/bench", "tests/report", "tests/sensitivity"} <= set(directories)
