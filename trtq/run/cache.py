"""Content-addressed stage cache of `trtq run`: redo a stage only when what it depends on changed.

Each unit of work (a stage, or a stage for one GPU) lives in `<output>/<stage>/<unit>/`. Its key is
the sha256 of its settings, the sha256 of every upstream artifact it reads and trtq's version. When
a unit finishes, `.complete.json` is written last, atomically: the key, and each artifact's sha256,
size and mtime. A unit is up to date when its marker's key is the key asked for and every file it
lists is still there with the same size and mtime (sha256 is not re-read: a 16 GB checkpoint would
cost minutes). A unit about to run loses its marker first, so a run killed mid-stage (SIGKILL
included) leaves no marker, and the next run redoes that unit; every artifact is written atomically
(trtq.artifacts.io), so no file is ever half-written either.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trtq import __version__
from trtq.artifacts.io import atomic_write_text, sha256_file

MARKER = ".complete.json"
MARKER_SCHEMA_VERSION = 1


def content_key(**parts: Any) -> str:
    """sha256 over JSON of the parts (sorted keys) and trtq's version."""
    payload = json.dumps({"trtq": __version__, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class Completed:
    key: str
    files: dict[str, str]          # path relative to the unit's directory -> sha256
    summary: dict[str, Any]
    seconds: float


class StageCache:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def unit_dir(self, stage: str, unit: str) -> Path:
        return self.root / stage / unit

    def _marker(self, stage: str, unit: str) -> Path:
        return self.unit_dir(stage, unit) / MARKER

    def lookup(self, stage: str, unit: str, key: str | None = None) -> Completed | None:
        """The unit's completion record if it is complete (and for `key`, when given) and intact."""
        marker = self._marker(stage, unit)
        try:
            data = json.loads(marker.read_text())
        except (OSError, ValueError):
            return None
        if data.get("schema_version") != MARKER_SCHEMA_VERSION or (key is not None and data.get("key") != key):
            return None
        base = self.unit_dir(stage, unit)
        for rel, stat in data.get("stats", {}).items():
            try:
                st = (base / rel).stat()
            except OSError:
                return None
            if [st.st_size, st.st_mtime_ns] != stat:
                return None
        return Completed(key=data["key"], files=data["files"], summary=data.get("summary", {}),
                         seconds=data.get("seconds", 0.0))

    def begin(self, stage: str, unit: str) -> Path:
        """Forget the unit's completion and its old files; return its (empty) directory."""
        directory = self.unit_dir(stage, unit)
        self._marker(stage, unit).unlink(missing_ok=True)   # first: from here on the unit is incomplete
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def complete(self, stage: str, unit: str, key: str, files: list[Path], summary: dict[str, Any],
                 seconds: float) -> Completed:
        """Record the unit as done: called after every artifact it lists is in place."""
        base = self.unit_dir(stage, unit)
        hashes, stats = {}, {}
        for path in files:
            rel = str(Path(path).relative_to(base))
            if Path(path).is_dir():
                for f in sorted(p for p in Path(path).rglob("*") if p.is_file()):
                    sub = str(f.relative_to(base))
                    hashes[sub] = sha256_file(f)
                    st = f.stat()
                    stats[sub] = [st.st_size, st.st_mtime_ns]
                continue
            hashes[rel] = sha256_file(path)
            st = Path(path).stat()
            stats[rel] = [st.st_size, st.st_mtime_ns]
        record = {"schema_version": MARKER_SCHEMA_VERSION, "stage": stage, "unit": unit, "key": key,
                  "files": hashes, "stats": stats, "summary": summary, "seconds": round(seconds, 3)}
        atomic_write_text(self._marker(stage, unit), json.dumps(record, indent=1, sort_keys=True) + "\n")
        return Completed(key=key, files=hashes, summary=summary, seconds=seconds)
