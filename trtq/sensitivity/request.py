"""The sensitivity stage's settings, declared once: `trtq sensitivity`'s options and `compute_sensitivity`'s request."""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator, model_validator

from trtq.model.device import DeviceSettings
from trtq.options import MAX_COUNT, MAX_SEED, MAX_TOKENS, number
from trtq.settings import setting

# Hutchinson's stopping rule: a trace whose running mean moves by under 5% has converged.
DEFAULT_TOLERANCE = 0.05
# One probe per window of the default 8 calibration windows: on SmolLM2 it plans as well as 12 probes
# (benchmarks/RESULTS.md, plan_quality) in 1.4-1.8x AutoQuantize's scoring time, against 2.1-2.7x.
DEFAULT_MAX_ITERATIONS = 8


# Settings only some methods read: set to anything but the default for another method, they are refused,
# not silently ignored.
METHOD_SETTINGS: dict[str, tuple[str, ...]] = {
    "score": ("autoquantize",),
    "score_batch": ("autoquantize",),
    "tolerance": ("hessian",),
    "max_iterations": ("hessian",),
    "calib": ("hessian", "fisher", "autoquantize", "output"),
    "samples": ("hessian", "fisher", "autoquantize", "output"),
    "seq_len": ("hessian", "fisher", "autoquantize", "output"),
    # Weights alone and the layer-wise objective are block-local; Fisher backpropagates block by block
    # (activations checkpointed at the block boundaries), Hessian carries forward-mode tangents through both
    # sweeps; AutoQuantize is ModelOpt's own whole-model search.
    "sequential": ("output", "weight", "fisher", "hessian"),
}

# What the KV-cache measurement (--kv-formats, trtq/sensitivity/kv_cache.py) reads, with any method.
KV_CACHE_SETTINGS = ("calib", "samples", "seq_len")


class SensitivityRequest(DeviceSettings):
    model: str = setting(..., "a model with weights: smollm2-135m or a local directory with safetensors")
    # The default is the method benchmarks/plan_quality.py ranks first (RESULTS.md, ## plan_quality).
    method: Literal["weight", "hessian", "fisher", "autoquantize", "output"] = setting(
        "hessian",
        "weight: ||Q(W)-W||^2; hessian: Hutchinson traces of each layer's weight and input Hessians "
        "x their quantization errors (HAWQ-V3, with HAWQ-V2's activation term); "
        "fisher: Fisher-weighted output error of quantized weights and activations; "
        "autoquantize: ModelOpt AutoQuantize's own per-layer scores (lm_head disabled); "
        "output: 1/2 ||Q(X)Q(W)^T - XW^T||^2 on calibration tokens (GPTQ's layer-wise Hessian)",
    )
    sequential: bool = setting(
        False,
        "output, fisher, hessian: one decoder block in memory at a time, read from the safetensors (fisher, "
        "hessian: the whole-model scores, differentiated block by block); a killed run resumes from the last "
        "finished block or probe (partial results in .OUTPUT.partial/ beside -o); weight: one weight tensor "
        "at a time, read from the safetensors",
    )
    score: Literal["gradient", "kl_div"] = setting(
        "gradient", "autoquantize: ModelOpt's score, gradient (loss-weighted output error) or kl_div"
    )
    score_batch: int = setting(4, "autoquantize: calibration windows per AutoQuantize step", ge=1, le=MAX_COUNT)
    formats: str | None = setting(None, "comma-separated formats (default: all)")
    include_lm_head: bool = setting(False, "score lm_head too (kept bf16 by default)")
    calib: str | None = setting(
        None,
        "hessian/fisher/autoquantize/output: UTF-8 calibration text (default: the shipped calibration text)",
        metavar="FILE",
    )
    samples: int = setting(8, "hessian/fisher/autoquantize/output: calibration windows", ge=1, le=MAX_COUNT)
    seq_len: int = setting(512, "hessian/fisher/autoquantize/output: tokens per window", ge=2, le=MAX_TOKENS)
    tolerance: float = setting(
        DEFAULT_TOLERANCE,
        "hessian: stop a trace (a layer's weight or input) when its running mean changes by less than this fraction",
        parse=number(),
    )
    max_iterations: int = setting(DEFAULT_MAX_ITERATIONS, "hessian: most Hutchinson probes", ge=1, le=10_000)
    seed: int = setting(0, "seed of the calibration windows and probes", ge=0, le=MAX_SEED)
    kv_formats: str | None = setting(
        None,
        "also measure the KV-cache formats (fp8; nvfp4 on a CUDA GPU): Omega = mean per-token KL of the "
        "output with ModelOpt's KV preset, for `trtq plan --workload` to decide the KV format; any method "
        "(it reads --calib, --samples, --seq-len)",
        metavar="LIST",
    )

    @field_validator("tolerance")
    @classmethod
    def _tolerance(cls, tolerance: float) -> float:
        if not 0 < tolerance < 1:
            raise ValueError(f"tolerance must be between 0 and 1, got {tolerance}")
        return tolerance

    @field_validator("kv_formats")
    @classmethod
    def _kv_formats(cls, kv_formats: str | None) -> str | None:
        from trtq.sensitivity.kv_cache import parse_kv_formats

        parse_kv_formats(kv_formats)  # refused before the model loads
        return kv_formats

    @model_validator(mode="after")
    def _method_settings(self) -> SensitivityRequest:
        for name, methods in METHOD_SETTINGS.items():
            if self.kv_formats and name in KV_CACHE_SETTINGS:
                continue  # the KV-cache measurement reads them, whatever the method
            if self.method not in methods and getattr(self, name) != type(self).model_fields[name].default:
                flag = "--" + name.replace("_", "-")
                allowed = " or ".join(methods) if len(methods) < 3 else f"{', '.join(methods[:-1])} or {methods[-1]}"
                raise ValueError(f"{flag} applies to --method {allowed}, not {self.method}")
        return self
