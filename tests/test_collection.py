"""Every test directory is collected: no directory with tests may match pytest's norecursedirs.

pytest's default norecursedirs contains `build`, which skipped tests/build/ (26 tests) silently.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

TESTS = Path(__file__).parent


def test_no_test_directory_is_skipped_by_norecursedirs(pytestconfig):
    patterns = pytestconfig.getini("norecursedirs")
    test_dirs = sorted({p.parent for p in TESTS.rglob("test_*.py")} - {TESTS})
    assert TESTS / "build" in test_dirs
    skipped = [d for d in test_dirs
               if any(fnmatch.fnmatch(part, pattern) for part in d.relative_to(TESTS).parts for pattern in patterns)]
    assert skipped == [], f"pytest would not collect {skipped}: norecursedirs {patterns}"

