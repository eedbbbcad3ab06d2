"""The one reader of aiconfigurator-core's measured kernel tables, for the profile backend and `trtq predict`.

aiconfigurator-core (PyPI, Apache-2.0) ships NVIDIA's kernel latencies measured on real GPUs under
`aiconfigurator_core/systems/data/<system>/<op>/<framework>/<version>/*.parquet` (latency in ms), and a
compiled (Rust) engine that interpolates them. This module finds the tables (found by importlib: nothing is
copied into this repository), resolves a GPU to the package's system and a framework to its default version,
reads the raw GEMM grid and the FP8 activation-quantize tables with pyarrow, and opens the engine bound to one
(system, framework, version) with no model (the SDK's "database probe" spec, written here so that neither
pandas nor the SDK is imported: `trtq predict` must answer in well under a second).

One rule for where a GEMM latency comes from (`provenance`):

- `measured`: (m, n, k) is a grid point of the table for that dtype; the engine returns the table's own value.
- `interpolated`: inside the table's m, n and k ranges, between grid points, from the measured rows.
- `extrapolated`: outside those ranges (e.g. an lm_head with n = 128256 > 65536): the engine's estimate from
  the measured rows, flagged because no measurement brackets it.
- `modelled`: the engine answered from its own models (`empirical`/`estimated`/`sol`), not the tables.
  (The profile backend also labels `modelled` the rows of formats no table holds, from its calibrated roofline.)
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from trtq.artifacts.profile import Provenance
from trtq.errors import InputError, MissingToolError, UnknownNameError, UnsupportedError

PACKAGE = "aiconfigurator-core"
PACKAGE_MODULE = "aiconfigurator_core"
PINNED_VERSION = "0.12.0"

# trtq's framework names -> the package's backend names.
FRAMEWORKS: dict[str, str] = {"trtllm": "trtllm", "vllm": "vllm", "sglang": "sglang"}
DEFAULT_FRAMEWORK = "trtllm"


# trtq format -> the GEMM table's `gemm_dtype` (the package's GEMMQuantMode name). The one place the two
# vocabularies meet. None: no GEMM table holds that format; the reason says why (its rows are modelled).
def table_dtypes() -> dict[str, str | None]:
    """trtq format -> the GEMM table's `gemm_dtype` (the package's GEMMQuantMode name): each format's own
    `aiconfigurator_dtype`, the one place the two vocabularies meet. None: no GEMM table holds that format;
    its `aiconfigurator_refusal` says why (its rows are modelled)."""
    from trtq.registry.formats import FORMATS

    return {f.name: f.aiconfigurator_dtype for f in FORMATS.values()}


def unmapped_reasons() -> dict[str, str]:
    """Why a format has no GEMM table (its registry entry's `aiconfigurator_refusal`)."""
    from trtq.registry.formats import FORMATS

    return {f.name: f.aiconfigurator_refusal for f in FORMATS.values() if f.aiconfigurator_refusal}


# Every label a latency from the tables (or from trtq's models beside them) can carry, most trusted first.
PROVENANCES: tuple[Provenance, ...] = get_args(Provenance)

MS_TO_NS = 1e6
GEMM_FILE = "gemm_perf.parquet"
SLOTS_FILE = "query_versions.yaml"  # the package's maintained default version per (system, framework)


@dataclass(frozen=True)
class Answer:
    ms: float
    provenance: Provenance


# ---- where the package and its tables are ----------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def package_version() -> str:
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise MissingToolError(
            f"the measured kernel tables need {PACKAGE}=={PINNED_VERSION} "
            f"(pip install {PACKAGE}=={PINNED_VERSION}; trtq pins it in pyproject.toml)"
        ) from None


@functools.lru_cache(maxsize=1)
def default_systems_root() -> Path:
    """The installed package's systems directory (system specs + data/), found without importing the package
    (its import loads the native engine: not needed to read a file)."""
    import importlib.util

    package_version()
    spec = importlib.util.find_spec(PACKAGE_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingToolError(
            f"the measured kernel tables need {PACKAGE}=={PINNED_VERSION} (pip install {PACKAGE}=={PINNED_VERSION})"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "systems"


def _root(systems_root: Path | str | None) -> Path:
    return Path(systems_root) if systems_root else default_systems_root()


@functools.lru_cache(maxsize=64)
def _data_dir(systems_root: str, system: str) -> Path | None:
    """<systems_root>/<data_dir of the system's spec yaml>, or None when the package has no such system."""
    spec = Path(systems_root) / f"{system}.yaml"
    if not spec.is_file():
        return None
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    data_dir = (yaml.load(spec.read_text(), Loader=loader) or {}).get("data_dir")
    return Path(systems_root) / data_dir if data_dir else None


def _version_key(version: str) -> tuple:
    """1.3.0rc20 < 1.3.0rc23 < 1.3.0; numeric parts compare as numbers."""
    parts = re.findall(r"\d+|[a-z]+", version.lower())
    key = []
    for part in parts:
        key.append((1, int(part), "") if part.isdigit() else (0, 0, part))
    # A release sorts after its pre-releases: pad with a marker above "rc".
    return tuple(key) + ((2, 0, ""),) if not re.search(r"[a-z]", version.lower()) else tuple(key)


def table_path(
    system: str, op: str, framework: str, version: str, filename: str, systems_root: Path | str | None = None
) -> Path | None:
    data = _data_dir(str(_root(systems_root)), system)
    return None if data is None else data / op / FRAMEWORKS[framework] / version / filename


def gemm_versions(system: str, framework: str, systems_root: Path | str | None = None) -> list[str]:
    """Versions with a GEMM table of their own for (system, framework), oldest first."""
    data = _data_dir(str(_root(systems_root)), system)
    base = None if data is None else data / "gemm" / FRAMEWORKS[framework]
    if base is None or not base.is_dir():
        return []
    return sorted((p.name for p in base.iterdir() if (p / GEMM_FILE).is_file()), key=_version_key)


def gemm_table_file(
    system: str, framework: str, version: str, systems_root: Path | str | None = None
) -> tuple[Path, str, str] | None:
    """(file, its version, channel) of the GEMM table the engine reads for `version`: its own ("primary"),
    else the newest older version's ("fallback": the package fills a version backward, never forward)."""
    own = gemm_versions(system, framework, systems_root)
    older = [v for v in own if v == version or _version_key(v) < _version_key(version)]
    if not older:
        return None
    chosen = version if version in own else older[-1]
    path = table_path(system, "gemm", framework, chosen, GEMM_FILE, systems_root)
    return path, chosen, "primary" if chosen == version else "fallback"


def systems_with_tables(systems_root: Path | str | None = None) -> dict[str, list[str]]:
    """system -> trtq frameworks with a GEMM table there."""
    root = _root(systems_root)
    found: dict[str, list[str]] = {}
    for spec in sorted(root.glob("*.yaml")):
        frameworks = [fw for fw in FRAMEWORKS if gemm_versions(spec.stem, fw, root)]
        if frameworks:
            found[spec.stem] = frameworks
    return found


def system_for(gpu, systems_root: Path | str | None = None, hint: str = "") -> str:
    """The package's system name for a registry GPU (profiles/gpus.yaml `aiconfigurator_system`)."""
    system = gpu.aiconfigurator_system
    if not system or not any(gemm_versions(system, fw, systems_root) for fw in FRAMEWORKS):
        from trtq.registry.gpus import list_gpus

        have_tables = systems_with_tables(systems_root)
        have = [g.name for g in list_gpus() if g.aiconfigurator_system in have_tables]
        raise UnknownNameError(
            f"{PACKAGE} {package_version()} has no tables for {gpu.name}; "
            f"GPUs with tables: {', '.join(have) or 'none'}{hint}"
        )
    return gpu.aiconfigurator_system


def default_version(system: str, framework: str, systems_root: Path | str | None = None) -> str:
    """The package's maintained default version ("current" slot of its query_versions.yaml, the rule of the
    SDK's get_latest_database_version) when the system has a GEMM table for it; else the newest GEMM table."""
    root = _root(systems_root)
    own = gemm_versions(system, framework, root)
    if not own:
        raise UnsupportedError(
            f"{PACKAGE} {package_version()} has no {framework} GEMM table for {system}; "
            f"frameworks it has there: {', '.join(systems_with_tables(root).get(system, []))}"
        )
    slots_file = root / SLOTS_FILE
    if slots_file.is_file():
        import yaml

        doc = yaml.load(slots_file.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
        backend = FRAMEWORKS[framework]
        entry = ((doc.get("overrides") or {}).get(system) or {}).get(backend)
        entry = entry if entry is not None else (doc.get("defaults") or {}).get(backend)
        current = str((entry or {}).get("current") or "")
        if current in own:
            return current
    return own[-1]


def resolve_version(system: str, framework: str, version: str | None, systems_root: Path | str | None = None) -> str:
    """`version` checked against the versions the package declares for (system, framework); None -> the
    default. The declared list is the SDK's (imported only for an explicit version or a refusal)."""
    if framework not in FRAMEWORKS:
        raise UnknownNameError(f"unknown --framework {framework!r}; known: {', '.join(FRAMEWORKS)}")
    root = _root(systems_root)
    if version is None:
        if gemm_versions(system, framework, root):
            return default_version(system, framework, root)
    else:
        versions = _declared(str(root)).get(system, {}).get(FRAMEWORKS[framework], [])
        if versions and version not in versions:
            raise UnknownNameError(
                f"{PACKAGE} {package_version()} has no {framework} {version} tables for "
                f"{system}; versions it has: {', '.join(versions)}"
            )
        if versions and gemm_table_file(system, framework, version, root):
            return version
    have = ", ".join(fw for fw in FRAMEWORKS if gemm_versions(system, fw, root)) or "none"
    raise UnknownNameError(
        f"{PACKAGE} {package_version()} has no {framework} tables for {system}; frameworks it has there: {have}"
    )


@functools.lru_cache(maxsize=8)
def _declared(systems_root: str) -> dict[str, dict[str, list[str]]]:
    import logging

    from aiconfigurator_core.sdk.perf_database import get_supported_databases

    # The package logs data-source notes (fallback rows of unrelated ops) at WARNING: not trtq's business.
    logging.getLogger(PACKAGE_MODULE).setLevel(logging.ERROR)
    found = get_supported_databases(systems_paths=[systems_root])
    return {system: {fw: list(versions) for fw, versions in fws.items()} for system, fws in found.items()}


# ---- the engine ----------------------------------------------------------------------------------------


def probe_spec(system: str, framework: str, version: str, systems_root: Path | str) -> dict[str, Any]:
    """The engine spec the SDK's build_database_probe_spec_json writes for get_database's default SILICON view
    (shared-layer fill from older collections on), with no model: the engine evaluates ad-hoc op lists."""
    import aiconfigurator_core as aic

    engine = {
        "schema_version": 1,
        "model_name": "__database_probe__",
        "system_name": system,
        "systems_path": str(systems_root),
        "backend": FRAMEWORKS[framework],
        "backend_version": version,
        "kv_block_size": None,
        "tp_size": 1,
        "pp_size": 1,
        "attention_dp_size": None,
        "moe_tp_size": None,
        "moe_ep_size": None,
        "cp_size": None,
        "weight_dtype": None,
        "moe_dtype": None,
        "activation_dtype": None,
        "kv_cache_dtype": None,
        "enable_shared_layer": True,
        "strict_provenance": False,
        "database_mode": "SILICON",
        "transfer_policy": None,
        "tolerate_dirless_version": False,
        "extra": {},
    }
    return {
        "schema_version": aic.engine_spec_schema_version(),
        "engine": engine,
        "context_ops": [],
        "generation_ops": [],
    }


@functools.cache
def open_engine(system: str, framework: str, version: str, systems_root: str):
    """aiconfigurator's compiled engine bound to one (system, framework, version). Opened once per process
    (it loads the tables: seconds)."""
    import aiconfigurator_core as aic

    spec = json.dumps(probe_spec(system, framework, version, systems_root))
    try:
        return aic.AicEngine.from_spec(bytes(aic.engine_spec_bincode_from_json(spec)), systems_root)
    except (ValueError, RuntimeError, LookupError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{PACKAGE} could not load its {framework} {version} tables for {system}: {first}") from None


def gemm_op(n: int, k: int, dtype: str) -> dict[str, Any]:
    """The engine's OpSpec for one GEMM (as the SDK's GEMM op class serialises it; tests hold the two equal)."""
    return {
        "Gemm": {
            "n": n,
            "k": k,
            "quant_mode": dtype,
            "scale_num_tokens": 1,
            "low_precision_input": False,
            "seq_split": 1,
            "below_grid_sol": False,
        }
    }


def _read_quantize_table(path: Path | None) -> dict[tuple[int, int], float]:
    import pyarrow.parquet as pq

    if path is None or not path.is_file():
        return {}
    t = pq.ParquetFile(path).read(columns=["m", "k", "latency"])
    return {(m, k): lat for m, k, lat in zip(*(t.column(c).to_pylist() for c in ("m", "k", "latency")))}


class AicTables:
    """One (system, framework, version) of the package: its GEMM grid, quantize tables and engine."""

    def __init__(self, system: str, framework: str, version: str, systems_root: Path | str | None = None):
        self.system, self.framework, self.version = system, framework, version
        self.systems_root = _root(systems_root)
        self._ranges: dict[str, tuple[tuple[int, int], tuple[int, int], tuple[int, int]]] = {}
        self._quantize_tables: dict[str, dict[tuple[int, int], float]] = {}

    @classmethod
    def for_gpu(
        cls,
        gpu,
        framework: str | None = None,
        version: str | None = None,
        systems_root: Path | str | None = None,
        hint: str = "",
    ) -> AicTables:
        framework = framework or DEFAULT_FRAMEWORK
        root = _root(systems_root)
        system = system_for(gpu, root, hint)
        return cls(system, framework, resolve_version(system, framework, version, root), root)

    def describe(self) -> dict[str, str]:
        return {
            "package": f"{PACKAGE}=={package_version()}",
            "system": self.system,
            "framework": self.framework,
            "framework_version": self.version,
        }

    # ---- raw tables (pyarrow, no pandas) ----
    @functools.cached_property
    def _gemm_source(self) -> tuple[Path, str, str]:
        found = gemm_table_file(self.system, self.framework, self.version, self.systems_root)
        if found is None:
            raise UnsupportedError(
                f"{PACKAGE} has no {self.framework} GEMM table for {self.system} at or before {self.version}"
            )
        return found

    @functools.cached_property
    def grid(self) -> dict[str, dict[tuple[int, int, int], float]]:
        """dtype -> (m, n, k) -> ms: the GEMM table's measured rows."""
        import pyarrow.parquet as pq

        # ParquetFile.read, not read_table: the latter pulls in pyarrow.dataset and pandas (seconds).
        table = pq.ParquetFile(self._gemm_source[0]).read(columns=["gemm_dtype", "m", "n", "k", "latency"])
        grid: dict[str, dict[tuple[int, int, int], float]] = {}
        for dtype, m, n, k, ms in zip(*(table.column(c).to_pylist() for c in ("gemm_dtype", "m", "n", "k", "latency"))):
            grid.setdefault(str(dtype), {}).setdefault((int(m), int(n), int(k)), float(ms))
        return grid

    @property
    def dtypes(self) -> list[str]:
        return sorted(self.grid)

    @functools.cached_property
    def gemm_dtypes(self) -> frozenset:
        """The GEMM table's dtypes, from its dtype column alone (cheaper than the whole grid)."""
        import pyarrow.parquet as pq

        return frozenset(
            pq.ParquetFile(self._gemm_source[0]).read(columns=["gemm_dtype"]).column("gemm_dtype").unique().to_pylist()
        )

    def table_files(self) -> list[dict]:
        path, version, channel = self._gemm_source
        shown = path.relative_to(self.systems_root.parent) if path.is_relative_to(self.systems_root.parent) else path
        return [
            {
                "path": str(shown),
                "version": version,
                "channel": channel,
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            }
        ]

    def ranges(self, dtype: str) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """(min, max) of m, n and k over the dtype's grid points."""
        if dtype not in self._ranges:
            cells = self.grid[dtype]
            m, n, k = ((min(c[i] for c in cells), max(c[i] for c in cells)) for i in range(3))
            self._ranges[dtype] = (m, n, k)
        return self._ranges[dtype]

    def quantize_table(self, filename: str) -> dict[tuple[int, int], float]:
        """An FP8 activation-quantize table: (m, k) -> ms (scale_matrix: static per-tensor scale-and-cast;
        computescale: the amax pass of dynamic scaling); {} when the package has none."""
        if filename not in self._quantize_tables:
            self._quantize_tables[filename] = _read_quantize_table(
                table_path(self.system, "quantize", self.framework, self.version, filename, self.systems_root)
            )
        return self._quantize_tables[filename]

    # ---- the engine ----
    def engine(self):
        return open_engine(self.system, self.framework, self.version, str(self.systems_root))

    def evaluate(self, op: dict[str, Any], *, batch: int, s: int, context: bool = True) -> tuple[float, str]:
        """(ms, the engine's source tag) of one op; context=True puts batch*s tokens through token ops."""
        kind = next(iter(op))
        payload = {kind: {**op[kind], "name": "op", "scale_factor": 1.0}}
        try:
            ((_, ms, _, source),) = self.engine().evaluate_ops_json(
                json.dumps([payload]), bool(context), int(batch), int(s), 0, 1.0, None
            )
        except (ValueError, RuntimeError, LookupError) as exc:  # the engine's PerfDataNotAvailableError & co
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UnsupportedError(f"{PACKAGE} cannot price {kind} on {self.system}: {first}") from None
        return float(ms), str(source)

    def gemm(self, dtype: str, m: int, n: int, k: int) -> Answer:
        """One GEMM of m tokens, n x k weights, in a dtype of the table, with its provenance (module docstring)."""
        ms, source = self.evaluate(gemm_op(n, k, dtype), batch=1, s=m)
        return Answer(ms, self.gemm_provenance(dtype, m, n, k, source))

    def gemm_provenance(self, dtype: str, m: int, n: int, k: int, source: str) -> Provenance:
        if source != "silicon":
            return "modelled"
        if dtype not in self.grid:
            return "extrapolated"
        if (m, n, k) in self.grid[dtype]:
            return "measured"
        (m_lo, m_hi), (n_lo, n_hi), (k_lo, k_hi) = self.ranges(dtype)
        inside = m_lo <= m <= m_hi and n_lo <= n <= n_hi and k_lo <= k <= k_hi
        return "interpolated" if inside else "extrapolated"


def table_dtype(fmt_name: str, tables: AicTables) -> str | None:
    """The table dtype of a trtq format when these tables hold it, else None."""
    dtype = table_dtypes().get(fmt_name)
    return dtype if dtype in tables.gemm_dtypes else None
