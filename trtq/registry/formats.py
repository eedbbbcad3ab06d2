"""The format registry: the search space, one entry per precision.

Each format lives in its own module under trtq/formats/ (its bit widths, compute rate, block sizes,
bytes, ModelOpt config, first GPU architecture, and what every stage asks of it); the registry list
is trtq/formats/__init__.py. This module is the registry's public face: look-ups by name.
"""

from __future__ import annotations

from trtq.errors import UnknownNameError
from trtq.formats import FORMATS, register_format
from trtq.formats.base import Format

__all__ = ["FORMATS", "Format", "get_format", "parse_formats", "register_format"]


def get_format(name: str) -> Format:
    try:
        return FORMATS[name.strip().lower()]
    except KeyError:
        raise UnknownNameError(f"unknown format {name!r}; known formats: {', '.join(FORMATS)}") from None


def parse_formats(spec: str | None) -> list[Format]:
    """'fp8,int4_awq' -> formats (bf16 always first); None -> all formats."""
    if not spec:
        return list(FORMATS.values())
    chosen = [get_format(part) for part in spec.split(",") if part.strip()]
    if FORMATS["bf16"] not in chosen:
        chosen.insert(0, FORMATS["bf16"])
    return chosen
