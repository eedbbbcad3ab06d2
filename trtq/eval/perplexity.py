"""Perplexity of a causal LM over fixed token windows."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from trtq.errors import InputError


@dataclass(frozen=True)
class Perplexity:
    ppl: float
    nll: float  # summed negative log-likelihood, nats
    tokens: int  # predicted tokens (each window predicts seq_len - 1)
    windows: int


def evenly_spaced_windows(ids: list[int], seq_len: int, max_windows: int | None) -> torch.Tensor:
    """Non-overlapping `seq_len` windows of `ids`; with `max_windows`, that many spread evenly over the text."""
    available = len(ids) // seq_len
    if available < 1:
        raise InputError(f"the text has {len(ids)} tokens, fewer than one window of {seq_len}")
    windows = torch.tensor(ids[: available * seq_len], dtype=torch.long).view(available, seq_len)
    if max_windows is not None and max_windows < available:
        picks = torch.linspace(0, available - 1, max_windows).round().long()
        windows = windows[picks]
    return windows


def reference_perplexity(model: Any, windows: torch.Tensor) -> Perplexity:
    """`perplexity(model, windows)` of an unquantized model, computed once per model object and windows:
    a run's gate measures many plans against the same reference (`trtq run` evaluates a front). The
    answer is kept on the model; a model changed in place afterwards must not be passed again."""
    import hashlib

    key = hashlib.sha256(windows.cpu().numpy().tobytes() + str(tuple(windows.shape)).encode()).hexdigest()
    cache = model.__dict__.setdefault("_trtq_reference_perplexity", {})
    if key not in cache:
        cache[key] = perplexity(model, windows)
    return cache[key]


def perplexity(model: Any, windows: torch.Tensor, batch_size: int = 4) -> Perplexity:
    """exp(mean next-token NLL) over `windows` ([n, seq_len] ids), each window scored on its own."""
    if windows.dim() != 2 or windows.shape[0] < 1 or windows.shape[1] < 2:
        raise InputError("perplexity needs a non-empty [windows, seq_len >= 2] tensor of token ids")
    total = 0.0
    count = 0
    with torch.no_grad():
        for start in range(0, windows.shape[0], batch_size):
            ids = windows[start : start + batch_size].to(_device_of(model))
            logits = model(input_ids=ids, use_cache=False).logits[:, :-1, :].float()
            targets = ids[:, 1:]
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
            )
            total += float(nll.double())
            count += targets.numel()
    return Perplexity(ppl=math.exp(total / count), nll=total, tokens=count, windows=int(windows.shape[0]))


def _device_of(model):
    """Where the model's weights are (CPU for a module without parameters, as the tests' stand-ins)."""
    import torch

    return next((p.device for p in model.parameters()), torch.device("cpu"))
