"""The aiconfigurator backend: GEMM latencies NVIDIA measured on real GPUs, from PyPI `aiconfigurator-core`.

The package ships parquet tables under `aiconfigurator_core/systems/data/<system>/gemm/<framework>/<version>/`
(latency by m, n, k and GEMM dtype, in ms). This backend reads them through the package's own perf
database and compiled estimator (`get_database` + `EngineHandle.evaluate_ops_json`, its interpolation;
the package removed its per-call `query_gemm` in 0.12), with the systems directory located by
`importlib.resources`: nothing is copied into this repository.

Every row says where its number comes from (`ProfileRow.provenance`):

- `measured`: (m, n, k) is a grid point of the table for that dtype; the latency is the table's own value.
- `interpolated`: inside the table's m, n and k ranges, between grid points: the package's estimator.
- `extrapolated`: outside those ranges (e.g. an lm_head with n = 128256 > 65536): the package's estimator,
  flagged because no measurement brackets it.
- `modelled`: the tables hold no such format on that GPU (INT4-AWQ, W4A8 on H100 ...): the roofline,
  calibrated (trtq/profile/calibrate.py, with the activation-quantize pass) on the GPU's measured grid
  points, fills the row. An unmeasured format takes the fitted fractions (and, if it quantizes its
  activations, the activation pass) of the measured format with the same tensor-core rate (INT4-AWQ:
  bf16; W4A8: per-tensor fp8) and the shared launch cost. benchmarks/roofline_vs_measured.py measures
  how far this model is from held-out measurements.

Formats the GPU cannot run (the format registry's gating) and block sizes that do not divide a layer's
input width stay `unsupported` rows with the reason, as in the other backends.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtq.artifacts.profile import ProfileRow
from trtq.errors import InputError, MissingToolError, UnknownNameError
from trtq.profile.harness import GemmCase
from trtq.registry.formats import FORMATS, get_format
from trtq.registry.gpus import GpuSpec

PACKAGE = "aiconfigurator-core"
PACKAGE_MODULE = "aiconfigurator_core"
PINNED_VERSION = "0.12.0"

# trtq's framework names -> the package's backend names.
FRAMEWORKS: dict[str, str] = {"trtllm": "trtllm", "vllm": "vllm", "sglang": "sglang"}
DEFAULT_FRAMEWORK = "trtllm"


def table_dtypes() -> dict[str, str | None]:
    """trtq format -> the GEMM table's `gemm_dtype` (the package's GEMMQuantMode name): each format's own
    `aiconfigurator_dtype`, the one place the two vocabularies meet. None: no GEMM table holds that format;
    its `aiconfigurator_refusal` says why (its rows are modelled)."""
    return {f.name: f.aiconfigurator_dtype for f in FORMATS.values()}


MS_TO_NS = 1e6


def _quiet_package_logs() -> None:
    """The package logs data-source notes (fallback rows of unrelated ops) at WARNING: not trtq's business."""
    logging.getLogger(PACKAGE_MODULE).setLevel(logging.ERROR)


def package_version() -> str:
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise MissingToolError(f"the aiconfigurator backend needs {PACKAGE}=={PINNED_VERSION} "
                               f"(pip install {PACKAGE}=={PINNED_VERSION})") from None


def default_systems_root() -> Path:
    """The installed package's systems directory (system specs + data/), found by importlib.resources."""
    import importlib.resources

    package_version()
    return Path(str(importlib.resources.files(PACKAGE_MODULE) / "systems"))


@functools.lru_cache(maxsize=8)
def _supported(systems_root: str) -> dict[str, dict[str, list[str]]]:
    from aiconfigurator_core.sdk.perf_database import get_supported_databases

    _quiet_package_logs()
    found = get_supported_databases(systems_paths=[systems_root])
    return {system: {fw: list(versions) for fw, versions in fws.items()} for system, fws in found.items()}


def system_for(gpu: GpuSpec, systems_root: Path) -> str:
    """The package's system name for a registry GPU (profiles/gpus.yaml `aiconfigurator_system`)."""
    supported = _supported(str(systems_root))
    if not gpu.aiconfigurator_system or gpu.aiconfigurator_system not in supported:
        from trtq.registry.gpus import list_gpus

        have = [g.name for g in list_gpus() if g.aiconfigurator_system in supported]
        raise UnknownNameError(f"{PACKAGE} {package_version()} has no tables for {gpu.name}; "
                               f"GPUs with tables: {', '.join(have) or 'none'}")
    return gpu.aiconfigurator_system


def resolve_version(system: str, framework: str, version: str | None, systems_root: Path) -> str:
    """`version` checked against the package's versions for (system, framework); None -> its newest."""
    if framework not in FRAMEWORKS:
        raise UnknownNameError(f"unknown --framework {framework!r}; known: {', '.join(FRAMEWORKS)}")
    backend = FRAMEWORKS[framework]
    versions = _supported(str(systems_root)).get(system, {}).get(backend, [])
    if not versions:
        have = ", ".join(sorted(_supported(str(systems_root)).get(system, {}))) or "none"
        raise UnknownNameError(f"{PACKAGE} {package_version()} has no {framework} tables for {system}; "
                               f"frameworks it has there: {have}")
    if version is None:
        # The package's maintained default ("current" slot) is its newest collected version; the "next" slot
        # is opt-in (its tables are mostly reused from current). Same rule as get_latest_database_version.
        from aiconfigurator_core.sdk.perf_database import get_latest_database_version, get_version_slots

        slots = get_version_slots(system, backend, systems_paths=[str(systems_root)]) or {}
        if slots.get("current") in versions:
            return slots["current"]
        latest = get_latest_database_version(system, backend, systems_paths=[str(systems_root)])
        return latest or versions[-1]
    if version not in versions:
        raise UnknownNameError(f"{PACKAGE} {package_version()} has no {framework} {version} tables for {system}; "
                               f"versions it has: {', '.join(versions)}")
    return version


@dataclass
class GemmTables:
    """One (system, framework, version) of the package: the raw grid per dtype and the package's estimator."""

    system: str
    framework: str
    version: str
    systems_root: Path
    grid: dict[str, dict[tuple[int, int, int], float]] = field(default_factory=dict)  # dtype -> (m,n,k) -> ms
    table_files: list[dict] = field(default_factory=list)
    _database: Any = None
    _handle: Any = None
    _ranges: dict = field(default_factory=dict)

    @classmethod
    def open(cls, system: str, framework: str, version: str, systems_root: Path) -> GemmTables:
        from aiconfigurator_core.sdk.engine import EngineHandle
        from aiconfigurator_core.sdk.perf_database import get_database

        _quiet_package_logs()
        database = get_database(system, FRAMEWORKS[framework], version, systems_paths=[str(systems_root)])
        if database is None:
            raise InputError(f"{PACKAGE} could not load its {framework} {version} tables for {system}")
        tables = cls(system, framework, version, systems_root, _database=database)
        tables._handle = EngineHandle.for_database(database, systems_path=str(systems_root))
        tables._load_grid()
        return tables

    def _load_grid(self) -> None:
        """The raw GEMM rows the package loaded (its own version, or the one it declares reused)."""
        import pandas as pd
        from aiconfigurator_core.sdk.operations.gemm import GEMM

        GEMM.load_data(self._database)  # fills database.data_provenance with the files it read
        sources = [s for s in self._database.data_provenance.get("gemm_perf.parquet", []) if s.get("exists")]
        for source in sources:
            path = Path(str(source["path"]))
            frame = pd.read_parquet(path, columns=["gemm_dtype", "m", "n", "k", "latency"])
            for dtype, rows in frame.groupby("gemm_dtype"):
                cells = self.grid.setdefault(str(dtype), {})
                for m, n, k, latency in zip(rows.m, rows.n, rows.k, rows.latency):
                    cells.setdefault((int(m), int(n), int(k)), float(latency))  # first source wins
            self.table_files.append({
                "path": str(path.relative_to(self.systems_root.parent)) if path.is_relative_to(
                    self.systems_root.parent) else str(path),
                "version": str(source.get("version")), "channel": str(source.get("channel")),
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})

    @property
    def dtypes(self) -> list[str]:
        return sorted(self.grid)

    def ranges(self, dtype: str) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """(min, max) of m, n and k over the dtype's grid points."""
        if dtype not in self._ranges:
            cells = self.grid[dtype]
            self._ranges[dtype] = tuple((min(c[i] for c in cells), max(c[i] for c in cells)) for i in range(3))
        return self._ranges[dtype]

    def estimate_ms(self, dtype: str, m: int, n: int, k: int) -> float:
        """The package's estimator for one GEMM (its interpolation between grid points)."""
        from aiconfigurator_core.sdk import common
        from aiconfigurator_core.sdk.engine import build_ops_json
        from aiconfigurator_core.sdk.operations.gemm import GEMM

        op = GEMM("gemm", 1, n, k, common.GEMMQuantMode[dtype])
        (_, latency_ms, _, _source), = self._handle.evaluate_ops_json(
            build_ops_json([op]), is_context=True, batch_size=1, s=m)
        return float(latency_ms)

    def lookup(self, dtype: str, m: int, n: int, k: int) -> tuple[float, str]:
        """(latency ns, provenance) for a dtype the tables hold."""
        measured = self.grid[dtype].get((m, n, k))
        if measured is not None:
            return measured * MS_TO_NS, "measured"
        (m_lo, m_hi), (n_lo, n_hi), (k_lo, k_hi) = self.ranges(dtype)
        inside = m_lo <= m <= m_hi and n_lo <= n <= n_hi and k_lo <= k <= k_hi
        return self.estimate_ms(dtype, m, n, k) * MS_TO_NS, "interpolated" if inside else "extrapolated"


def table_dtype(fmt_name: str, tables: GemmTables) -> str | None:
    dtype = table_dtypes().get(fmt_name)
    return dtype if dtype in tables.grid else None


# ---- the modelled rows: the roofline calibrated on the measured grid points ------------------------------

FIT_SIDES = (1024, 4096, 16384)   # n and k of the grid points the calibration fits (kept small: seconds)
FIT_TOKENS = (1, 16, 128, 1024, 4096, 16384)


def fit_rows(tables: GemmTables, gpu: GpuSpec) -> list[ProfileRow]:
    """Measured grid points of every mapped format the GPU runs, as profile rows for the calibration."""
    rows = []
    for fmt_name, dtype in table_dtypes().items():
        if dtype is None or dtype not in tables.grid:
            continue
        try:
            fmt = get_format(fmt_name)
        except UnknownNameError:
            continue
        if not gpu.supports(fmt):
            continue
        for (m, n, k), ms in tables.grid[dtype].items():
            if n in FIT_SIDES and k in FIT_SIDES and m in FIT_TOKENS and fmt.available_for(k):
                rows.append(ProfileRow(out_features=n, in_features=k, tokens=m, format=fmt_name, status="ok",
                                       latency_ns=ms * MS_TO_NS, method="aiconfigurator grid point",
                                       provenance="measured"))
    return rows


def modelled_params(gpu: GpuSpec, rows: list[ProfileRow]):
    """RooflineParams fitted to the measured rows; unmeasured formats borrow the same-compute-rate fit."""
    from trtq.profile.calibrate import fit_roofline
    from trtq.profile.roofline import RooflineParams

    start = RooflineParams.for_gpu(gpu)
    result = fit_roofline(gpu, rows, start, activation_pass=True)
    compute = {f: fit.compute_fraction for f, fit in result.formats.items()}
    bandwidth = {f: fit.bandwidth_fraction for f, fit in result.formats.items()}
    activation = {f: fit.activation_pass for f, fit in result.formats.items()}
    borrowed = {}
    for fmt in FORMATS.values():
        if fmt.name in compute:
            continue
        # Same tensor-core rate, else same activation width (INT8-SQ on Hopper: per-tensor FP8); a block-scaled
        # donor last (its kernels differ most).
        measured = sorted(result.formats, key=lambda f: get_format(f).act_block_size is not None)
        donors = [f for f in measured if get_format(f).compute == fmt.compute]
        donors = donors or [f for f in measured if get_format(f).act_bits == fmt.act_bits]
        if donors:
            compute[fmt.name], bandwidth[fmt.name] = compute[donors[0]], bandwidth[donors[0]]
            activation[fmt.name] = activation[donors[0]] if fmt.act_dtype != "bf16" else 0.0
            borrowed[fmt.name] = donors[0]
    params = start.model_copy(update={
        "compute_fraction": compute, "bandwidth_fraction": bandwidth, "launch_cost_ns": result.launch_cost_ns,
        "activation_pass": activation,
        "source": (f"roofline fitted to {result.after.rows} measured {PACKAGE} grid points: median |error| "
                   f"{result.before.median_abs_rel_error:.1%} -> {result.after.median_abs_rel_error:.1%} "
                   "(in-sample); unmeasured formats borrow the fit of the format with their compute rate")})
    summary = {"rows": result.after.rows, "launch_cost_ns": result.launch_cost_ns,
               "before": result.before.model_dump(), "after": result.after.model_dump(),
               "fractions": {f: {"compute": compute[f], "bandwidth": bandwidth[f], "activation_pass": activation[f]}
                             for f in compute},
               "borrowed_from": borrowed}
    return params, summary


class AiconfiguratorBackend:
    name = "aiconfigurator"
    measures = True            # the table values are GPU measurements; no launch cost is added
    launch_cost_ns = 0.0

    def __init__(self, gpu: GpuSpec, framework: str | None = None, version: str | None = None,
                 systems_root: Path | None = None):
        self.gpu = gpu
        self.systems_root = Path(systems_root) if systems_root else default_systems_root()
        self.framework = framework or DEFAULT_FRAMEWORK
        self.system = system_for(gpu, self.systems_root)
        self.version = resolve_version(self.system, self.framework, version, self.systems_root)
        self.tables = GemmTables.open(self.system, self.framework, self.version, self.systems_root)
        self._modelled = None

    def _model(self):
        if self._modelled is None:
            rows = fit_rows(self.tables, self.gpu)
            if not rows:
                raise InputError(f"{PACKAGE}: the {self.framework} {self.version} tables of {self.system} hold no "
                                 f"format {self.gpu.name} runs: nothing to calibrate the modelled rows on")
            self._modelled = modelled_params(self.gpu, rows)
        return self._modelled

    def device_info(self) -> dict:
        return {"gpu": self.gpu.name, "sm": self.gpu.sm, "system": self.system,
                "source": f"{PACKAGE} {package_version()} tables ({self.framework} {self.version})"}

    def settings(self) -> dict:
        settings = {
            "package": PACKAGE, "package_version": package_version(), "system": self.system,
            "framework": self.framework, "framework_version": self.version,
            "table_files": self.tables.table_files, "table_dtypes": self.tables.dtypes,
            "format_dtypes": table_dtypes(),
            "interpolation": "the package's compiled estimator (EngineHandle.evaluate_ops_json)",
        }
        if self._modelled is not None:
            settings["modelled"] = self._modelled[1]
        return settings

    def row(self, case: GemmCase) -> ProfileRow:
        from trtq.profile.roofline import roofline_row

        fmt = get_format(case.format)
        base: dict[str, Any] = dict(out_features=case.out_features, in_features=case.in_features,
                                    tokens=case.tokens, format=case.format)
        if not self.gpu.supports(fmt):
            return ProfileRow(**base, status="unsupported", latency_ns=None, method="none",
                              reason=f"{self.gpu.name} (sm{self.gpu.sm}) does not run {fmt.name} "
                                     f"(needs sm{fmt.min_sm}+)")
        if not fmt.available_for(case.in_features):
            return ProfileRow(**base, status="unsupported", latency_ns=None, method="none",
                              reason=fmt.unavailable_reason(case.in_features))
        dtype = table_dtype(fmt.name, self.tables)
        if dtype is not None:
            latency, provenance = self.tables.lookup(dtype, case.tokens, case.out_features, case.in_features)
            return ProfileRow(**base, status="ok", latency_ns=latency, provenance=provenance,
                              method=f"{PACKAGE} {self.framework} {self.version} {dtype}",
                              details={"table_dtype": dtype})
        params, _ = self._model()
        modelled = roofline_row(self.gpu, case, params)
        why = fmt.aiconfigurator_refusal or f"the {self.system} tables hold no {fmt.aiconfigurator_dtype}"
        return modelled.model_copy(update={
            "provenance": "modelled", "method": "roofline calibrated on the measured formats",
            "details": {**modelled.details, "why_modelled": why}})

    def profile(self, cases, on_row=None) -> list[ProfileRow]:
        rows = []
        for case in cases:
            row = self.row(case)
            rows.append(row)
            if on_row:
                on_row(row)
        return rows
