"""The shipped calibration and evaluation texts, and turning text into token batches.

Calibration and evaluation come from two different public-domain books (SOURCES.md
beside this file), so a quantized model is never scored on the text it was
calibrated on.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtq.errors import InputError

if TYPE_CHECKING:
    import torch

DATA_DIR = Path(__file__).resolve().parent
CALIBRATION_PATH = DATA_DIR / "calibration.txt"
EVALUATION_PATH = DATA_DIR / "evaluation.txt"

# Tokenising a few hundred KB costs about a second; sensitivity, calibration and
# evaluation each ask for the same text again, so keep the ids of recent texts.
_TOKEN_CACHE: dict[tuple[int, str], list[int]] = {}
_TOKEN_CACHE_LIMIT = 4


def read_text_file(path: str | Path) -> str:
    """The UTF-8 text of `path`; a one-line InputError if it is missing, unreadable or empty."""
    file_path = Path(path)
    try:
        raw = file_path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"text file not found: {file_path}") from None
    except IsADirectoryError:
        raise InputError(f"text file is a directory: {file_path}") from None
    except OSError as exc:
        raise InputError(f"cannot read text file {file_path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"text file {file_path} is not UTF-8 (bad byte at offset {exc.start})") from None
    if not text.strip():
        raise InputError(f"text file {file_path} is empty")
    return text


def calibration_text() -> str:
    """The shipped calibration text (The Jargon File 4.4.7, public domain)."""
    return read_text_file(CALIBRATION_PATH)


def evaluation_text() -> str:
    """The shipped evaluation text (Bierce, The Devil's Dictionary, public domain)."""
    return read_text_file(EVALUATION_PATH)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of `text` without special tokens (cached for the last few texts)."""
    key = (id(tokenizer), text_sha256(text))
    ids = _TOKEN_CACHE.get(key)
    if ids is None:
        # verbose=False: the whole book is longer than the model's context on purpose.
        ids = list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
        if len(_TOKEN_CACHE) >= _TOKEN_CACHE_LIMIT:
            _TOKEN_CACHE.pop(next(iter(_TOKEN_CACHE)))
        _TOKEN_CACHE[key] = ids
    return ids


def _check_sizes(samples: int, seq_len: int) -> None:
    if samples < 1:
        raise InputError(f"samples must be at least 1, got {samples}")
    if seq_len < 2:
        raise InputError(f"sequence length must be at least 2 tokens, got {seq_len}")


def token_batches(tokenizer: Any, text: str, samples: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    """`samples` windows of `seq_len` consecutive tokens of `text`, as a [samples, seq_len] int64 tensor.

    The text is cut into non-overlapping windows and `samples` of them are drawn
    without replacement by a generator seeded with `seed`: the same arguments give
    the same tensor on every machine. InputError if the text has too few windows.
    """
    import torch

    _check_sizes(samples, seq_len)
    ids = encode_text(tokenizer, text)
    available = len(ids) // seq_len
    if available < samples:
        raise InputError(
            f"text has {len(ids)} tokens: {available} windows of {seq_len}, fewer than the {samples} asked for"
        )
    windows = torch.tensor(ids[: available * seq_len], dtype=torch.long).view(available, seq_len)
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(available, generator=generator)[:samples]
    return windows[chosen].contiguous()


def token_windows(tokenizer: Any, text: str, seq_len: int, max_windows: int | None = None) -> torch.Tensor:
    """Every non-overlapping `seq_len` window of `text` in order (the first `max_windows`), [n, seq_len]."""
    import torch

    _check_sizes(1, seq_len)
    ids = encode_text(tokenizer, text)
    available = len(ids) // seq_len
    if available < 1:
        raise InputError(f"text has {len(ids)} tokens, fewer than one window of {seq_len}")
    count = available if max_windows is None else min(available, max_windows)
    return torch.tensor(ids[: count * seq_len], dtype=torch.long).view(count, seq_len)
