"""The profile stage's settings, declared once: `trtq profile`'s options and `profile_model`'s request."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import field_validator, model_validator

from trtq.options import MAX_COUNT, MAX_SEED, int_list
from trtq.settings import Request, setting


class ProfileRequest(Request):
    model: str = setting(..., "built-in alias, HF id or local path (config only is enough)")
    gpu: str | None = setting(
        None,
        "target GPU from `trtq gpus`, or `auto` for the GPU in hand (roofline: required unless --calibrate "
        "gives it; cuda: auto, the default, or the GPU in hand's name)",
    )
    backend: str = setting(
        "roofline",
        "profiler backend: roofline (datasheet model, runs anywhere) | cuda (real kernels on the GPU in "
        "hand) | cpu (real kernels on this CPU) | aiconfigurator (NVIDIA's measured kernel tables from "
        "aiconfigurator-core, for --gpu)",
    )
    framework: Literal["trtllm", "vllm", "sglang"] | None = setting(
        None, "aiconfigurator: whose kernels the tables measured (default trtllm)"
    )
    framework_version: str | None = setting(
        None,
        "aiconfigurator: the framework version's tables (default: the package's current one for the GPU)",
        metavar="V",
    )
    tokens: str = setting("1,16,128,2048", "GEMM M values (token counts), comma-separated")
    formats: str | None = setting(
        None,
        "comma-separated formats (default: all the GPU supports; cuda: all, those it cannot run recorded as "
        "unsupported with the reason)",
    )
    runtime: str | None = setting(
        None,
        "profile the formats this TensorRT-LLM runtime runs on the GPU (default: the default runtime, "
        "PyTorch backend; `all`: every format some runtime in `trtq formats --runtime` runs there, one table "
        "for plans under any runtime)",
        metavar="NAME@VERSION",
    )
    launch_cost: float | None = setting(
        None,
        "roofline: fixed cost per GEMM in ns (default: the GPU's; 0 = pure kernel time)",
        ge=0,
        le=1e9,
        metavar="NS",
    )
    repeats: int | None = setting(None, "measuring backends: minimum repetitions", ge=1, le=MAX_COUNT)
    warmup: int | None = setting(None, "measuring backends: warm-up runs", ge=0, le=MAX_COUNT)
    cuda_graphs: bool = setting(
        False, "cuda: time CUDA-graph replays (strips launch overhead; recorded in the settings)"
    )
    calibrate: str | None = setting(
        None,
        "roofline: use fractions and launch cost fitted to a measured table of the same GPU (a "
        "roofline_calibration file from --fit-out)",
        metavar="FIT",
    )
    calibrate_from: str | None = setting(
        None,
        "roofline: fit the fractions and launch cost to this measured table (trtq profile --backend cuda "
        "output on the same GPU), then use them",
        metavar="MEASURED",
    )
    fit_out: Path | None = setting(
        None, "with --calibrate-from: also write the fit (with its error before and after) here", metavar="FIT"
    )
    include_lm_head: bool = setting(False, "profile lm_head's GEMM too (kept bf16 by default)")
    tp: int = setting(
        1,
        "tensor parallelism: profile the GEMM shapes one of TP GPUs runs (TensorRT-LLM's column/"
        "row-parallel split), for `trtq plan --tp` and `trtq predict --tp`",
        ge=1,
        le=64,
        metavar="N",
    )
    seed: int = setting(0, "seed of the measuring backends' inputs", ge=0, le=MAX_SEED)

    @field_validator("tokens")
    @classmethod
    def _tokens(cls, tokens: str) -> str:
        int_list(tokens, "--tokens")
        return tokens

    @model_validator(mode="after")
    def _backend_options(self) -> ProfileRequest:
        """Options that belong to one backend are refused with another, before any work."""
        if not (self.calibrate or self.calibrate_from):
            if self.fit_out:
                raise ValueError("--fit-out needs --calibrate-from MEASURED")
        elif self.calibrate and self.calibrate_from:
            raise ValueError("give --calibrate FIT or --calibrate-from MEASURED, not both")
        elif self.backend != "roofline":
            raise ValueError(f"--calibrate / --calibrate-from apply to the roofline backend, not {self.backend}")
        elif self.calibrate and self.fit_out:
            raise ValueError("--fit-out goes with --calibrate-from (a --calibrate file is already a fit)")
        if self.cuda_graphs and self.backend != "cuda":
            raise ValueError("--cuda-graphs applies to the cuda backend")
        if (self.framework or self.framework_version) and self.backend != "aiconfigurator":
            raise ValueError("--framework / --framework-version apply to the aiconfigurator backend")
        return self

    @property
    def token_counts(self) -> list[int]:
        return int_list(self.tokens, "--tokens")

    @property
    def harness(self) -> dict[str, int]:
        """The measuring backends' harness settings that were given."""
        return {k: v for k, v in (("min_repeats", self.repeats), ("warmup", self.warmup)) if v is not None}
