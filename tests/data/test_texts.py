"""The shipped texts: real, recorded, separate; the loader's errors and determinism."""

from __future__ import annotations

import hashlib
import re

import pytest
import torch

from trtq.data import (
    CALIBRATION_PATH,
    EVALUATION_PATH,
    calibration_text,
    evaluation_text,
    read_text_file,
    token_batches,
    token_windows,
)
from trtq.data.texts import DATA_DIR
from trtq.errors import InputError


class CharTokenizer:
    """One token per character: enough to test windowing without loading a model."""

    def __call__(self, text, add_special_tokens=False, verbose=False):
        return {"input_ids": [ord(c) for c in text]}


def _sources_table() -> dict[str, tuple[int, str]]:
    rows = {}
    for line in (DATA_DIR / "SOURCES.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 6 and cells[0].endswith((".txt", ".jsonl")):
            rows[cells[0]] = (int(cells[4]), cells[5])
    return rows


def test_shipped_texts_match_their_recorded_size_and_sha256():
    table = _sources_table()
    assert set(table) == {"calibration.txt", "evaluation.txt"}
    for path in (CALIBRATION_PATH, EVALUATION_PATH):
        data = path.read_bytes()
        assert len(data) < 1_000_000
        assert (len(data), hashlib.sha256(data).hexdigest()) == table[path.name], path.name


def test_texts_are_real_prose_of_a_few_hundred_kb():
    for text in (calibration_text(), evaluation_text()):
        words = re.findall(r"[A-Za-z]+", text)
        assert len(text) > 300_000 and len(words) > 50_000
        common = sum(w.lower() in {"the", "of", "and", "to", "a", "in", "is"} for w in words)
        assert common / len(words) > 0.1  # English function words: prose, not a word list


def test_calibration_and_evaluation_texts_do_not_overlap():
    def shingles(text: str, n: int = 8) -> set[tuple[str, ...]]:
        words = re.findall(r"[a-z']+", text.lower())
        return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}

    shared = shingles(calibration_text()) & shingles(evaluation_text())
    assert not shared, f"{len(shared)} shared 8-word spans, e.g. {' '.join(next(iter(shared)))}"
    assert calibration_text()[:2000] not in evaluation_text()


def test_read_text_file_errors_are_one_line(tmp_path):
    binary = tmp_path / "latin1.txt"
    binary.write_bytes("caf\xe9".encode("latin-1"))
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    cases = {tmp_path / "missing.txt": "not found", tmp_path: "directory", binary: "not UTF-8", empty: "empty"}
    for path, needle in cases.items():
        with pytest.raises(InputError) as info:
            read_text_file(path)
        assert needle in str(info.value) and "\n" not in str(info.value)


def test_token_batches_are_deterministic_windows_of_the_text():
    text = "".join(chr(65 + i % 26) for i in range(1000))
    tokenizer = CharTokenizer()
    first = token_batches(tokenizer, text, samples=5, seq_len=40, seed=3)
    assert first.shape == (5, 40) and first.dtype == torch.long
    assert torch.equal(first, token_batches(tokenizer, text, samples=5, seq_len=40, seed=3))
    assert not torch.equal(first, token_batches(tokenizer, text, samples=5, seq_len=40, seed=4))
    ids = torch.tensor([ord(c) for c in text])
    starts = set()
    for row in first:
        start = next(s for s in range(0, 1000, 40) if torch.equal(ids[s:s + 40], row))
        starts.add(start)
    assert len(starts) == 5  # distinct, non-overlapping, aligned windows
    with pytest.raises(InputError, match="fewer than the 26 asked for"):
        token_batches(tokenizer, text, samples=26, seq_len=40)
    with pytest.raises(InputError):
        token_batches(tokenizer, text, samples=0, seq_len=40)
    windows = token_windows(tokenizer, text, seq_len=300)
    assert windows.shape == (3, 300) and torch.equal(windows.flatten(), ids[:900])


def test_token_batches_on_the_real_tokenizer(smollm2_model):
    _, tokenizer = smollm2_model
    batches = token_batches(tokenizer, calibration_text(), samples=8, seq_len=512, seed=0)
    assert batches.shape == (8, 512)
    assert tokenizer.bos_token_id not in batches[:, 0].tolist()
    decoded_words = tokenizer.decode(batches[0]).split()
    assert len(decoded_words) > 200
    # A window is a contiguous stretch of the text (first and last words may be cut).
    assert " ".join(decoded_words[1:-1]) in " ".join(calibration_text().split())
