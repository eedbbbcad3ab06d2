"""The cuda backend: gating, kernel wiring (on torch's fake CUDA device), the table, and real GPU runs."""

from __future__ import annotations

import pytest

from tests.gating import requires_gpu, requires_ngc, requires_sm
from trtq.artifacts import load_artifact, save_artifact
from trtq.artifacts.profile import Profile
from trtq.errors import InputError, UnknownNameError
from trtq.profile.cuda import (
    INT_MM_MIN_ROWS,
    TORCH_INT4PACK,
    TORCH_INT_MM,
    TORCH_MATMUL,
    TORCH_SCALED_MM,
    TRTLLM_MIXED,
    TRTLLM_NVFP4,
    CudaBackend,
    TrtllmInfo,
    choose_kernel,
    inner_k_tiles,
    nvfp4_gemm_args,
    registry_gpu_for,
)
from trtq.profile.harness import GemmCase, HarnessSettings
from trtq.registry import get_gpu

TRTLLM = TrtllmInfo(version="1.2.0", ops=frozenset({"finegrained_mixed_dtype_gemm", "nvfp4_gemm", "fp4_quantize"}),
                    mixed_gemm_max_sm=103, w4a8_max_sm=None)
FAST = HarnessSettings(warmup=0, min_repeats=3, max_repeats=3, target_total_ns=1.0)


def case(fmt, m=16, n=960, k=576):
    return GemmCase(n, k, m, fmt)


@pytest.mark.parametrize("sm, fmt, trtllm, kernel, reason", [
    (80, "bf16", None, TORCH_MATMUL, None),
    (80, "fp8", None, None, "this GPU is sm80; fp8 needs sm89+"),
    (89, "fp8", None, TORCH_SCALED_MM, None),
    (80, "int8_sq", None, TORCH_INT_MM, None),
    (80, "int4_awq", None, TORCH_INT4PACK, None),
    (90, "int4_awq", TRTLLM, TRTLLM_MIXED, None),
    (80, "w4a8_awq", TRTLLM, None, "this GPU is sm80; w4a8_awq needs sm89+"),
    (90, "w4a8_awq", None, None, "w4a8_awq runs only on TensorRT-LLM kernels"),
    (90, "w4a8_awq", TRTLLM, TRTLLM_MIXED, None),
    (90, "nvfp4", TRTLLM, None, "this GPU is sm90; nvfp4 needs sm100+"),
    (100, "nvfp4", None, None, "nvfp4 runs only on TensorRT-LLM kernels"),
    (100, "nvfp4", TRTLLM, TRTLLM_NVFP4, None),
])
def test_format_gating_by_compute_capability(sm, fmt, trtllm, kernel, reason):
    choice = choose_kernel(case(fmt), sm, trtllm)
    assert choice.kernel == kernel
    if reason is None:
        assert choice.reason is None
    else:
        assert choice.method == "none" and reason in choice.reason and "\n" not in choice.reason


def test_trtllm_limits_and_shape_gates():
    old = TrtllmInfo(version="0.21", ops=frozenset({"finegrained_mixed_dtype_gemm"}),
                     mixed_gemm_max_sm=90, w4a8_max_sm=90)
    # Newer GPU than that TensorRT-LLM's mixed GEMM: int4 falls back to torch and says why; w4a8 has nothing.
    fallback = choose_kernel(case("int4_awq"), 100, old)
    assert fallback.kernel == TORCH_INT4PACK and "sm100" in fallback.details["fallback"]
    assert "no W4A8 GEMM for sm100" in choose_kernel(case("w4a8_awq"), 100, old).reason
    assert "nvfp4_gemm" in choose_kernel(case("nvfp4"), 100, old).reason
    # Shapes the kernels refuse are gated before any tensor exists.
    assert "divisible by 16" in choose_kernel(case("fp8", n=968), 90, None).reason
    assert "no int4_awq block size" in choose_kernel(case("int4_awq", k=584), 90, None).reason
    assert "964 not divisible by 8" in choose_kernel(case("w4a8_awq", n=964), 90, TRTLLM).reason
    # int4 group follows the registry: 128 where it divides, else 64 (SmolLM2's 576).
    assert choose_kernel(case("int4_awq", k=4096), 90, TRTLLM).details["group_size"] == 128
    assert choose_kernel(case("int4_awq", k=576), 90, None).details == {
        "group_size": 64, "inner_k_tiles": 4, "fallback": "tensorrt_llm is not importable here"}
    # torch._int_mm needs more than 16 rows: decode is padded and the row records the kernel's M.
    assert choose_kernel(case("int8_sq", m=1), 90, None).details == {"kernel_tokens": INT_MM_MIN_ROWS}
    assert choose_kernel(case("int8_sq", m=2048), 90, None).details == {}


def test_inner_k_tiles_and_nvfp4_signatures():
    assert [inner_k_tiles(k) for k in (4096, 576, 1536, 96)] == [8, 4, 8, 2]
    with pytest.raises(ValueError):
        inner_k_tiles(584)
    new = nvfp4_gemm_args(["Tensor"] * 5 + ["ScalarType", "int", "str"], "a", "w", "asf", "wsf", "alpha", "bf16")
    old = nvfp4_gemm_args(["Tensor"] * 5 + ["bool", "ScalarType?"], "a", "w", "asf", "wsf", "alpha", "bf16")
    assert new == ["a", "w", "asf", "wsf", "alpha", "bf16"]
    assert old == ["a", "w", "asf", "wsf", "alpha", False, "bf16"]


@pytest.mark.parametrize("shape", [(960, 576), (576, 1536), (6144, 4096)])
@pytest.mark.parametrize("tokens", [1, 16, 2048])
def test_torch_kernels_take_their_arguments_on_fake_cuda(shape, tokens):
    """Every torch kernel is built and called through torch's own CUDA meta checks (layouts included)."""
    import torch

    n, k = shape
    backend = CudaBackend(FAST, fake=True, capability=(9, 0), trtllm=None)
    for fmt in ("bf16", "fp8", "int8_sq", "int4_awq"):
        prepared = backend.prepare(GemmCase(n, k, tokens, fmt))
        assert prepared.reason is None, prepared.reason
        out = prepared.run()
        rows = prepared.details.get("kernel_tokens", tokens)
        assert (tuple(out.shape), out.dtype, out.device.type) == ((rows, n), torch.bfloat16, "cuda")


def test_kernel_refusal_becomes_an_unsupported_row(monkeypatch):
    backend = CudaBackend(FAST, fake=True, capability=(9, 0), trtllm=None)

    def refuse(choice, gemm):
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device\nmore")

    monkeypatch.setattr(backend, "_build", refuse)
    row = backend.prepare(case("bf16"))
    assert row.run is None
    assert row.reason == ("torch.matmul failed here: RuntimeError: CUDA error: no kernel image is available "
                          "for execution on the device")


@pytest.fixture
def fake_a100(monkeypatch):
    """Register a cuda backend on a fake sm80 device that the registry calls an A100."""
    from trtq.profile import backends

    made = []

    def factory(request):
        backend = CudaBackend(HarnessSettings(**{**FAST.model_dump(), **request.harness}), seed=request.seed,
                              fake=True, capability=(8, 0), trtllm=None,
                              registry_gpu=get_gpu("A100-SXM-80GB"))
        made.append(backend)
        return backend

    monkeypatch.setitem(backends.PROFILER_BACKENDS, "cuda", factory)
    return made


def test_cuda_table_dedupes_shapes_gates_formats_and_round_trips(smollm2_graph, fake_a100, tmp_path):
    from trtq.profile.api import build_profile

    profile = build_profile(smollm2_graph, "cuda", "auto", [1, 16], harness={"min_repeats": 3})
    shapes = smollm2_graph.unique_shapes()
    assert len(shapes) < len(smollm2_graph.layers)
    # Every format stays in a measured table: what sm80 cannot run is a row with its reason.
    assert profile.formats == ["bf16", "fp8", "int8_sq", "int4_awq", "w4a8_awq", "nvfp4", "fp8_block"]
    assert len(profile.rows) == len(shapes) * 7 * 2
    assert sorted({(r.out_features, r.in_features) for r in profile.rows}) == sorted(shapes)
    assert (profile.backend, profile.gpu, profile.launch_cost_ns) == ("cuda", "A100-SXM-80GB", 0.0)
    by_format = {}
    for row in profile.rows:
        by_format.setdefault(row.format, set()).add(row.status)
    assert by_format["fp8"] == by_format["w4a8_awq"] == by_format["nvfp4"] == by_format["fp8_block"] == {"unsupported"}
    for fmt in ("bf16", "int8_sq", "int4_awq"):
        assert by_format[fmt] <= {"ok", "noisy"}
    fp8 = next(r for r in profile.rows if r.format == "fp8")
    assert fp8.latency_ns is None and fp8.reason == "this GPU is sm80; fp8 needs sm89+"
    measured = [r for r in profile.rows if r.latency_ns is not None]
    assert all(r.repeats == 3 and r.cv is not None and r.min_ns <= r.latency_ns <= r.max_ns for r in measured)
    int8_decode = next(r for r in measured if r.format == "int8_sq" and r.tokens == 1)
    assert int8_decode.details["kernel_tokens"] == INT_MM_MIN_ROWS
    assert profile.settings["cuda_graphs"] is False and profile.settings["harness"]["min_repeats"] == 3
    assert profile.device["gpu"] == "A100-SXM-80GB" and profile.device["sm"] == 80
    for name in ("p.json", "p.yaml"):
        save_artifact(profile, tmp_path / name)
        assert load_artifact(tmp_path / name, Profile) == profile


def test_cuda_backend_refuses_a_named_gpu_that_is_not_in_hand(smollm2_graph, fake_a100):
    from trtq.profile.api import build_profile

    with pytest.raises(InputError, match="the cuda backend measures the GPU in hand; use --gpu auto"):
        build_profile(smollm2_graph, "cuda", "H100-SXM", [1])


@pytest.mark.parametrize("name, sm, sms, expected", [
    ("NVIDIA H100 80GB HBM3", 90, 132, "H100-SXM"),
    ("NVIDIA H200", 90, 132, "H200"),
    ("NVIDIA A100-SXM4-80GB", 80, 108, "A100-SXM-80GB"),
    ("NVIDIA B200", 100, 148, "B200"),
    ("NVIDIA L40S", 89, 142, "L40S"),
])
def test_gpu_auto_maps_device_names_to_the_registry(name, sm, sms, expected):
    assert registry_gpu_for(name, sm, sms).name == expected


def test_gpu_auto_refuses_unknown_gpus_and_other_skus():
    with pytest.raises(UnknownNameError, match=r"'NVIDIA H100 PCIe' \(sm90, 114 SMs\) is not in the GPU registry"):
        registry_gpu_for("NVIDIA H100 PCIe", 90, 114)
    with pytest.raises(UnknownNameError, match="a different SKU or a MIG slice"):
        registry_gpu_for("NVIDIA H100 80GB HBM3", 90, 16)


def test_cuda_backend_without_a_gpu_is_one_line_exit_2(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the no-GPU error path does not apply")
    from trtq.cli import main

    for argv in (["--backend", "cuda"], ["--backend", "roofline", "--gpu", "auto"]):
        assert main(["profile", "smollm2-135m", *argv, "-o", str(tmp_path / "p.json")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("trtq: error: no CUDA GPU here") and err.count("\n") == 1
    assert not (tmp_path / "p.json").exists()


# ---- on a GPU -----------------------------------------------------------------------------


def _real_backend(**kwargs):
    return CudaBackend(HarnessSettings(warmup=2, min_repeats=10, max_repeats=50, target_total_ns=2e6), **kwargs)


@requires_gpu
def test_gpu_bf16_measured_with_events_and_l2_flush():
    backend = _real_backend()
    info = backend.device_info()
    assert info["sm_count"] > 0 and info["cuda"] and backend.settings()["l2_flush_bytes"] >= 2 * info["l2_bytes"]
    rows = backend.profile([GemmCase(4096, 4096, 1, "bf16"), GemmCase(4096, 4096, 2048, "bf16")])
    decode, prefill = rows
    assert all(r.status in ("ok", "noisy") and r.repeats >= 10 for r in rows)
    # 32 MiB of weights cannot be read in under ~5 us on any GPU today; 2048 tokens cost more than 1.
    assert 5e3 < decode.latency_ns < prefill.latency_ns


@requires_gpu
def test_gpu_cuda_graphs_are_recorded_and_measure():
    backend = _real_backend(cuda_graphs=True)
    row = backend.profile([GemmCase(4096, 4096, 16, "bf16")])[0]
    assert row.latency_ns > 0 and row.details["cuda_graph"] is True and backend.settings()["cuda_graphs"]


@requires_sm(89)
def test_gpu_fp8_is_faster_than_bf16_when_compute_bound():
    backend = _real_backend()
    bf16, fp8 = backend.profile([GemmCase(8192, 8192, 4096, "bf16"), GemmCase(8192, 8192, 4096, "fp8")])
    assert fp8.method.startswith("torch._scaled_mm") and fp8.latency_ns < bf16.latency_ns


@requires_sm(80)
def test_gpu_int8_and_int4_kernels_run():
    backend = _real_backend(trtllm=None)
    rows = backend.profile([GemmCase(4096, 4096, 1, "int8_sq"), GemmCase(4096, 4096, 1, "int4_awq")])
    assert [r.status in ("ok", "noisy") for r in rows] == [True, True], [r.reason for r in rows]
    assert rows[1].method.startswith("aten._weight_int4pack_mm")


@requires_gpu
def test_gpu_auto_names_the_registry_entry_or_refuses_in_one_line():
    from trtq.profile.cuda import detect_registry_gpu

    try:
        gpu, info = detect_registry_gpu()
    except UnknownNameError as exc:
        assert "\n" not in str(exc) and "profiles/gpus.yaml" in str(exc)
    else:
        assert gpu.sm == info["sm"]


@requires_ngc
@requires_sm(90)
def test_gpu_trtllm_w4a8_and_int4_kernels_run():
    backend = _real_backend()
    rows = backend.profile([GemmCase(4096, 4096, 16, "int4_awq"), GemmCase(4096, 4096, 16, "w4a8_awq")])
    assert all(r.method.startswith("trtllm") for r in rows), [r.method for r in rows]
    assert all(r.latency_ns for r in rows), [r.reason for r in rows]
