"""build_record.json: how a checkpoint was prepared for TensorRT-LLM (PyTorch backend), or built into an engine.

Written by `trtq build` into its output directory, beside `extra_llm_api_options.yaml` (PyTorch
backend, the default: `trtllm-serve` loads the quantized Hugging Face checkpoint) or `engine/` and
`build.log` (legacy `--backend engine`). `trtq bench --engine DIR` reads it and starts
`trtllm-serve` with a command it rebuilds from the validated fields (paths that must exist,
bounded integers, the LLM API options model); the command lists stored here are for people to
read and copy, never executed.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from trtq.artifacts.io import Artifact, StrictModel

DEFAULT_FREE_GPU_MEMORY_FRACTION = 0.9


class KvCacheConfig(StrictModel):
    dtype: Literal["auto", "fp8", "nvfp4"] = "auto"
    free_gpu_memory_fraction: float = Field(DEFAULT_FREE_GPU_MEMORY_FRACTION, gt=0, le=1)


class CudaGraphConfig(StrictModel):
    batch_sizes: list[Annotated[int, Field(ge=1, le=65536)]] = Field(min_length=1, max_length=64)
    enable_padding: bool = True


class LlmApiOptions(StrictModel):
    """The extra_llm_api_options YAML trtq writes: only these keys, each range-checked."""

    kv_cache_config: KvCacheConfig
    cuda_graph_config: CudaGraphConfig
    max_batch_size: int = Field(ge=1, le=65536)
    max_num_tokens: int = Field(ge=1, le=1 << 24)
    max_seq_len: int | None = Field(None, ge=1, le=1 << 24)

    def yaml_text(self) -> str:
        import yaml

        return yaml.safe_dump(self.model_dump(exclude_none=True), sort_keys=False)


class LayerFormat(StrictModel):
    layer: str  # name as the checkpoint spells it
    quant_algo: str | None  # TensorRT-LLM QuantAlgo name; None = not quantized
    format: str  # trtq format name
    group_size: int | None = None


class CheckpointSummary(StrictModel):
    path: str
    hf_dir: str | None
    trtllm_dir: str | None
    architecture: str | None
    dtype: str | None
    quant_algo: str | None  # checkpoint-level: FP8, W4A16_AWQ, MIXED_PRECISION, ...
    kv_cache_quant_algo: str | None
    formats: list[str]  # trtq formats present, sorted
    layers: list[LayerFormat] = []  # per-layer, when the checkpoint is mixed precision
    tp_size: int
    pp_size: int
    plan: str | None = None
    plan_sha256: str | None = None


class BuildRecord(Artifact):
    KIND: ClassVar[str] = "build_record"
    SCHEMA_VERSION: ClassVar[int] = 2

    backend: Literal["pytorch", "engine"]
    runtime: str  # profiles/runtimes.yaml name, e.g. trtllm@1.2
    status: Literal["built", "prepared"]
    gpu: str
    gpu_sm: int
    tp_size: int = Field(ge=1, le=1024)
    pp_size: int = Field(ge=1, le=1024)
    checkpoint: CheckpointSummary
    model_dir: str  # what trtllm-serve is given as MODEL (checked to exist on use)
    model_name: str | None = None  # trtllm-bench --model (its tokenizer source)
    tokenizer_dir: str | None = None
    engine_dir: str | None = None
    llm_api_options: LlmApiOptions | None = None  # also written beside as extra_llm_api_options.yaml
    checked: list[str] = []  # what the checkpoint was validated against
    flags_why: dict[str, str] = {}  # flag / option -> the checkpoint property that chose it
    # For people to read and copy. Never executed: bench rebuilds its command from the fields above.
    command: list[str] | None = None  # trtllm-build argument list (engine backend)
    serve_command: list[str]  # trtllm-serve arguments, without --host/--port
    bench_commands: dict[str, list[str]] = {}  # trtllm-bench prepare-dataset / throughput / latency
    log: str | None = None
    wall_s: float | None = None
