"""Command-line options, checked for finiteness and range when the command line is parsed.

Each option's `type=` is one of these, so `--launch-cost nan`, `--calib-samples 0` or
`--isl 1e12` is refused in one line (argparse's error, exit 2) before any work starts.
The bounds are sanity limits, far beyond any real use, that keep a typo from allocating
terabytes or running for days. Nothing here imports more than the standard library.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TypeVar, cast

T = TypeVar("T")

# Sanity limits shared by the commands.
MAX_TOKENS = 1 << 20  # a GEMM's M, a sequence length: 1M tokens
MAX_COUNT = 1_000_000  # samples, windows, requests, repeats
MAX_PARALLEL = 1024  # tensor / pipeline parallel size, concurrency sweeps use MAX_CONCURRENCY
MAX_CONCURRENCY = 1 << 16
MAX_SEED = 2**32 - 1  # numpy's seed range
MAX_SECONDS = 7 * 24 * 3600.0


def _parse_number(text: str, integer: bool) -> float | int:
    value = text.strip()
    if integer:
        try:
            return int(value, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return number


def number(
    *, integer: bool = False, minimum: float | None = None, maximum: float | None = None, above: float | None = None
) -> Callable[[str], float | int]:
    """argparse `type`: a finite float (or an integer) with `minimum <= x <= maximum`, `x > above`."""

    def parse(text: str) -> float | int:
        value = _parse_number(text, integer)
        if above is not None and not value > above:
            raise argparse.ArgumentTypeError(f"must be greater than {above:g}, got {text!r}")
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g}, got {text!r}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:g}, got {text!r}")
        return value

    parse.__name__ = "integer" if integer else "number"
    return parse


def count(minimum: int = 1, maximum: int = MAX_COUNT) -> Callable[[str], int]:
    return cast(Callable[[str], int], number(integer=True, minimum=minimum, maximum=maximum))


# The options most commands share.
seed = number(integer=True, minimum=0, maximum=MAX_SEED)
tokens = count(1, MAX_TOKENS)
seq_len = count(2, MAX_TOKENS)


def int_list(text: str, option: str, minimum: int = 1, maximum: int = MAX_TOKENS) -> list[int]:
    """'1,16,128' -> sorted unique integers within range; one-line InputError otherwise."""
    from trtq.errors import InputError

    try:
        values = [int(part.strip(), 10) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise InputError(f"{option} must be comma-separated positive integers, got {text!r}") from None
    if not values or any(v < minimum for v in values):
        raise InputError(f"{option} must be comma-separated positive integers, got {text!r}")
    too_big = [v for v in values if v > maximum]
    if too_big:
        raise InputError(f"{option}: {too_big[0]} is over the limit of {maximum}")
    return sorted(set(values))


def gpu_keyed(values: list[str] | None, option: str, expected: str, convert: Callable[[str], T]) -> dict[str, T]:
    """["H100=x", "b200=y"] (`--price`, `--profile`) -> {registry GPU name: convert(x)}; a bad entry, an unknown
    GPU or a GPU given twice is one InputError naming the option. `convert` raises ValueError with the reason."""
    from trtq.errors import InputError
    from trtq.registry import get_gpu

    out: dict[str, T] = {}
    for value in values or []:
        name, sep, raw = value.partition("=")
        if not sep or not name.strip() or not raw.strip():
            raise InputError(f"bad {option} {value!r}: expected {expected}")
        gpu = get_gpu(name.strip()).name
        if gpu in out:
            raise InputError(f"bad {option} {value!r}: {gpu} is given twice")
        try:
            out[gpu] = convert(raw.strip())
        except ValueError as exc:
            raise InputError(f"bad {option} {value!r}: {exc}") from None
    return out


_BYTE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def parse_byte_size(text: str) -> int:
    """A size as Hugging Face's max_shard_size spells it: 5GB, 500MB, 2GiB or a number of bytes."""
    import argparse
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", str(text), flags=re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (as 5GB, 500MB, 2GiB or bytes)")
    return int(float(match.group(1)) * _BYTE_UNITS[(match.group(2) or "").upper()])
