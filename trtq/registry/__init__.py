"""Explicit registries, no discovery: formats, GPUs and runtimes.

A new GPU is an entry in profiles/gpus.yaml (datasheet numbers with their sources; `gpus.py` reads
it). A new runtime (a TensorRT-LLM release and the formats it runs per GPU architecture) is an
entry in profiles/runtimes.yaml (`runtimes.py` is the one gate every format decision goes
through). What a format is lives with the format (see trtq.formats / `formats.py`).
"""

from trtq.registry.formats import FORMATS, Format, get_format, parse_formats
from trtq.registry.gpus import GpuSpec, get_gpu, list_gpus, profiles_dir

__all__ = [
    "FORMATS",
    "Format",
    "GpuSpec",
    "get_format",
    "get_gpu",
    "list_gpus",
    "parse_formats",
    "profiles_dir",
]
