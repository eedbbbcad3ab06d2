"""Explicit registries: formats (code) and GPUs (profiles/gpus.yaml). No discovery."""

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
