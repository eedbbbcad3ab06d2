"""The cuda backend: real GEMM kernels on the GPU in hand, through the shared harness.

Kernels per format (a row's `method` names the kernel that produced its number; each format chooses
its own in `Format.cuda_kernel`, trtq/formats/<name>.py):
  bf16      torch.matmul (cuBLAS)
  fp8       torch._scaled_mm, e4m3 operands, per-tensor fp32 scales (sm89+)
  int8_sq   torch._int_mm plus the per-channel dequantising scale (one elementwise kernel)
  int4_awq  TensorRT-LLM's trtllm::finegrained_mixed_dtype_gemm (W4A16, group 128/64) when
            tensorrt_llm imports, else aten._weight_int4pack_mm (torch's tinygemm kernel)
  w4a8_awq  TensorRT-LLM's finegrained_mixed_dtype_gemm with fp8 activations; nothing else
  nvfp4     TensorRT-LLM's trtllm::nvfp4_gemm (sm100+); nothing else
A format with no kernel here is an `unsupported` row with the reason, never a guess.

Timing: CUDA events around one call (or one CUDA-graph replay with --cuda-graphs), the L2
cache flushed before every repetition by zeroing a buffer twice the size of L2, warm-up,
repetitions, medians and re-measurement of noisy rows in trtq.profile.harness.
Activations are quantized before timing (the GEMM is timed, not the quantizer).

Which kernel runs a case is decided by `choose_kernel`, a pure function of the case, the
compute capability and what TensorRT-LLM offers, so the gating is tested without a GPU.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from collections.abc import Callable
from typing import Literal

from trtq.errors import MissingToolError, UnknownNameError
from trtq.formats.kernels import (  # noqa: F401  (the kernel vocabulary, public here as before)
    INT_MM_MIN_ROWS,
    TINYGEMM_GROUP_SIZES,
    TORCH_INT4PACK,
    TORCH_INT_MM,
    TORCH_MATMUL,
    TORCH_SCALED_MM,
    TRTLLM_MIXED,
    TRTLLM_NVFP4,
    KernelChoice,
    TrtllmInfo,
    inner_k_tiles,
    unsupported,
)
from trtq.profile.harness import GemmCase, HarnessSettings, Prepared, measure_table
from trtq.registry.formats import get_format
from trtq.registry.gpus import GpuSpec, get_gpu, list_gpus


def choose_kernel(case: GemmCase, sm: int, trtllm: TrtllmInfo | None, trtllm_reason: str | None = None) -> KernelChoice:
    """The kernel that measures `case` on a GPU of compute capability `sm` (e.g. 90), or why none:
    the GPU and shape gates every format shares, then the format's own choice (`Format.cuda_kernel`)."""
    fmt = get_format(case.format)
    k = case.in_features
    if sm < fmt.min_sm:
        return unsupported(f"this GPU is sm{sm}; {fmt.name} needs sm{fmt.min_sm}+")
    if not fmt.available_for(k):
        return unsupported(fmt.unavailable_reason(k))
    return fmt.cuda_kernel(case, sm, trtllm, trtllm_reason)


def nvfp4_gemm_args(argument_types: list[str], act, weight, act_sf, weight_sf, alpha, out_dtype) -> list:
    """Positional arguments for trtllm::nvfp4_gemm across its two published signatures.

    Older releases take (act, weight, act_sf, weight_sf, alpha, <bool>, dtype); newer ones
    (act, weight, act_sf, weight_sf, alpha, output_dtype, ...). The schema decides.
    """
    args = [act, weight, act_sf, weight_sf, alpha]
    if len(argument_types) > 5 and argument_types[5].lower().startswith("bool"):
        args.append(False)
    args.append(out_dtype)
    return args


# ---- the device ---------------------------------------------------------------------------


def _nvidia_smi() -> dict:
    """Driver and clocks from nvidia-smi where it exists (torch does not report them)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return {}
    fields = ["driver_version", "clocks.sm", "clocks.max.sm", "clocks.mem", "clocks.max.mem", "power.limit", "pstate"]
    try:
        out = subprocess.run(
            [exe, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits", "--id=0"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    values = [v.strip() for v in out.strip().splitlines()[0].split(",")] if out.strip() else []
    return {f"nvidia_smi.{name}": value for name, value in zip(fields, values)}


def detect_cuda_device(torch) -> dict:
    """Name, capability, SMs, memory, L2, clocks, driver, CUDA and torch versions of GPU 0."""
    if not torch.cuda.is_available():
        raise MissingToolError(
            f"no CUDA GPU here: torch {torch.__version__} reports torch.cuda.is_available() == False "
            "(the cuda backend and --gpu auto need an NVIDIA GPU)"
        )
    props = torch.cuda.get_device_properties(0)
    info = {
        "device": "cuda",
        "name": torch.cuda.get_device_name(0),
        "capability": f"{props.major}.{props.minor}",
        "sm": props.major * 10 + props.minor,
        "sm_count": props.multi_processor_count,
        "memory_bytes": props.total_memory,
        "l2_bytes": getattr(props, "L2_cache_size", None),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device_count": torch.cuda.device_count(),
    }
    try:
        info["clock_rate_mhz"] = torch.cuda.clock_rate(0)
    except Exception:  # noqa: BLE001 - needs pynvml; clocks then come from nvidia-smi only
        pass
    info.update(_nvidia_smi())
    return info


def registry_gpu_for(device_name: str, sm: int | None = None, sm_count: int | None = None) -> GpuSpec:
    """Map torch.cuda.get_device_name() to a registry GPU, refusing a different SKU."""
    candidates = [device_name]
    if device_name.lower().startswith("nvidia "):
        candidates.append(device_name[len("nvidia ") :])
    gpu = None
    for name in candidates:
        try:
            gpu = get_gpu(name)
            break
        except UnknownNameError:
            continue
    if gpu is None:
        raise UnknownNameError(
            f"GPU {device_name!r} (sm{sm}, {sm_count} SMs) is not in the GPU registry "
            f"({', '.join(g.name for g in list_gpus())}): add its name to `aliases` in profiles/gpus.yaml "
            "if it is one of them, or add an entry"
        )
    if sm is not None and sm != gpu.sm or sm_count is not None and sm_count != gpu.sm_count:
        raise UnknownNameError(
            f"GPU {device_name!r} is sm{sm} with {sm_count} SMs but registry entry {gpu.name} is sm{gpu.sm} "
            f"with {gpu.sm_count} SMs: a different SKU or a MIG slice; add it to profiles/gpus.yaml"
        )
    return gpu


def detect_registry_gpu() -> tuple[GpuSpec, dict]:
    """`--gpu auto`: the registry entry of the GPU in hand, and what was detected."""
    import torch

    info = detect_cuda_device(torch)
    return registry_gpu_for(info["name"], info["sm"], info["sm_count"]), info


def detect_trtllm() -> tuple[TrtllmInfo | None, str | None]:
    """TensorRT-LLM's custom ops if it imports (with its version), else None and why not."""
    if importlib.util.find_spec("tensorrt_llm") is None:
        return None, "tensorrt_llm is not installed here"
    try:
        import tensorrt_llm
        import torch

        # Importing the module registers the trtllm:: Python custom ops (finegrained_mixed_dtype_gemm ...).
        from tensorrt_llm._torch.custom_ops import torch_custom_ops
    except Exception as exc:  # noqa: BLE001 - any import failure means: no TensorRT-LLM kernels
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return None, f"tensorrt_llm does not import ({type(exc).__name__}: {first})"
    wanted = ("finegrained_mixed_dtype_gemm", "nvfp4_gemm", "fp4_quantize")
    ops = frozenset(name for name in wanted if hasattr(torch.ops.trtllm, name))
    mixed = getattr(torch_custom_ops, "FinegrainedMixedDtypeGemm", None)
    return TrtllmInfo(
        version=getattr(tensorrt_llm, "__version__", "unknown"),
        ops=ops,
        mixed_gemm_max_sm=getattr(mixed, "MAX_SUPPORTED_SM_VERSION", None),
        w4a8_max_sm=getattr(mixed, "MAX_SUPPORTED_SM_VERSION_W4A8", None),
    ), None


# ---- the backend --------------------------------------------------------------------------


class CudaBackend:
    """Measures on the first CUDA device. With `fake=True` and a given `capability` it builds and
    calls every kernel under torch's FakeTensorMode on a fake "cuda" device instead: shapes,
    dtypes and CUDA layout checks (e.g. _scaled_mm's column-major operand) run through torch's
    own meta kernels and nothing touches a GPU. That is how gating and argument wiring are
    tested on machines without one; the times it records are host times of the fake calls."""

    name = "cuda"
    measures = True
    launch_cost_ns = 0.0  # CUDA-event time of the kernel(s); nothing is added

    def __init__(
        self,
        settings: HarnessSettings,
        seed: int = 0,
        cuda_graphs: bool = False,
        fake: bool = False,
        capability: tuple[int, int] | None = None,
        trtllm: TrtllmInfo | None | Literal["detect"] = "detect",
        registry_gpu: GpuSpec | None = None,
    ):
        import torch

        self.torch = torch
        self.harness = settings
        self.seed = seed
        self.cuda_graphs = cuda_graphs
        self.device = "cuda"
        self.fake = fake
        self._fake_mode = None
        if not fake:
            self.info = detect_cuda_device(torch)
            cap = capability or tuple(int(p) for p in self.info["capability"].split("."))
        else:
            if capability is None:
                raise ValueError("a fake device needs an explicit capability")
            from torch._subclasses.fake_tensor import FakeTensorMode

            self._fake_mode = FakeTensorMode()
            cap = capability
            self.info = {
                "device": "fake-cuda",
                "name": f"fake sm{cap[0]}{cap[1]} (FakeTensorMode)",
                "capability": f"{cap[0]}.{cap[1]}",
                "sm": cap[0] * 10 + cap[1],
                "torch": torch.__version__,
            }
        self.sm = cap[0] * 10 + cap[1]
        if registry_gpu is None and not fake:
            registry_gpu = registry_gpu_for(self.info["name"], self.info["sm"], self.info["sm_count"])
        self.registry_gpu = registry_gpu
        if isinstance(trtllm, str):  # "detect"
            self.trtllm, self.trtllm_reason = detect_trtllm()
        else:
            self.trtllm, self.trtllm_reason = trtllm, None if trtllm else "tensorrt_llm is not importable here"
        self._flush = None
        self._events = None
        if not fake:
            l2 = self.info.get("l2_bytes") or (registry_gpu.l2_bytes if registry_gpu else 64 << 20)
            self._flush = torch.empty(2 * l2, dtype=torch.int8, device=self.device)
            self._events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))

    # -- what the profile records
    def device_info(self) -> dict:
        info = dict(self.info)
        if self.registry_gpu is not None:
            info["gpu"] = self.registry_gpu.name
        info["tensorrt_llm"] = self.trtllm.version if self.trtllm else None
        if self.trtllm_reason:
            info["tensorrt_llm_reason"] = self.trtllm_reason
        return info

    def settings(self) -> dict:
        return {
            "harness": self.harness.model_dump(),
            "seed": self.seed,
            "timer": "torch.cuda.Event elapsed_time around one call"
            + (" (CUDA-graph replay)" if self.cuda_graphs else ""),
            "cuda_graphs": self.cuda_graphs,
            "l2_flush_bytes": int(self._flush.numel()) if self._flush is not None else 0,
            "l2_flush": "buffer of 2x L2 zeroed before every repetition",
            "activation_quantization": "done before timing (not in the latency)",
        }

    # -- the harness's hooks
    def between_repeats(self) -> None:
        if self._flush is not None:
            self._flush.zero_()

    def time_ns(self, run: Callable[[], object]) -> float:
        if self._events is None:  # fake device: host time of the fake call
            import time

            start = time.perf_counter_ns()
            run()
            return float(time.perf_counter_ns() - start)
        start, end = self._events
        start.record()
        run()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) * 1e6

    # -- kernels
    def prepare(self, case: GemmCase) -> Prepared:
        choice = choose_kernel(case, self.sm, self.trtllm, self.trtllm_reason)
        if choice.kernel is None:
            return Prepared(None, choice.method, choice.reason, dict(choice.details))
        try:
            if self.fake:
                with self._fake_mode:
                    inner = self._build(choice, case)
                    inner()

                def run(inner=inner):
                    with self._fake_mode:
                        return inner()
            else:
                run = self._finish(self._build(choice, case), choice)
        except (RuntimeError, ValueError, TypeError, AssertionError) as exc:
            # A kernel that refuses this shape on this GPU: recorded with its own words, not guessed.
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            return Prepared(
                None, choice.method, f"{choice.kernel} failed here: {type(exc).__name__}: {first}", dict(choice.details)
            )
        details = dict(choice.details)
        if self.cuda_graphs and not self.fake:
            details["cuda_graph"] = True
        return Prepared(run, choice.method, None, details)

    def _finish(self, run, choice: KernelChoice):
        torch = self.torch
        if choice.kernel.startswith("trtllm."):
            # TensorRT-LLM picks its tactic by profiling inside `autotune()`; outside it uses the cache.
            from tensorrt_llm._torch.autotuner import autotune

            with autotune():
                run()
        run()
        torch.cuda.synchronize()
        if not self.cuda_graphs:
            return run
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                run()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            run()
        return graph.replay

    def _rand(self, shape, dtype=None, gen=None):
        torch = self.torch
        if self.fake:
            return torch.empty(shape, dtype=dtype or torch.float32, device=self.device)
        # Generated on the GPU: a 28672 x 4096 weight drawn on the host would cost seconds per row.
        return torch.randn(shape, generator=gen, device=self.device, dtype=dtype or torch.float32)

    def _randint(self, low, high, shape, dtype, gen=None):
        torch = self.torch
        if self.fake:
            return torch.empty(shape, dtype=dtype, device=self.device)
        return torch.randint(low, high, shape, generator=gen, dtype=dtype, device=self.device)

    def _build(self, choice: KernelChoice, case: GemmCase):
        torch = self.torch
        gen = None if self.fake else torch.Generator(device=self.device).manual_seed(self.seed)
        m, n, k = case.tokens, case.out_features, case.in_features
        bf16 = torch.bfloat16
        if choice.kernel == TORCH_MATMUL:
            x, wt = self._rand((m, k), bf16, gen), self._rand((n, k), bf16, gen).t()
            return lambda: torch.matmul(x, wt)
        if choice.kernel == TORCH_SCALED_MM:
            x8 = self._rand((m, k), gen=gen).to(torch.float8_e4m3fn)
            w8 = self._rand((n, k), gen=gen).to(torch.float8_e4m3fn)  # .t() below is column-major, as required
            scale_a = torch.ones((), dtype=torch.float32, device=self.device)
            scale_b = torch.ones((), dtype=torch.float32, device=self.device)
            return lambda: torch._scaled_mm(x8, w8.t(), scale_a=scale_a, scale_b=scale_b, out_dtype=bf16)
        if choice.kernel == TORCH_INT_MM:
            rows = choice.details.get("kernel_tokens", m)
            x8 = self._randint(-127, 128, (rows, k), torch.int8, gen)
            w8 = self._randint(-127, 128, (n, k), torch.int8, gen)
            scale = self._rand((n,), torch.float32, gen).abs()
            out = torch.empty((rows, n), dtype=bf16, device=self.device)
            return lambda: torch.mul(torch._int_mm(x8, w8.t()), scale, out=out)
        if choice.kernel == TORCH_INT4PACK:
            group = choice.details["group_size"]
            w_u8 = self._randint(0, 256, (n, k // 2), torch.uint8, gen)
            packed = torch.ops.aten._convert_weight_to_int4pack(w_u8, choice.details["inner_k_tiles"])
            scales_zeros = self._rand((k // group, n, 2), bf16, gen)
            x = self._rand((m, k), bf16, gen)
            return lambda: torch.ops.aten._weight_int4pack_mm(x, packed, group, scales_zeros)
        if choice.kernel == TRTLLM_MIXED:
            return self._build_trtllm_mixed(case, choice.details["group_size"], gen)
        if choice.kernel == TRTLLM_NVFP4:
            return self._build_trtllm_nvfp4(case, gen)
        raise ValueError(f"no builder for kernel {choice.kernel}")

    def _build_trtllm_mixed(self, case: GemmCase, group: int, gen):
        # As in TensorRT-LLM's tests/unittest/_torch/thop/parallel/test_finegrained_mixed_dtype_gemm.py:
        # int4 weights packed 8 per int32 as (K, N/8), preprocessed for the mixed GEMM on the host.
        torch = self.torch
        from tensorrt_llm.quantization.functional import preprocess_weights_for_mixed_gemm

        m, n, k = case.tokens, case.out_features, case.in_features
        w4a8 = get_format(case.format).act_dtype != "bf16"  # W4A8: FP8 activations; W4A16: BF16
        act_dtype = torch.float8_e4m3fn if w4a8 else torch.bfloat16
        host_gen = torch.Generator().manual_seed(self.seed)  # the weight preprocessing runs on the host
        raw = torch.randint(-(2**31), 2**31, (k, n // 8), dtype=torch.int32, generator=host_gen).view(torch.int8)
        weight = preprocess_weights_for_mixed_gemm(raw, torch.quint4x2, act_dtype).to(self.device).contiguous()
        scales = self._rand((k // group, n), torch.float16 if w4a8 else torch.bfloat16, gen).abs()
        x = self._rand((m, k), torch.bfloat16, gen).to(act_dtype).contiguous()
        op = torch.ops.trtllm.finegrained_mixed_dtype_gemm
        return lambda: op(
            input=x,
            weight=weight,
            scales=scales,
            group_size=group,
            has_zero_point=False,
            output_dtype=torch.bfloat16,
            alpha=1.0 if w4a8 else None,
        )

    def _build_trtllm_nvfp4(self, case: GemmCase, gen):
        # As in TensorRT-LLM's linear module: fp4_quantize(x, global_scale, 16, False) then nvfp4_gemm.
        torch = self.torch
        m, n, k = case.tokens, case.out_features, case.in_features
        x = self._rand((m, k), torch.bfloat16, gen)
        w = self._rand((n, k), torch.bfloat16, gen)
        gx = (448.0 * 6.0) / x.abs().max().float()
        gw = (448.0 * 6.0) / w.abs().max().float()
        xq, xsf = torch.ops.trtllm.fp4_quantize(x, gx, 16, False)
        wq, wsf = torch.ops.trtllm.fp4_quantize(w, gw, 16, False)
        alpha = (1.0 / (gx * gw)).reshape(1).float()
        op = torch.ops.trtllm.nvfp4_gemm
        types = [str(a.type) for a in op.default._schema.arguments]
        args = nvfp4_gemm_args(types, xq, wq, xsf, wsf, alpha, torch.bfloat16)
        return lambda: op(*args)

    def profile(self, cases, on_row=None):
        with self.torch.inference_mode():
            return measure_table(self, cases, self.harness, on_row)
