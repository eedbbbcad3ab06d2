"""Kernel latencies for the step model, from aiconfigurator-core's compiled engine.

aiconfigurator-core (PyPI, Apache-2.0) ships NVIDIA's kernel tables measured with
TensorRT-LLM and a compiled (Rust) engine that interpolates them. trtq asks that engine
for single ops — a GEMM at a format, context or generation attention at a KV format, a
custom all-reduce, an elementwise pass, the embedding — through its ad-hoc op-list entry
point (`AicEngine.evaluate_ops_json`), never through its model builders, so a plan's
per-layer formats are priced one group at a time. The op JSON is the engine's OpSpec
wire format of the pinned version (tests hold it against the SDK's own op classes).

Only the native module is imported (no pandas, no SDK): opening the engine costs a few
seconds (it loads the tables), so every answer is memoised on disk under
`$TRTQ_CACHE/predict/` keyed by package version, system, framework version and the exact
query; a repeated prediction answers without opening the engine.

Provenance of each answer: the engine tags an answer `silicon` (from the measured
tables), `empirical`/`estimated`/`sol` (its own models) or `mixed`. trtq reports
`measured` for a GEMM exactly on the table's (m, n, k, dtype) grid, `interpolated` for
other `silicon` answers, `modelled` for the rest.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trtq.errors import MissingToolError, UnsupportedError
from trtq.profile.aiconfigurator import TABLE_DTYPES

AICONFIGURATOR_PACKAGE = "aiconfigurator-core"
FRAMEWORK = "trtllm"

# trtq format -> the engine's GEMM quant mode: the profile backend's one mapping (formats without a table are absent).
AIC_GEMM_MODES = {fmt: mode for fmt, mode in TABLE_DTYPES.items() if mode is not None}
# trtq KV-cache format -> the engine's attention kv_cache_dtype.
AIC_KV_MODES = {"bf16": "bfloat16", "fp8": "fp8"}
# Bytes per KV element.
KV_BYTES = {"bf16": 2.0, "fp8": 1.0, "nvfp4": 9 / 16}

PROVENANCES = ("measured", "interpolated", "modelled")


@dataclass(frozen=True)
class Answer:
    ms: float
    provenance: str    # measured | interpolated | modelled


def _package_root() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("aiconfigurator_core")
    if spec is None or not spec.submodule_search_locations:
        raise MissingToolError(
            f"{AICONFIGURATOR_PACKAGE} is not installed: pip install {AICONFIGURATOR_PACKAGE} "
            "(trtq pins it in pyproject.toml)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def package_version() -> str:
    try:
        return importlib.metadata.version(AICONFIGURATOR_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        _package_root()
        raise


def _version_key(v: str) -> tuple:
    return tuple(int(x) if x.isdigit() else x for x in re.split(r"[.]|(?<=\d)(?=rc)|(?<=rc)(?=\d)", v))


def aic_system(gpu_name: str) -> str:
    """The package's system name for a registry GPU (profiles/gpus.yaml `aiconfigurator_system`)."""
    from trtq.registry.gpus import get_gpu, list_gpus

    system = get_gpu(gpu_name).aiconfigurator_system
    if system is None:
        covered = [gpu.name for gpu in list_gpus() if gpu.aiconfigurator_system]
        raise UnsupportedError(
            f"{AICONFIGURATOR_PACKAGE} has no kernel tables for {gpu_name}; it covers "
            f"{', '.join(covered)} (give --profile FILE for the GEMMs on other GPUs)"
        )
    return system


@functools.lru_cache(maxsize=None)
def framework_version(system: str) -> str:
    """Newest TensorRT-LLM version with a GEMM table for `system` in the installed package."""
    base = _package_root() / "systems" / "data" / system / "gemm" / FRAMEWORK
    versions = [p.name for p in base.iterdir() if (p / "gemm_perf.parquet").is_file()] if base.is_dir() else []
    if not versions:
        raise UnsupportedError(f"{AICONFIGURATOR_PACKAGE} has no {FRAMEWORK} GEMM table for {system}")
    return max(versions, key=_version_key)


def _table(system: str, op_dir: str, version: str, filename: str) -> Path:
    return _package_root() / "systems" / "data" / system / op_dir / FRAMEWORK / version / filename


@functools.lru_cache(maxsize=None)
def gemm_grid(system: str, version: str) -> frozenset:
    """(m, n, k, dtype) points the GEMM table measured."""
    import pyarrow.parquet as pq

    # ParquetFile.read, not read_table: the latter pulls in pyarrow.dataset and pandas (seconds).
    t = pq.ParquetFile(_table(system, "gemm", version, "gemm_perf.parquet")).read(columns=["m", "n", "k", "gemm_dtype"])
    cols = [t.column(c).to_pylist() for c in ("m", "n", "k", "gemm_dtype")]
    return frozenset(zip(*cols))


@functools.lru_cache(maxsize=None)
def gemm_dtypes(system: str, version: str) -> frozenset:
    return frozenset(p[3] for p in gemm_grid(system, version))


@functools.lru_cache(maxsize=None)
def quantize_table(system: str, version: str, filename: str) -> dict[tuple[int, int], float]:
    """FP8 activation-quantize table: (m, k) -> ms (scale_matrix: static per-tensor;
    computescale: the amax pass of dynamic scaling)."""
    import pyarrow.parquet as pq

    path = _table(system, "quantize", version, filename)
    if not path.is_file():
        return {}
    t = pq.ParquetFile(path).read(columns=["m", "k", "latency"])
    return {(m, k): lat for m, k, lat in zip(*(t.column(c).to_pylist() for c in ("m", "k", "latency")))}


def interpolate_mk(table: dict[tuple[int, int], float], m: int, k: int) -> Answer | None:
    """Bilinear in (log m, log k) between the table's grid points; None outside the grid."""
    if not table:
        return None
    if (m, k) in table:
        return Answer(table[(m, k)], "measured")
    ms = sorted({p[0] for p in table})
    ks = sorted({p[1] for p in table})

    def bracket(axis: list[int], x: int):
        if x <= axis[0] or x >= axis[-1]:
            return None
        for lo, hi in zip(axis, axis[1:]):
            if lo <= x <= hi:
                return lo, hi
        return None

    bm, bk = bracket(ms, m), bracket(ks, k)
    if m in ms:
        bm = (m, m)
    if k in ks:
        bk = (k, k)
    if bm is None or bk is None:
        return None
    corners = [(a, b) for a in bm for b in bk]
    if any(c not in table for c in corners):
        return None

    def w(x, lo, hi):
        return 0.0 if lo == hi else (math.log(x) - math.log(lo)) / (math.log(hi) - math.log(lo))

    wm, wk = w(m, *bm), w(k, *bk)
    v00, v01, v10, v11 = (math.log(table[c]) for c in corners)
    value = (1 - wm) * ((1 - wk) * v00 + wk * v01) + wm * ((1 - wk) * v10 + wk * v11)
    return Answer(math.exp(value), "interpolated")


@functools.lru_cache(maxsize=None)
def _open_engine(system: str, version: str):
    """aiconfigurator's compiled engine bound to one system's tables and no model (its
    "database probe" spec): it evaluates ad-hoc op lists. Opened once per process."""
    import aiconfigurator_core as aic

    root = str(_package_root() / "systems")
    engine = {
        "schema_version": 1, "model_name": "__database_probe__", "system_name": system,
        "systems_path": root, "backend": FRAMEWORK, "backend_version": version,
        "kv_block_size": None, "tp_size": 1, "pp_size": 1, "attention_dp_size": None,
        "moe_tp_size": None, "moe_ep_size": None, "cp_size": None, "weight_dtype": None,
        "moe_dtype": None, "activation_dtype": None, "kv_cache_dtype": None,
        # As the SDK's default SILICON view: shared-layer fill from older collections on.
        "enable_shared_layer": True, "strict_provenance": False, "database_mode": "SILICON",
        "transfer_policy": None, "tolerate_dirless_version": False, "extra": {},
    }
    spec = {"schema_version": aic.engine_spec_schema_version(), "engine": engine,
            "context_ops": [], "generation_ops": []}
    return aic.AicEngine.from_spec(bytes(aic.engine_spec_bincode_from_json(json.dumps(spec))), root)


def _cache_dir() -> Path:
    from trtq.model.zoo import cache_dir

    return cache_dir() / "predict"


class AicKernels:
    """Single-op latencies for one system from aiconfigurator's engine, memoised on disk."""

    def __init__(self, gpu_name: str, cache: bool = True, scope: str = "any"):
        """`scope` names the disk-memo file within this system (e.g. the model and TP size),
        so a prediction reads only the answers its own ops produced."""
        self.gpu_name = gpu_name
        self.system = aic_system(gpu_name)
        self.version = framework_version(self.system)
        self.package_version = package_version()
        self._engine = None
        safe_scope = re.sub(r"[^A-Za-z0-9_.-]+", "_", scope)
        self._cache_path = (_cache_dir() / f"aic-{self.package_version}-{self.system}-{FRAMEWORK}-{self.version}"
                            / f"{safe_scope}.json")
        self._use_cache = cache
        self._memo: dict[str, list] = self._load_cache() if cache else {}
        self._dirty = False

    # ---- the disk memo --------------------------------------------------------------
    def _load_cache(self) -> dict[str, list]:
        try:
            data = json.loads(self._cache_path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def save(self) -> None:
        if not (self._use_cache and self._dirty):
            return
        from trtq.artifacts import atomic_write_text
        from trtq.errors import WriteError

        try:
            self._cache_path.parent.mkdir(parents=True, exist_ok=True)
            # Merge with what another process may have written meanwhile.
            merged = {**self._load_cache(), **self._memo}
            atomic_write_text(self._cache_path, json.dumps(merged, separators=(",", ":")))
            self._dirty = False
        except (OSError, WriteError):
            pass  # a cache that cannot be written (read-only, full) only costs speed: the answer stands

    # ---- the engine -----------------------------------------------------------------
    def _open(self):
        if self._engine is None:
            self._engine = _open_engine(self.system, self.version)
        return self._engine

    def evaluate(self, op: dict[str, Any], *, batch: int, s: int, context: bool = True) -> tuple[float, str]:
        """(ms, engine source) of one op; context=True puts batch*s tokens through token ops."""
        return self._evaluate(op, batch=batch, s=s, context=context)

    def _evaluate(self, op: dict[str, Any], *, batch: int, s: int, context: bool = True) -> tuple[float, str]:
        key = json.dumps([op, bool(context), int(batch), int(s)], sort_keys=True, separators=(",", ":"))
        hit = self._memo.get(key)
        if hit is not None:
            return hit[0], hit[1]
        kind = next(iter(op))
        payload = {kind: {**op[kind], "name": "op", "scale_factor": 1.0}}
        try:
            ((_, ms, _, source),) = self._open().evaluate_ops_json(
                json.dumps([payload]), bool(context), int(batch), int(s), 0, 1.0, None)
        except (ValueError, RuntimeError, LookupError) as exc:  # the engine's PerfDataNotAvailableError & co
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UnsupportedError(f"{AICONFIGURATOR_PACKAGE} cannot price {kind} on {self.system}: {first}") from None
        self._memo[key] = [ms, source]
        self._dirty = True
        return ms, source

    # ---- typed queries ----------------------------------------------------------------
    def has_gemm(self, fmt: str) -> bool:
        mode = AIC_GEMM_MODES.get(fmt)
        if mode is None:
            return False
        dtypes = self._memo.get("gemm_dtypes")
        if dtypes is None:
            dtypes = sorted(gemm_dtypes(self.system, self.version))
            self._memo["gemm_dtypes"] = dtypes
            self._dirty = True
        return mode in dtypes

    def gemm(self, n: int, k: int, fmt: str, tokens: int) -> Answer:
        mode = AIC_GEMM_MODES.get(fmt)
        if mode is None:
            raise UnsupportedError(
                f"{AICONFIGURATOR_PACKAGE} has no GEMM table or model for {fmt}; give --profile FILE"
            )
        key = f"gemm|{n}|{k}|{mode}|{tokens}"
        hit = self._memo.get(key)
        if hit is not None:
            return Answer(hit[0], hit[1])
        op = {"Gemm": {"n": n, "k": k, "quant_mode": mode, "scale_num_tokens": 1,
                       "low_precision_input": False, "seq_split": 1, "below_grid_sol": False}}
        ms, source = self.evaluate(op, batch=1, s=tokens)
        if source == "silicon":
            exact = (tokens, n, k, mode) in gemm_grid(self.system, self.version)
            provenance = "measured" if exact else "interpolated"
        else:
            provenance = "modelled"
        self._memo[key] = [ms, provenance]
        self._dirty = True
        return Answer(ms, provenance)

    def _tagged(self, ms: float, source: str) -> Answer:
        return Answer(ms, "interpolated" if source == "silicon" else "modelled")

    def context_attention(self, batch: int, seq: int, heads: int, kv_heads: int, head_dim: int,
                          kv_format: str) -> Answer:
        op = {"ContextAttention": {"n": heads, "n_kv": kv_heads, "head_size": head_dim, "window_size": 0,
                                   "kv_cache_dtype": AIC_KV_MODES[kv_format], "fmha_quant_mode": "bfloat16",
                                   "use_qk_norm": False, "cp_size": 1, "lane_order": ["default"]}}
        return self._tagged(*self.evaluate(op, batch=batch, s=seq))

    def generation_attention(self, batch: int, seq: int, heads: int, kv_heads: int, head_dim: int,
                             kv_format: str) -> Answer:
        op = {"GenerationAttention": {"n": heads, "n_kv": kv_heads, "head_size": head_dim, "window_size": 0,
                                      "kv_cache_dtype": AIC_KV_MODES[kv_format], "lane_order": ["default"]}}
        return self._tagged(*self.evaluate(op, batch=batch, s=seq, context=False))

    def allreduce(self, hidden: int, tp: int, tokens: int) -> Answer:
        op = {"CustomAllReduce": {"hidden_size": hidden, "tp_size": tp, "quant": "half", "seq_split": 1}}
        return self._tagged(*self.evaluate(op, batch=1, s=tokens))

    def elementwise(self, dim_in: int, dim_out: int, tokens: int) -> Answer:
        # The engine's Elementwise op: bytes moved per token, bf16 in and out.
        op = {"Elementwise": {"bytes_per_token": float((dim_in + dim_out) * 2), "scale_num_tokens": 1, "seq_split": 1}}
        return self._tagged(*self.evaluate(op, batch=1, s=tokens))

    def embedding(self, vocab: int, hidden: int, tokens: int) -> Answer:
        op = {"Embedding": {"vocab_size": vocab, "hidden_size": hidden, "quant_mode": "bfloat16", "seq_split": 1}}
        return self._tagged(*self.evaluate(op, batch=1, s=tokens))

    def fp8_quantize(self, tokens: int, k: int, dynamic: bool) -> Answer | None:
        """A standalone FP8 activation quantize of tokens x k from the measured tables:
        scale-and-cast (static per-tensor scale), plus the amax pass when dynamic."""
        key = f"fp8_quantize|{tokens}|{k}|{int(dynamic)}"
        hit = self._memo.get(key)
        if hit is not None:
            return None if hit[0] is None else Answer(hit[0], hit[1])
        answer = self._fp8_quantize(tokens, k, dynamic)
        self._memo[key] = [None, None] if answer is None else [answer.ms, answer.provenance]
        self._dirty = True
        return answer

    def _fp8_quantize(self, tokens: int, k: int, dynamic: bool) -> Answer | None:
        parts = [interpolate_mk(quantize_table(self.system, self.version, "scale_matrix_perf.parquet"), tokens, k)]
        if dynamic:
            parts.append(interpolate_mk(quantize_table(self.system, self.version, "computescale_perf.parquet"),
                                        tokens, k))
        if any(p is None for p in parts):
            return None
        prov = "measured" if all(p.provenance == "measured" for p in parts) else "interpolated"
        return Answer(sum(p.ms for p in parts), prov)

    @functools.cached_property
    def system_spec(self) -> dict[str, Any]:
        import yaml

        return yaml.safe_load((_package_root() / "systems" / f"{self.system}.yaml").read_text())

    def describe(self) -> dict[str, str]:
        return {"package": f"{AICONFIGURATOR_PACKAGE}=={self.package_version}", "system": self.system,
                "framework": FRAMEWORK, "framework_version": self.version}
