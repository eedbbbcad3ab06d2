"""Atomic writes, content hashes, metadata and validated load/save of artifacts."""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from trtq import __version__
from trtq.artifacts.paths import ARTIFACT_SUFFIXES, _temp_prefix, make_temp_beside
from trtq.errors import ArtifactError, InputError, storage_errno, write_error

# Packages whose versions change results; recorded in every artifact that can see them.
_TRACKED_PACKAGES = (
    "torch",
    "transformers",
    "nvidia-modelopt",
    "pulp",
    "highspy",
    "numpy",
    "pandas",
    "tensorrt-llm",
    "aiperf",
    "genai-perf",
)


class StrictModel(BaseModel):
    """Base for every settings and artifact model: a typo is an error, not a default."""

    model_config = ConfigDict(extra="forbid", frozen=False)


class InputRef(StrictModel):
    path: str
    sha256: str | None = None


class Metadata(StrictModel):
    created_at: str
    trtq_version: str
    command: list[str] = []
    versions: dict[str, str] = {}
    inputs: dict[str, InputRef] = {}
    seed: int | None = None
    notes: list[str] = []


class Artifact(StrictModel):
    """An artifact: `artifact` names its kind, `schema_version` its layout."""

    KIND: ClassVar[str] = ""
    SCHEMA_VERSION: ClassVar[int] = 1
    # Dotted paths of fields that record how the artifact was made on this machine (wall time), not what it
    # says: left out of its data hash (trtq.run.cache.data_sha256), with `metadata`.
    VOLATILE_FIELDS: ClassVar[tuple[str, ...]] = ()

    artifact: str
    schema_version: int
    metadata: Metadata

    @classmethod
    def create(cls: type[A], **fields: Any) -> A:
        """A new artifact of this kind, written at the current schema version."""
        return cls(artifact=cls.KIND, schema_version=cls.SCHEMA_VERSION, **fields)


A = TypeVar("A", bound=Artifact)


@functools.lru_cache(maxsize=1)
def _tracked_versions() -> tuple[tuple[str, str], ...]:
    # Each lookup scans site-packages; a command that writes two artifacts paid it twice.
    versions = {"python": platform.python_version(), "trtq": __version__}
    for name in _TRACKED_PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return tuple(versions.items())


def installed_versions(extra: dict[str, str] | None = None) -> dict[str, str]:
    versions = dict(_tracked_versions())
    versions.update(extra or {})
    return versions


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def input_ref(path: str | os.PathLike[str]) -> InputRef:
    p = Path(path)
    return InputRef(path=str(p), sha256=sha256_file(p) if p.is_file() else None)


def make_metadata(
    inputs: Mapping[str, str | os.PathLike[str] | InputRef] | None = None,
    seed: int | None = None,
    notes: list[str] | None = None,
    versions: dict[str, str] | None = None,
) -> Metadata:
    refs = {name: value if isinstance(value, InputRef) else input_ref(value) for name, value in (inputs or {}).items()}
    return Metadata(
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        trtq_version=__version__,
        command=list(sys.argv),
        versions=installed_versions(versions),
        inputs=refs,
        seed=seed,
        notes=list(notes or []),
    )


def _publish(tmp: Path) -> None:
    # mkstemp makes the file private (0600); give it the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place only on success.

    For writers that want a path (pandas, safetensors, plotly) rather than a string. The
    temporary name fits the file system's name limit and carries this process's pid; the
    temporaries of a writer that was killed are removed by the next write to the same path.
    """
    target = Path(path)
    with _refused_write_as_one_line(target):
        tmp = make_temp_beside(target)
    try:
        with _refused_write_as_one_line(target, tmp):
            yield tmp
            _publish(tmp)
            os.replace(tmp, target)
    finally:
        _remove(tmp)


def _remove(tmp: Path) -> None:
    # On a failing disk the unlink may fail too; the next write of the target removes the leftover.
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)


def _is_ours(path: Path, *targets: Path) -> bool:
    """`path` is one of `targets` or a temporary made beside one (mkstemp fails naming its own name)."""
    return any(path == t or (path.parent == t.parent and path.name.startswith(_temp_prefix(t))) for t in targets)


@contextlib.contextmanager
def _refused_write_as_one_line(target: Path, *temps: Path, label: str | None = None) -> Iterator[None]:
    """A write the file system refuses (disk full, I/O error, read-only, permission) -> WriteError
    naming the target (or `label`); an error about another file (an input read in the block) keeps
    its own name."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - libraries wrap ENOSPC in their own types (safetensors)
        if storage_errno(exc) is None:
            raise
        named = getattr(exc, "filename", None)
        if named is not None and not _is_ours(Path(named), target, *temps):
            raise write_error(named, exc) from None
        raise write_error(label or target, exc) from None


@contextlib.contextmanager
def atomic_pair(first: str | os.PathLike[str], second: str | os.PathLike[str]) -> Iterator[tuple[Path, Path]]:
    """Two files that belong together (a report's JSON and its HTML): both or neither are new.

    Both are written to temporaries first; nothing at the targets changes until both are complete.
    Then the old `second` is removed, the new `first` renamed over the old `first`, and the new
    `second` renamed in. A crash at any point leaves one of: the old pair, the old `first` alone,
    the new `first` alone, or the new pair -- never a new file beside an old one, and never a
    `second` (the HTML) without its own `first` (the data). POSIX has no atomic rename of two
    files; this order is the strongest promise without one.
    """
    a, b = Path(first), Path(second)
    with _refused_write_as_one_line(a):
        tmp_a = make_temp_beside(a)
    try:
        with _refused_write_as_one_line(b):
            tmp_b = make_temp_beside(b)
    except BaseException:
        _remove(tmp_a)
        raise
    try:
        with _refused_write_as_one_line(a, tmp_a, b, tmp_b, label=f"{a} and {b}"):
            yield tmp_a, tmp_b
            _publish(tmp_a)
            _publish(tmp_b)
        with _refused_write_as_one_line(b, tmp_b):
            b.unlink(missing_ok=True)
        with _refused_write_as_one_line(a, tmp_a):
            os.replace(tmp_a, a)
        with _refused_write_as_one_line(b, tmp_b):
            os.replace(tmp_b, b)
    finally:
        _remove(tmp_a)
        _remove(tmp_b)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


# libyaml's safe loader and dumper where PyYAML was built with it: the same documents, ~10x
# faster (a 70B plan or sensitivity table took seconds in pure Python).
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def dump_artifact(artifact: Artifact, fmt: str) -> str:
    data = artifact.model_dump(mode="json")
    if fmt == "yaml":
        return block_yaml(data)
    return json.dumps(data, indent=1) + "\n"


# Plain (unquoted) scalars: what no YAML 1.1 resolver reads as anything but a string. The first
# character rules out numbers, .inf/.nan, timestamps, "~", "-", "<<" and every indicator.
_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_./@+-]*")
_YAML11_WORDS = {
    *(w for word in ("yes", "no", "true", "false", "on", "off", "null", "y", "n") for w in (word, word.title())),
    *("YES", "NO", "TRUE", "FALSE", "ON", "OFF", "NULL", "Y", "N"),
}


def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return ".nan"
        if value in (float("inf"), float("-inf")):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value).lower()
        # YAML 1.1 needs a dot in a float ("1e-05" would be a string): as PyYAML writes it.
        return text.replace("e", ".0e", 1) if "." not in text and "e" in text else text
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and value not in _YAML11_WORDS:
            return value
        return _quoted(value)
    raise TypeError(f"not a JSON value: {type(value).__name__}")


_NON_ASCII = re.compile(r"[^\x20-\x7e]")


def _quoted(text: str) -> str:
    """A YAML double-quoted scalar in ASCII: JSON's escapes (YAML has them all), and every other character
    outside printable ASCII as \\uXXXX or \\UXXXXXXXX (JSON's surrogate pairs would load as two characters)."""
    body = json.dumps(text, ensure_ascii=False)
    return _NON_ASCII.sub(lambda m: f"\\u{ord(m[0]):04x}" if ord(m[0]) <= 0xFFFF else f"\\U{ord(m[0]):08x}", body)


def block_yaml(data: Any) -> str:
    """Block-style YAML of JSON-compatible data (what `model_dump(mode="json")` gives), keys in order.

    PyYAML's representer is pure Python even with libyaml's emitter: a 70B plan (400 KB) took
    0.2-0.3 s of `trtq plan`'s ~1 s. This writes the same documents (any YAML 1.1 loader reads back
    exactly `data`; tested against PyYAML) for JSON's value types only, in ~0.03 s."""
    lines: list[str] = []

    def emit(value: Any, indent: str, first_prefix: str | None) -> None:
        # first_prefix: what starts the first line (a list item's "- "), or None for a value on its own lines
        if isinstance(value, dict) and value:
            prefix = first_prefix if first_prefix is not None else indent
            for key, item in value.items():
                key_text = _yaml_scalar(str(key))
                if isinstance(item, (dict, list)) and item:
                    lines.append(f"{prefix}{key_text}:")
                    emit(item, indent + "  ", None) if isinstance(item, dict) else emit(item, indent, None)
                else:
                    lines.append(f"{prefix}{key_text}: {_inline(item)}")
                prefix = indent
        elif isinstance(value, list) and value:
            for item in value:
                if isinstance(item, dict) and item:
                    emit(item, indent + "  ", f"{indent}- ")
                elif isinstance(item, list) and item:
                    lines.append(f"{indent}-")
                    emit(item, indent + "  ", None)
                else:
                    lines.append(f"{indent}- {_inline(item)}")
        else:
            lines.append(f"{first_prefix or indent}{_inline(value)}")

    emit(data, "", None)
    return "\n".join(lines) + "\n"


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _yaml_scalar(value)


def _format_for(path: Path) -> str:
    return "yaml" if path.suffix.lower() in (".yaml", ".yml") else "json"


def save_artifact(artifact: Artifact, path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    if target.suffix.lower() not in ARTIFACT_SUFFIXES:
        # A .parquet or .txt name would get JSON: refuse rather than write what the name denies.
        raise InputError(f"{target}: artifacts are written as .json or .yaml, not {target.suffix or 'a bare name'}")
    return atomic_write_text(target, dump_artifact(artifact, _format_for(target)))


def read_structured(path: str | os.PathLike[str], what: str) -> Any:
    """Parse a YAML or JSON file; any failure becomes one ArtifactError line naming the file."""
    p = Path(path)
    if not p.exists():
        raise ArtifactError(f"{what} not found: {p}")
    if not p.is_file():
        raise ArtifactError(f"{what} is not a file: {p}")
    try:
        text = p.read_text(encoding="utf-8")
        if p.suffix.lower() == ".json":
            # JSON is (nearly) a subset of YAML, and json parses it ~50x faster than any YAML parser.
            with contextlib.suppress(json.JSONDecodeError):
                return json.loads(text)
        return yaml.load(text, Loader=_YAML_LOADER)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"{what} {p} is not valid YAML/JSON: {first}") from None


def _first_validation_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err.get("loc", ())) or "(top level)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {err.get('msg', 'invalid')}{more}"


def load_artifact(path: str | os.PathLike[str], cls: type[A]) -> A:
    """Load and validate an artifact of kind `cls.KIND`; every failure is one line."""
    what = f"{cls.KIND} artifact"
    data = read_structured(path, what)
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: not a {cls.KIND} artifact (expected a mapping at the top level)")
    kind = data.get("artifact")
    if kind != cls.KIND:
        raise ArtifactError(f"{path}: expected a {cls.KIND} artifact, found {kind!r}")
    version = data.get("schema_version")
    # A kind may read older layouts it still understands (their new fields have defaults).
    if version not in getattr(cls, "READS_SCHEMA_VERSIONS", (cls.SCHEMA_VERSION,)):
        raise ArtifactError(
            f"{path}: {cls.KIND} schema_version {version!r} is not supported "
            f"(this trtq reads version {cls.SCHEMA_VERSION})"
        )
    try:
        artifact = cls.model_validate(data)
    except ValidationError as exc:
        raise ArtifactError(f"{path}: invalid {cls.KIND} artifact: {_first_validation_error(exc)}") from None
    # What it means, not only its types: every reader of every artifact gets the same checks.
    from trtq.artifacts.validate import Offence, validate_artifact

    try:
        validate_artifact(artifact)
    except Offence as exc:
        raise ArtifactError(f"{path}: invalid {cls.KIND} artifact: {exc}") from None
    return artifact


def validate_model(cls: type[BaseModel], data: Any, where: str) -> Any:
    """Validate settings data against a pydantic model; one-line error naming `where`."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ArtifactError(f"{where}: {_first_validation_error(exc)}") from None
