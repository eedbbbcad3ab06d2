"""Shared terminal output: rich tables on stdout, progress on stderr, units for display only."""

from __future__ import annotations

import sys


def stdout_console():
    from rich.console import Console

    return Console(file=sys.stdout, highlight=False, soft_wrap=False, width=max(140, _width()))


def stderr_console():
    from rich.console import Console

    return Console(file=sys.stderr, highlight=False)


def _width() -> int:
    import shutil

    return shutil.get_terminal_size((120, 40)).columns


def fmt_ns(ns: float | None) -> str:
    """Nanoseconds for display: the only place latency units are converted."""
    if ns is None:
        return "-"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if abs(ns) >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"
