"""The quantize stage's settings, declared once; `CalibrationSettings` is shared with `trtq eval --plan`."""

from __future__ import annotations

from trtq.model.device import DeviceSettings
from trtq.options import MAX_COUNT, MAX_SEED, MAX_TOKENS
from trtq.settings import Request, setting


class CalibrationSettings(Request):
    """The text ModelOpt calibrates on: the same settings for `trtq quantize` and `trtq eval --plan`."""

    calib: str | None = setting(None, "UTF-8 calibration text (default: the shipped calibration text)", metavar="FILE")
    calib_samples: int = setting(16, "calibration windows", ge=1, le=MAX_COUNT)
    calib_seq_len: int = setting(512, "tokens per calibration window", ge=2, le=MAX_TOKENS)
    seed: int = setting(0, "seed for drawing calibration windows", ge=0, le=MAX_SEED)


class QuantizeRequest(CalibrationSettings, DeviceSettings):
    model: str = setting(..., "a model with weights: smollm2-135m or a local directory with safetensors")
    plan: str = setting(..., "plan.yaml from `trtq plan`")
    sequential: bool = setting(
        False,
        "calibrate one decoder block at a time (ModelOpt's layerwise calibration) and export block by block: "
        "the other blocks wait in host RAM (--device cuda) or on disk beside -o (cpu); writes hf/ only",
    )
    runtime: str | None = setting(
        None,
        "TensorRT-LLM runtime the checkpoint is for (default: the plan's; a plan made for another runtime is refused)",
        metavar="NAME@VERSION",
    )
