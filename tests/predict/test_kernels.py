"""aiconfigurator's engine as trtq's kernel source, held against the package's own files."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from trtq.errors import UnknownNameError, UnsupportedError
from trtq.predict.kernels import AicKernels, interpolate_mk
from trtq.profile.aiconfigurator_tables import default_version, table_path


def _rows(system, op, filename, **where):
    table = pq.read_table(table_path(system, op, "trtllm", default_version(system, "trtllm"), filename)).to_pylist()
    return [r for r in table if all(r[k] == v for k, v in where.items())]


def test_gemm_at_a_grid_point_is_the_measured_row():
    kernels = AicKernels("H100-SXM")
    (row,) = _rows("h100_sxm", "gemm", "gemm_perf.parquet", m=2048, n=4096, k=4096, gemm_dtype="fp8")
    answer = kernels.gemm(4096, 4096, "fp8", 2048)
    assert answer.provenance == "measured"
    assert answer.ms * 1e6 == pytest.approx(row["latency"] * 1e6, abs=1.0)   # to the nanosecond
    between = kernels.gemm(4096, 4096, "fp8", 3000)
    assert between.provenance == "interpolated"
    # lm_head of Llama-3: n = 128256 is beyond the table's n (65536): the engine's estimate, flagged.
    assert kernels.gemm(128256, 4096, "bf16", 16).provenance == "extrapolated"
    lo, hi = kernels.gemm(4096, 4096, "fp8", 2048).ms, kernels.gemm(4096, 4096, "fp8", 4096).ms
    assert lo < between.ms < hi


def test_fp8_quantize_tables_and_interpolation():
    table = AicKernels("H100-SXM").tables.quantize_table("scale_matrix_perf.parquet")
    (row,) = _rows("h100_sxm", "quantize", "scale_matrix_perf.parquet", m=2048, k=4096)
    exact = AicKernels("H100-SXM").fp8_quantize(2048, 4096, dynamic=False)
    assert exact.provenance == "measured" and exact.ms == pytest.approx(row["latency"])
    # Leave m = 2048 out: log-log interpolation from its neighbours lands within 25% of it.
    held_out = {key: v for key, v in table.items() if key[0] != 2048}
    guess = interpolate_mk(held_out, 2048, 4096)
    assert guess.provenance == "interpolated"
    assert guess.ms == pytest.approx(row["latency"], rel=0.25)
    assert interpolate_mk(table, 10 ** 7, 4096) is None   # outside the grid: no answer


def test_attention_and_provenance_labels():
    kernels = AicKernels("H100-SXM")
    ctx = kernels.context_attention(1, 2048, 32, 8, 128, "fp8")
    gen_fp8 = kernels.generation_attention(64, 2048, 32, 8, 128, "fp8")
    gen_bf16 = kernels.generation_attention(64, 2048, 32, 8, 128, "bf16")
    assert ctx.ms > 0 and ctx.provenance in ("interpolated", "modelled")
    # Decode attention reads the KV cache: FP8 KV halves the bytes.
    assert gen_fp8.ms < gen_bf16.ms
    assert kernels.allreduce(4096, 2, 1024).ms > kernels.allreduce(4096, 2, 16).ms


def test_formats_without_a_table_are_refused():
    kernels = AicKernels("H100-SXM")
    assert kernels.has_gemm("fp8") and kernels.has_gemm("fp8_block") and not kernels.has_gemm("int4_awq")
    assert not kernels.has_gemm("w4a8_awq") and AicKernels("B200").has_gemm("nvfp4")
    with pytest.raises(UnsupportedError, match="has no GEMM table or model for w4a8_awq"):
        kernels.gemm(4096, 4096, "w4a8_awq", 16)
    with pytest.raises(UnsupportedError, match="has no GEMM table or model for int4_awq"):
        kernels.gemm(4096, 4096, "int4_awq", 16)
    with pytest.raises(UnknownNameError, match="unknown GPU 'MI300'"):
        AicKernels("MI300")


def test_answers_are_memoised_on_disk(predict_cache):
    first = AicKernels("H200", scope="memo test")
    answer = first.gemm(4096, 14336, "bf16", 77)
    first.save()
    (directory,) = [p for p in (predict_cache / "predict").iterdir() if "h200" in p.name]
    assert json.loads((directory / "memo_test.json").read_text())["gemm|4096|14336|bfloat16|77"][0] == answer.ms
    second = AicKernels("H200", scope="memo test")
    second._open = lambda: (_ for _ in ()).throw(AssertionError("engine opened on a cached answer"))
    assert second.gemm(4096, 14336, "bf16", 77) == answer


def test_op_json_is_the_sdks_own():
    """trtq writes the engine's OpSpec JSON by hand (no SDK import at predict time): hold it
    against what the SDK's op classes serialise to, for every op kind it uses."""
    from aiconfigurator_core.sdk import common
    from aiconfigurator_core.sdk import operations as ops
    from aiconfigurator_core.sdk.engine import build_ops_json

    sdk_ops = [
        ops.GEMM("op", 1, 6144, 4096, common.GEMMQuantMode.fp8),
        ops.ContextAttention("op", 1, 32, 8, common.KVCacheQuantMode.fp8, common.FMHAQuantMode.bfloat16, head_size=128),
        ops.GenerationAttention("op", 1, 32, 8, common.KVCacheQuantMode.bfloat16, head_size=128),
        ops.CustomAllReduce("op", 1, 4096, 2),
        ops.ElementWise("op", 1, 8192, 8192, 0.8),
        ops.Embedding("op", 1, 128256, 4096, 0.3),
    ]
    sdk = json.loads(build_ops_json(sdk_ops))
    seen = []

    class Spy(AicKernels):
        def _evaluate(self, op, *, batch, s, context=True):
            kind = next(iter(op))
            seen.append({kind: {**op[kind], "name": "op", "scale_factor": 1.0}})
            return 0.001, "silicon"

    spy = Spy("H100-SXM", cache=False)
    spy.gemm(6144, 4096, "fp8", 1)
    spy.context_attention(1, 128, 32, 8, 128, "fp8")
    spy.generation_attention(1, 128, 32, 8, 128, "bf16")
    spy.allreduce(4096, 2, 1)
    spy.elementwise(8192, 8192, 1)
    spy.embedding(128256, 4096, 1)
    assert seen == sdk


@pytest.mark.parametrize("heads, head_dim", [(32, 128), (16, 64), (64, 128)])
def test_kv_heads_off_the_tables_grid_are_interpolated(heads, head_dim):
    # The tables hold KV heads 1, 2, 4, 8 ...: SmolLM2's 3 lies between two grid points, linear in KV heads.
    kernels = AicKernels("H100-SXM")
    for attention, batch in ((kernels.generation_attention, 64), (kernels.context_attention, 2)):
        two, three, four, eight = (attention(batch, 2048, heads, kv, head_dim, "bf16") for kv in (2, 3, 4, 8))
        assert three.ms == pytest.approx((two.ms + four.ms) / 2, rel=1e-12)
        assert three.provenance in ("interpolated", "modelled")
        # The rule held against the tables: 4 KV heads from their neighbours 2 and 8, left out, within 12%.
        assert two.ms + (eight.ms - two.ms) * (4 - 2) / (8 - 2) == pytest.approx(four.ms, rel=0.12)


def test_a_head_size_the_tables_lack_is_priced_from_the_reference_gpus_ratio(monkeypatch):
    # A100's attention tables hold head size 128 only: SmolLM2's 64 is priced, and says it is modelled.
    a100 = AicKernels("A100-SXM-80GB")
    for answer in (a100.context_attention(2, 1024, 9, 3, 64, "bf16"), a100.generation_attention(32, 1024, 9, 3, 64,
                                                                                                 "bf16")):
        assert answer.ms > 0 and answer.provenance == "modelled"
    # The rule held against B200's tables, which hold both 64 and 128: hide 64, price it from 128 and H100's
    # ratio, compare with B200's own 64 (within 25%, where halving the 128 time misses by up to 45%).
    truth = AicKernels("B200")
    hidden = AicKernels("B200")
    real = hidden._attention_kv

    def without_64(op, **kw):
        if next(iter(op.values()))["head_size"] == 64:
            raise UnsupportedError("hidden")
        return real(op, **kw)

    monkeypatch.setattr(hidden, "_attention_kv", without_64)
    for name, batch in (("context_attention", 2), ("generation_attention", 64)):
        for heads, kv in ((32, 8), (16, 4), (64, 8)):
            guess = getattr(hidden, name)(batch, 2048, heads, kv, 64, "bf16")
            assert guess.provenance == "modelled"
            assert guess.ms == pytest.approx(getattr(truth, name)(batch, 2048, heads, kv, 64, "bf16").ms, rel=0.25)
