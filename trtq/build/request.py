"""The build stage's settings, declared once: `trtq build`'s options and `build_checkpoint`'s request."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from trtq.options import MAX_CONCURRENCY, MAX_PARALLEL, MAX_TOKENS
from trtq.settings import Request, setting


class BuildRequest(Request):
    checkpoint: Path = setting(
        ...,
        "trtq quantize output (engines/NAME/ with hf/ and trtllm/), or a checkpoint directory",
        metavar="CHECKPOINT_DIR",
    )
    gpu: str = setting(..., "target GPU (see `trtq gpus`)")
    runtime: str | None = setting(
        None,
        "TensorRT-LLM runtime (see `trtq formats --gpu G --runtime all`; default: the plan's, else the "
        "release docker/ pins)",
        metavar="NAME@VERSION",
    )
    backend: Literal["pytorch", "engine"] | None = setting(
        None,
        "pytorch (default): no engine, trtllm-serve loads hf/; engine: trtllm-build a TensorRT engine "
        "(legacy, only runtimes that still ship trtllm-build; the default for trtllm-engine@*)",
    )
    tp: int | None = setting(
        None, "tensor parallel size (engine: must match the exported checkpoint)", ge=1, le=MAX_PARALLEL
    )
    pp: int | None = setting(
        None, "pipeline parallel size (engine: must match the exported checkpoint)", ge=1, le=MAX_PARALLEL
    )
    max_batch_size: int | None = setting(None, "runtime max batch size", ge=1, le=MAX_CONCURRENCY)
    max_input_len: int | None = setting(None, "engine backend only", ge=1, le=MAX_TOKENS)
    max_seq_len: int | None = setting(None, "runtime max sequence length", ge=1, le=MAX_TOKENS)
    max_num_tokens: int | None = setting(None, "runtime max tokens per step", ge=1, le=MAX_TOKENS)
    free_gpu_memory_fraction: float | None = setting(
        None, "KV cache share of free GPU memory (default 0.9)", ge=0.01, le=1.0
    )
