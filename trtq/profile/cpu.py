"""The cpu backend: real GEMM kernels on this CPU, through the shared harness.

It exists so the measurement harness is real and tested where no GPU is. Formats
without a CPU kernel in torch are recorded as unsupported, never guessed.
"""

from __future__ import annotations

import platform
import time

from trtq.profile.harness import GemmCase, HarnessSettings, Prepared, measure_table
from trtq.registry.formats import get_format


class CpuBackend:
    name = "cpu"
    measures = True
    launch_cost_ns = 0.0

    def __init__(self, settings: HarnessSettings, seed: int = 0):
        import torch

        self.torch = torch
        self.harness = settings
        self.seed = seed

    def device_info(self) -> dict:
        import os

        return {"device": "cpu", "processor": platform.processor() or platform.machine(),
                "threads": self.torch.get_num_threads(), "cores": os.cpu_count(),
                "torch": self.torch.__version__}

    def settings(self) -> dict:
        return {"harness": self.harness.model_dump(), "seed": self.seed}

    def time_ns(self, run) -> float:
        start = time.perf_counter_ns()
        run()
        return float(time.perf_counter_ns() - start)

    def between_repeats(self) -> None:
        return None

    def prepare(self, case: GemmCase) -> Prepared:
        torch = self.torch
        fmt = get_format(case.format)
        m, n, k = case.tokens, case.out_features, case.in_features
        if not fmt.available_for(k):
            return Prepared(None, "none", fmt.unavailable_reason(k))
        gen = torch.Generator().manual_seed(self.seed)
        x = torch.randn(m, k, generator=gen)
        w = torch.randn(n, k, generator=gen)
        if fmt.name == "bf16":
            xb, wt = x.to(torch.bfloat16), w.to(torch.bfloat16).t().contiguous()
            return Prepared(lambda: torch.matmul(xb, wt), "torch.matmul bf16")
        if fmt.name == "fp8":
            x8, w8 = x.to(torch.float8_e4m3fn), w.to(torch.float8_e4m3fn)
            one = torch.tensor(1.0)
            return Prepared(
                lambda: torch._scaled_mm(x8, w8.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16),
                "torch._scaled_mm fp8 e4m3 per-tensor",
            )
        if fmt.name == "int8_sq":
            x8 = x.clamp(-127, 127).to(torch.int8)
            w8t = w.clamp(-127, 127).to(torch.int8).t()
            scale = torch.rand(n, generator=gen)
            return Prepared(lambda: torch._int_mm(x8, w8t).to(torch.float32).mul_(scale).to(torch.bfloat16),
                            "torch._int_mm int8 + per-channel dequant")
        if fmt.name == "int4_awq":
            group = fmt.group_size_for(k)
            if k % 64 or n % 8:
                return Prepared(None, "none", f"torch's CPU int4 kernel needs in % 64 == 0 and out % 8 == 0, got {n}x{k}")
            w4 = torch.randint(0, 16, (n, k), dtype=torch.int32, generator=gen)
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(w4, 2)
            scales_zeros = torch.rand(k // group, n, 2, generator=gen).to(torch.bfloat16)
            xb = x.to(torch.bfloat16)
            return Prepared(
                lambda: torch.ops.aten._weight_int4pack_mm_for_cpu(xb, packed, group, scales_zeros),
                f"aten._weight_int4pack_mm_for_cpu group {group}", details={"group_size": group},
            )
        return Prepared(None, "none", f"torch has no CPU kernel for {fmt.name}")

    def profile(self, cases, on_row=None):
        with self.torch.inference_mode():
            return measure_table(self, cases, self.harness, on_row)
