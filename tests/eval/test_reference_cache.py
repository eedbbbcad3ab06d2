"""The gate's reference perplexity is measured once per model and windows (`trtq run` gates a whole front)."""

from __future__ import annotations

import torch

from trtq.eval import perplexity as ppl


class _Model:
    """Stands in for an unquantized model: perplexity is monkeypatched, only identity matters."""


def test_reference_perplexity_is_measured_once_per_model_and_windows(monkeypatch):
    calls = []

    def fake(model, windows, batch_size=4):
        calls.append((id(model), tuple(windows.shape)))
        return ppl.Perplexity(ppl=10.0 + len(calls), nll=0.0, tokens=int(windows.numel()), windows=windows.shape[0])

    monkeypatch.setattr(ppl, "perplexity", fake)
    a, b = _Model(), _Model()
    w = torch.arange(32).view(4, 8)
    first = ppl.reference_perplexity(a, w)
    assert ppl.reference_perplexity(a, w.clone()) is first and len(calls) == 1   # same tokens: cached
    assert ppl.reference_perplexity(a, w[:2]).ppl != first.ppl and len(calls) == 2  # other windows: measured
    assert ppl.reference_perplexity(b, w).ppl != first.ppl and len(calls) == 3      # other model: measured
