"""What a format is: one module per precision, and the one list that registers them.

Every stage asks the format object, never tests its name: the reference quantizer and kernel
operands for sensitivity (`quantize_weight`, `quantize_activations`), the profiling kernels
(`cpu_kernel`, `cuda_kernel`), ModelOpt's preset (`modelopt_config`, `modelopt_preset`), checkpoint
algorithm names both ways (`checkpoint_algos`; `format_for_checkpoint_algo`), rebuilding an exported
layer for eval (`dequantize_checkpoint`, `quantize_checkpoint_input`), the report colour, the
aiconfigurator GEMM dtype and the serving-step facts predict needs. `trtq.registry.FORMATS` /
`get_format` are this registry.

Adding a format (a newcomer's recipe):
  1. Write `trtq/formats/<name>.py`: subclass `trtq.formats.base.Format`, override the methods your
     stages need (an unoverridden one answers "not built" in the stage's own words) and create one
     instance `FORMAT = YourFormat(name=..., bits, block sizes, min_sm, ...)`. Import torch/ModelOpt
     inside methods only: `trtq --help` and `trtq plan` stay torch-free.
  2. Add the module to `FORMAT_MODULES` below (the order is the registry's, and the reports').
  3. Give it a row per runtime in profiles/runtimes.yaml (data: which architectures run it), and
     tests. Nothing else changes: see trtq/formats/fp8_block.py and tests/formats/.
A format that lives outside the package (a plugin, a test) is registered for a while with
`register_format(fmt)`, a context manager.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from trtq.errors import InputError
from trtq.formats import bf16, fp8, fp8_block, int4_awq, int8_sq, nvfp4, w4a8_awq
from trtq.formats.base import Format

# THE registry list: explicit, no discovery. bf16 first (the baseline every plan starts from).
FORMAT_MODULES = (bf16, fp8, int8_sq, int4_awq, w4a8_awq, nvfp4, fp8_block)

FORMATS: dict[str, Format] = {m.FORMAT.name: m.FORMAT for m in FORMAT_MODULES}


@contextmanager
def register_format(fmt: Format) -> Iterator[Format]:
    """Register `fmt` (a Format instance from outside FORMAT_MODULES) until the block ends."""
    if not isinstance(fmt, Format):
        raise InputError(f"register_format takes a trtq.formats.base.Format, got {type(fmt).__name__}")
    if fmt.name in FORMATS:
        raise InputError(f"a format named {fmt.name!r} is already registered")
    clash = set(fmt.checkpoint_algos) & set(checkpoint_algo_formats())
    if clash:
        raise InputError(f"format {fmt.name}: checkpoint algorithm {sorted(clash)[0]} belongs to another format")
    FORMATS[fmt.name] = fmt
    try:
        yield fmt
    finally:
        FORMATS.pop(fmt.name, None)


def checkpoint_algo_formats() -> dict[str, Format]:
    """TensorRT-LLM QuantAlgo name -> the format it is, over every registered format (the one map)."""
    return {algo: fmt for fmt in FORMATS.values() for algo in fmt.checkpoint_algos}


def format_for_checkpoint_algo(algo: object) -> Format | None:
    return checkpoint_algo_formats().get(algo) if isinstance(algo, str) else None


__all__ = [
    "FORMATS",
    "FORMAT_MODULES",
    "Format",
    "checkpoint_algo_formats",
    "format_for_checkpoint_algo",
    "register_format",
]
