"""build_record.json: how a checkpoint was turned into something TensorRT-LLM serves.

Written by `trtq build` into its output directory (beside `engine/` and `build.log`), also for
`--dry-run` (status "dry-run") and for `--backend pytorch` (no engine: `trtllm-serve` loads the
quantized Hugging Face checkpoint). `trtq bench --engine DIR` reads it to start `trtllm-serve`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from trtq.artifacts.io import Artifact, StrictModel


class LayerFormat(StrictModel):
    layer: str                 # name as the checkpoint spells it
    quant_algo: str | None     # TensorRT-LLM QuantAlgo name; None = not quantized
    format: str                # trtq format name
    group_size: int | None = None


class CheckpointSummary(StrictModel):
    path: str
    hf_dir: str | None
    trtllm_dir: str | None
    architecture: str | None
    dtype: str | None
    quant_algo: str | None             # checkpoint-level: FP8, W4A16_AWQ, MIXED_PRECISION, ...
    kv_cache_quant_algo: str | None
    formats: list[str]                 # trtq formats present, sorted
    layers: list[LayerFormat] = []     # per-layer, when the checkpoint is mixed precision
    tp_size: int
    pp_size: int
    plan: str | None = None
    plan_sha256: str | None = None


class BuildRecord(Artifact):
    KIND: ClassVar[str] = "build_record"
    SCHEMA_VERSION: ClassVar[int] = 1

    backend: Literal["tensorrt", "pytorch"]
    status: Literal["built", "prepared", "dry-run"]
    gpu: str
    gpu_sm: int
    tp_size: int
    pp_size: int
    checkpoint: CheckpointSummary
    command: list[str] | None = None            # trtllm-build argument list (tensorrt backend)
    flags_why: dict[str, str] = {}              # flag -> the checkpoint property that chose it
    engine_dir: str | None = None
    model_dir: str                              # what trtllm-serve is given as MODEL
    tokenizer_dir: str | None = None
    serve_command: list[str]                    # trtllm-serve arguments, without --host/--port
    extra_llm_api_options: dict | None = None   # written beside as extra_llm_api_options.yaml
    log: str | None = None
    wall_s: float | None = None
