import pytest

from trtq.profile.harness import GemmCase
from trtq.profile.roofline import RooflineParams, roofline_row
from trtq.registry import get_gpu

H100 = get_gpu("h100")


def test_bf16_decode_gemm_by_hand():
    params = RooflineParams.for_gpu(H100)  # 0.75 compute, 0.85 bandwidth, 3000 ns launch
    row = roofline_row(H100, GemmCase(4096, 4096, 16, "bf16"), params)
    flops = 2 * 16 * 4096 * 4096
    nbytes = 4096 * 4096 * 2 + 16 * 4096 * 2 + 16 * 4096 * 2
    compute_ns = flops / (989.4e12 * 0.75) * 1e9      # 723.5 ns
    memory_ns = nbytes / (3.35e12 * 0.85) * 1e9       # 11 875.9 ns
    assert row.details["bound"] == "memory"
    assert row.latency_ns == pytest.approx(memory_ns + 3000)
    assert row.latency_ns == pytest.approx(14875.9, abs=0.1)
    assert row.details["compute_ns"] == pytest.approx(compute_ns)


def test_int4_awq_cuts_decode_not_prefill():
    params = RooflineParams.for_gpu(H100, launch_cost_ns=0)
    lat = {(fmt, m): roofline_row(H100, GemmCase(4096, 4096, m, fmt), params).latency_ns
           for fmt in ("bf16", "int4_awq", "fp8") for m in (16, 2048)}
    # weights: 8 MiB of int4 + fp16 scales per 128-group + AWQ vector instead of 32 MiB of bf16
    int4_bytes = 4096 * 4096 // 2 + 4096 * 32 * 2 + 4096 * 2 + 16 * 4096 * 2 + 16 * 4096 * 2
    assert lat["int4_awq", 16] == pytest.approx(int4_bytes / (3.35e12 * 0.85) * 1e9)
    assert lat["int4_awq", 16] < 0.3 * lat["bf16", 16]
    # prefill is compute-bound and INT4-AWQ computes at the bf16 rate: no gain; FP8 halves it
    assert lat["int4_awq", 2048] == pytest.approx(lat["bf16", 2048])
    assert lat["fp8", 2048] == pytest.approx(lat["bf16", 2048] / 2, rel=0.01)


def test_launch_cost_zero_gives_pure_kernel_time_and_gating_rows():
    a100 = get_gpu("a100")
    params = RooflineParams.for_gpu(a100, launch_cost_ns=0)
    fp8 = roofline_row(a100, GemmCase(576, 576, 16, "fp8"), params)
    assert fp8.status == "unsupported" and "sm80" in fp8.reason and fp8.latency_ns is None
    odd = roofline_row(get_gpu("b200"), GemmCase(64, 24, 16, "nvfp4"), params)
    assert odd.status == "unsupported" and "divides input width 24" in odd.reason
    row = roofline_row(a100, GemmCase(576, 576, 1, "bf16"), params)
    assert row.latency_ns == pytest.approx(max(row.details["compute_ns"], row.details["memory_ns"]))
