"""Kernel latencies for the step model, from aiconfigurator-core's compiled engine.

aiconfigurator-core (PyPI, Apache-2.0) ships NVIDIA's kernel tables measured with
TensorRT-LLM and a compiled (Rust) engine that interpolates them; trtq reads both through
one module, trtq/profile/aiconfigurator_tables.py (shared with the profile backend: the same
tables, version, engine and provenance rule). trtq asks that engine for single ops — a GEMM
at a format, context or generation attention at a KV format, a custom all-reduce, an
elementwise pass, the embedding — through its ad-hoc op-list entry point, never through its
model builders, so a plan's per-layer formats are priced one group at a time. The op JSON is
the engine's OpSpec wire format of the pinned version (tests hold it against the SDK's own
op classes).

Neither pandas nor the SDK is imported: opening the engine costs a few seconds (it loads the
tables), so every answer is memoised on disk under `$TRTQ_CACHE/predict/` keyed by package
version, system, framework version and the exact query; a repeated prediction answers
without opening the engine.

Provenance of each answer: a GEMM is `measured` exactly on the table's (m, n, k, dtype) grid,
`interpolated` between grid points, `extrapolated` beyond them (aiconfigurator_tables.py);
other ops are `interpolated` when the engine answers from its measured tables (`silicon`)
and `modelled` when from its own models (`empirical`/`estimated`/`sol`).
"""

from __future__ import annotations

import functools
import json
import math
import re
from pathlib import Path
from typing import Any

from trtq.artifacts.profile import Provenance
from trtq.errors import UnsupportedError
from trtq.profile.aiconfigurator_tables import (
    PACKAGE,
    PROVENANCES,  # noqa: F401 - the provenance labels, shared with the profile backend
    AicTables,
    Answer,
    gemm_op,
    package_version,
    table_dtypes,
)

AICONFIGURATOR_PACKAGE = PACKAGE
FRAMEWORK = "trtllm"


def aic_gemm_modes() -> dict[str, str]:
    """trtq format -> the engine's GEMM quant mode: the profile backend's one mapping (formats without a table
    are absent)."""
    return {fmt: mode for fmt, mode in table_dtypes().items() if mode is not None}


# trtq KV-cache format -> the engine's attention kv_cache_dtype.
AIC_KV_MODES = {"bf16": "bfloat16", "fp8": "fp8"}
# Bytes per KV element.
KV_BYTES = {"bf16": 2.0, "fp8": 1.0, "nvfp4": 9 / 16}
# Bump when an answer's meaning changes, so an older disk memo is not read (2: the shared provenance rule).
MEMO_FORMAT = 2


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


def _cache_dir() -> Path:
    from trtq.model.zoo import cache_dir

    return cache_dir() / "predict"


# Head sizes the attention tables hold on some GPU (A100's: 128 only), and the GPU whose tables hold the most of
# them: its ratio between two head sizes prices a head size another GPU's tables lack.
ATTENTION_HEAD_SIZES = (64, 128, 256)
REFERENCE_GPU = "H100-SXM"


class AicKernels:
    """Single-op latencies for one system from aiconfigurator's engine, memoised on disk."""

    def __init__(self, gpu_name: str, cache: bool = True, scope: str = "any"):
        """`scope` names the disk-memo file within this system (e.g. the model and TP size),
        so a prediction reads only the answers its own ops produced."""
        from trtq.registry.gpus import get_gpu

        self.gpu_name = gpu_name
        self.tables = AicTables.for_gpu(
            get_gpu(gpu_name), FRAMEWORK, hint=" (give --profile FILE for the GEMMs on other GPUs)"
        )
        self.system, self.version = self.tables.system, self.tables.version
        self.package_version = package_version()
        safe_scope = re.sub(r"[^A-Za-z0-9_.-]+", "_", scope)
        self._cache_path = (
            _cache_dir() / f"aic-{self.package_version}-{self.system}-{FRAMEWORK}-{self.version}"
            f"-memo{MEMO_FORMAT}" / f"{safe_scope}.json"
        )
        self._use_cache = cache
        self._memo: dict[str, list] = self._load_cache() if cache else {}
        self._dirty = False
        self._reference: AicKernels | None = None  # REFERENCE_GPU's tables, opened when a head size is missing

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
        """The engine (opening it loads the tables: seconds); tests replace it to prove a memo hit."""
        return self.tables.engine()

    def evaluate(self, op: dict[str, Any], *, batch: int, s: int, context: bool = True) -> tuple[float, str]:
        """(ms, engine source) of one op; context=True puts batch*s tokens through token ops."""
        return self._evaluate(op, batch=batch, s=s, context=context)

    def _evaluate(self, op: dict[str, Any], *, batch: int, s: int, context: bool = True) -> tuple[float, str]:
        key = json.dumps([op, bool(context), int(batch), int(s)], sort_keys=True, separators=(",", ":"))
        hit = self._memo.get(key)
        if hit is not None:
            return hit[0], hit[1]
        self._open()
        ms, source = self.tables.evaluate(op, batch=batch, s=s, context=context)
        self._memo[key] = [ms, source]
        self._dirty = True
        return ms, source

    # ---- typed queries ----------------------------------------------------------------
    def has_gemm(self, fmt: str) -> bool:
        mode = aic_gemm_modes().get(fmt)
        if mode is None:
            return False
        dtypes = self._memo.get("gemm_dtypes")
        if dtypes is None:
            dtypes = sorted(self.tables.gemm_dtypes)
            self._memo["gemm_dtypes"] = dtypes
            self._dirty = True
        return mode in dtypes

    def gemm(self, n: int, k: int, fmt: str, tokens: int) -> Answer:
        mode = aic_gemm_modes().get(fmt)
        if mode is None:
            raise UnsupportedError(
                f"{AICONFIGURATOR_PACKAGE} has no GEMM table or model for {fmt}; give --profile FILE"
            )
        key = f"gemm|{n}|{k}|{mode}|{tokens}"
        hit = self._memo.get(key)
        if hit is not None:
            return Answer(hit[0], hit[1])
        ms, source = self.evaluate(gemm_op(n, k, mode), batch=1, s=tokens)
        provenance = self.tables.gemm_provenance(mode, tokens, n, k, source)
        self._memo[key] = [ms, provenance]
        self._dirty = True
        return Answer(ms, provenance)

    def _tagged(self, ms: float, source: str) -> Answer:
        return Answer(ms, "interpolated" if source == "silicon" else "modelled")

    def context_attention(
        self, batch: int, seq: int, heads: int, kv_heads: int, head_dim: int, kv_format: str
    ) -> Answer:
        op = {
            "ContextAttention": {
                "n": heads,
                "n_kv": kv_heads,
                "head_size": head_dim,
                "window_size": 0,
                "kv_cache_dtype": AIC_KV_MODES[kv_format],
                "fmha_quant_mode": "bfloat16",
                "use_qk_norm": False,
                "cp_size": 1,
                "lane_order": ["default"],
            }
        }
        return self._attention(op, batch=batch, seq=seq, context=True)

    def generation_attention(
        self, batch: int, seq: int, heads: int, kv_heads: int, head_dim: int, kv_format: str
    ) -> Answer:
        op = {
            "GenerationAttention": {
                "n": heads,
                "n_kv": kv_heads,
                "head_size": head_dim,
                "window_size": 0,
                "kv_cache_dtype": AIC_KV_MODES[kv_format],
                "lane_order": ["default"],
            }
        }
        return self._attention(op, batch=batch, seq=seq, context=False)

    def _attention(self, op: dict[str, Any], *, batch: int, seq: int, context: bool) -> Answer:
        """An attention op from the tables. A head size they lack (A100's tables hold 128 only) is priced at the
        nearest head size they hold, times the ratio of the two sizes' times on the reference GPU's tables
        (REFERENCE_GPU, same op and shape), or linearly in head size where those lack it too: modelled.
        Held against B200's tables, which hold both 64 and 128: the ratio lands within 21%, linear within 45%."""
        try:
            return self._attention_kv(op, batch=batch, seq=seq, context=context)
        except UnsupportedError as exc:
            ((name, fields),) = op.items()
            size = int(fields["head_size"])
            for other in sorted(ATTENTION_HEAD_SIZES, key=lambda d: abs(math.log2(d / size))):
                if other == size:
                    continue
                near_op = {name: {**fields, "head_size": other}}
                try:
                    near = self._attention_kv(near_op, batch=batch, seq=seq, context=context)
                except UnsupportedError:
                    continue
                ratio = size / other
                if self.gpu_name != REFERENCE_GPU:
                    if self._reference is None:
                        self._reference = AicKernels(REFERENCE_GPU, cache=self._use_cache, scope="head-size-ratio")
                    try:
                        ref = self._reference._attention_kv(op, batch=batch, seq=seq, context=context)
                        ref_near = self._reference._attention_kv(near_op, batch=batch, seq=seq, context=context)
                        ratio = ref.ms / ref_near.ms
                    except UnsupportedError:
                        pass
                    finally:
                        self._reference.save()
                return Answer(near.ms * ratio, "modelled")
            raise exc

    def _attention_kv(self, op: dict[str, Any], *, batch: int, seq: int, context: bool) -> Answer:
        """An attention op from the tables. They hold KV-head counts on a grid of powers of two (1, 2, 4, 8,
        ...), and the engine does not interpolate across it: a model between two (SmolLM2's 3 KV heads) is
        priced linearly in KV heads between its neighbours (KV bytes read and the GQA work grow with them)."""
        try:
            return self._tagged(*self.evaluate(op, batch=batch, s=seq, context=context))
        except UnsupportedError:
            ((name, fields),) = op.items()
            n_kv = int(fields["n_kv"])
            lower, upper = 1 << (n_kv.bit_length() - 1), 1 << n_kv.bit_length()
            if lower == n_kv or n_kv < 1:
                raise
            try:
                ends = [
                    self._tagged(*self.evaluate({name: {**fields, "n_kv": kv}}, batch=batch, s=seq, context=context))
                    for kv in (lower, upper)
                ]
            except UnsupportedError:
                raise UnsupportedError(
                    f"{AICONFIGURATOR_PACKAGE} cannot price {name} with {n_kv} KV heads on {self.system}, nor "
                    f"its neighbours {lower} and {upper} on the tables' grid"
                ) from None
        ms = ends[0].ms + (ends[1].ms - ends[0].ms) * (n_kv - lower) / (upper - lower)
        modelled = "modelled" in (ends[0].provenance, ends[1].provenance)
        return Answer(ms, "modelled" if modelled else "interpolated")

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
        parts = [interpolate_mk(self.tables.quantize_table("scale_matrix_perf.parquet"), tokens, k)]
        if dynamic:
            parts.append(interpolate_mk(self.tables.quantize_table("computescale_perf.parquet"), tokens, k))
        if any(p is None for p in parts):
            return None
        prov: Provenance = "measured" if all(p.provenance == "measured" for p in parts) else "interpolated"
        return Answer(sum(p.ms for p in parts), prov)

    @functools.cached_property
    def system_spec(self) -> dict[str, Any]:
        import yaml

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader: a tenth of the time
        return yaml.load((self.tables.systems_root / f"{self.system}.yaml").read_text(), Loader=loader)

    def describe(self) -> dict[str, str]:
        return {
            "package": f"{AICONFIGURATOR_PACKAGE}=={self.package_version}",
            "system": self.system,
            "framework": FRAMEWORK,
            "framework_version": self.version,
        }
