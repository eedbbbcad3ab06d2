"""quantize_summary.json: what each layer got from ModelOpt, and what it was calibrated on."""

from __future__ import annotations

from typing import Any, ClassVar

from trtq.artifacts.io import Artifact, StrictModel


class QuantizerState(StrictModel):
    """One TensorQuantizer as calibrated (W4A8's weight quantizer has two: INT4 blocks, then FP8)."""

    enabled: bool
    num_bits: int | list[int] | None
    axis: int | list[int] | None
    block_sizes: dict[str, Any] | None
    amax: dict[str, Any] | None  # shape, min, max, mean of the calibrated amax
    pre_quant_scale: dict[str, Any] | None  # AWQ / SmoothQuant per-input-channel scale, same stats


class LayerQuantization(StrictModel):
    layer: str
    format: str
    group_size: int | None
    weight_quantizer: list[QuantizerState]
    input_quantizer: list[QuantizerState]
    # A fused MoE expert layer: its experts' weight quantizers, expert by expert, in weight_quantizer;
    # one input quantizer shared by all (ModelOpt's _QuantFusedExperts). None for a Linear layer.
    experts: int | None = None


class QuantizeSummary(Artifact):
    KIND: ClassVar[str] = "quantize_summary"
    SCHEMA_VERSION: ClassVar[int] = 1

    model: str
    plan_sha256: str | None
    calibration_sha256: str | None
    calibration_samples: int | None
    calibration_seq_len: int | None
    calibration_stages: list[dict[str, Any]]  # algorithm and how many layers it calibrated, in order
    kv_cache: str
    hf_checkpoint: str  # directory beside this file
    trtllm_checkpoint: str | None  # None: see metadata.notes for why
    layers: list[LayerQuantization]
