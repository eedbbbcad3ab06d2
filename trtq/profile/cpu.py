"""The cpu backend: real GEMM kernels on this CPU, through the shared harness.

It exists so the measurement harness is real and tested where no GPU is. Each format names its
own CPU kernel (`Format.cpu_kernel`, trtq/formats/); formats without a CPU kernel in torch are
recorded as unsupported, never guessed.
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

        return {
            "device": "cpu",
            "processor": platform.processor() or platform.machine(),
            "threads": self.torch.get_num_threads(),
            "cores": os.cpu_count(),
            "torch": self.torch.__version__,
        }

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
        return fmt.cpu_kernel(torch, x, w, gen)

    def profile(self, cases, on_row=None):
        with self.torch.inference_mode():
            return measure_table(self, cases, self.harness, on_row)
