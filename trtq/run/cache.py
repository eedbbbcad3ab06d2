"""Content-addressed stage cache of `trtq run`: redo a stage only when what it depends on changed.

Each unit of work (a stage, or a stage for one GPU) lives in `<output>/<stage>/<unit>/`. Its key is
the sha256 of its settings, the data hash of every upstream artifact it reads and trtq's version. A
data hash is what an artifact says, not when or how it was made: a trtq artifact is hashed without its
`metadata` (created_at, command line, input paths) and its class's VOLATILE_FIELDS (a solver's wall
time), any other file (a checkpoint's tensors) byte for byte. So an upstream unit redone with the same
result (`--from`, a resumed kill, `--force`) leaves the units after it cached. When a unit finishes,
`.complete.json` is written last, atomically: the key, and each artifact's data hash, size and mtime. A unit is up to date when its marker's key is the key asked for and every file it
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
MARKER_SCHEMA_VERSION = 2  # 2: `files` holds data hashes (1: sha256 of the bytes, timestamps included)
_STRUCTURED = (".json", ".yaml", ".yml")


def content_key(**parts: Any) -> str:
    """sha256 over JSON of the parts (sorted keys) and trtq's version."""
    payload = json.dumps({"trtq": __version__, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def _artifact_classes() -> dict[str, type]:
    """The artifact kinds a run writes (an explicit list: a kind not here is hashed without `metadata` only)."""
    from trtq.artifacts.eval import EvalResult
    from trtq.artifacts.layers import LayerGraph
    from trtq.artifacts.plan import Plan
    from trtq.artifacts.profile import Profile
    from trtq.artifacts.quantize import QuantizeSummary
    from trtq.artifacts.report import ComparisonReport, PlanReport
    from trtq.artifacts.run import Front, Selection
    from trtq.artifacts.sensitivity import Sensitivity

    classes = (
        LayerGraph,
        Profile,
        Sensitivity,
        Front,
        Plan,
        Selection,
        EvalResult,
        QuantizeSummary,
        ComparisonReport,
        PlanReport,
    )
    return {cls.KIND: cls for cls in classes}


def _drop(data: dict, dotted: str) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        data = data.get(part)
        if not isinstance(data, dict):
            return
    data.pop(last, None)


def data_sha256(path: str | Path) -> str:
    """sha256 of what a file says: a trtq artifact without its metadata and volatile fields, else its bytes."""
    p = Path(path)
    if p.suffix.lower() in _STRUCTURED:
        from trtq.artifacts.io import read_structured
        from trtq.errors import ArtifactError

        try:
            data = read_structured(p, "artifact")
        except ArtifactError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("artifact"), str) and "metadata" in data:
            data.pop("metadata")
            cls = _artifact_classes().get(data["artifact"])
            for dotted in getattr(cls, "VOLATILE_FIELDS", ()):
                _drop(data, dotted)
            return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    return sha256_file(p)


@dataclass
class Completed:
    key: str
    files: dict[str, str]  # path relative to the unit's directory -> data hash (data_sha256)
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
        return Completed(
            key=data["key"], files=data["files"], summary=data.get("summary", {}), seconds=data.get("seconds", 0.0)
        )

    def begin(self, stage: str, unit: str) -> Path:
        """Forget the unit's completion and its old files; return its (empty) directory."""
        directory = self.unit_dir(stage, unit)
        self._marker(stage, unit).unlink(missing_ok=True)  # first: from here on the unit is incomplete
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def complete(
        self, stage: str, unit: str, key: str, files: list[Path], summary: dict[str, Any], seconds: float
    ) -> Completed:
        """Record the unit as done: called after every artifact it lists is in place."""
        base = self.unit_dir(stage, unit)
        hashes, stats = {}, {}
        for path in files:
            rel = str(Path(path).relative_to(base))
            if Path(path).is_dir():
                for f in sorted(p for p in Path(path).rglob("*") if p.is_file()):
                    sub = str(f.relative_to(base))
                    hashes[sub] = data_sha256(f)
                    st = f.stat()
                    stats[sub] = [st.st_size, st.st_mtime_ns]
                continue
            hashes[rel] = data_sha256(path)
            st = Path(path).stat()
            stats[rel] = [st.st_size, st.st_mtime_ns]
        record = {
            "schema_version": MARKER_SCHEMA_VERSION,
            "stage": stage,
            "unit": unit,
            "key": key,
            "files": hashes,
            "stats": stats,
            "summary": summary,
            "seconds": round(seconds, 3),
        }
        atomic_write_text(self._marker(stage, unit), json.dumps(record, indent=1, sort_keys=True) + "\n")
        return Completed(key=key, files=hashes, summary=summary, seconds=seconds)
