"""Perplexity on cases whose answer is known in closed form."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from trtq.errors import InputError
from trtq.eval.perplexity import evenly_spaced_windows, perplexity


class FixedLogits(torch.nn.Module):
    """A causal LM stand-in: uniform logits, or a confident guess of `next = (id + 1) % vocab`."""

    def __init__(self, vocab: int, confident: float | None = None) -> None:
        super().__init__()
        self.vocab = vocab
        self.confident = confident

    def forward(self, input_ids, use_cache=False):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        if self.confident is not None:
            logits.scatter_(-1, ((input_ids + 1) % self.vocab).unsqueeze(-1), self.confident)
        return SimpleNamespace(logits=logits)


def test_uniform_logits_give_perplexity_equal_to_vocabulary_size():
    windows = torch.randint(0, 1000, (5, 17), generator=torch.Generator().manual_seed(0))
    result = perplexity(FixedLogits(1000), windows, batch_size=2)
    assert result.ppl == pytest.approx(1000.0, rel=1e-9)
    assert result.tokens == 5 * 16 and result.windows == 5
    assert result.nll == pytest.approx(80 * math.log(1000.0), rel=1e-9)


def test_confident_model_on_its_own_sequence_and_on_a_wrong_one():
    vocab, boost = 50, 10.0
    counting = torch.arange(64).remainder(vocab).view(2, 32)
    # p(right) = e^b / (e^b + vocab - 1) at every position.
    right = math.exp(boost) / (math.exp(boost) + vocab - 1)
    assert perplexity(FixedLogits(vocab, boost), counting).ppl == pytest.approx(1 / right, rel=1e-6)
    constant = torch.full((2, 32), 7)
    wrong = 1 / (math.exp(boost) + vocab - 1)
    assert perplexity(FixedLogits(vocab, boost), constant).ppl == pytest.approx(1 / wrong, rel=1e-5)  # float32 logits


def test_evenly_spaced_windows():
    ids = list(range(100))
    all_windows = evenly_spaced_windows(ids, 10, None)
    assert all_windows.shape == (10, 10) and all_windows[3, 0] == 30
    picked = evenly_spaced_windows(ids, 10, 3)
    assert picked[:, 0].tolist() == [0, 40, 90]  # windows 0, 4.5 -> 4 (round half to even), 9
    assert evenly_spaced_windows(ids, 10, 50).shape == (10, 10)
    with pytest.raises(InputError, match="fewer than one window"):
        evenly_spaced_windows(ids, 101, None)
    with pytest.raises(InputError):
        perplexity(FixedLogits(10), torch.zeros(3, 1, dtype=torch.long))
