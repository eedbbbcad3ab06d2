"""The quantize stage's settings, declared once; `CalibrationSettings` is shared with `trtq eval --plan`."""

from __future__ import annotations

import argparse

from pydantic import field_validator

from trtq.model.device import DeviceSettings
from trtq.options import MAX_COUNT, MAX_SEED, MAX_TOKENS, parse_byte_size
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
    max_shard_size: int | None = setting(
        None,
        "largest safetensors file of hf/, as 5GB, 500MB or bytes (default: ModelOpt's 10GB; 2GB with --sequential, "
        "whose export holds one file's tensors in memory before writing it)",
        metavar="SIZE",
        parse=parse_byte_size,
        ge=1 << 20,
    )
    runtime: str | None = setting(
        None,
        "TensorRT-LLM runtime the checkpoint is for (default: the plan's; a plan made for another runtime is refused)",
        metavar="NAME@VERSION",
    )

    @field_validator("max_shard_size", mode="before")
    @classmethod
    def _size(cls, value: object) -> object:
        """A library caller may spell the size as the CLI does ("5GB")."""
        if isinstance(value, str):
            try:
                return parse_byte_size(value)
            except argparse.ArgumentTypeError as exc:
                raise ValueError(f"--max-shard-size: {exc}") from None
        return value
