"""Rebuild the shipped calibration and evaluation texts from their Debian packages.

Not imported by trtq; kept so the shipped files can be reproduced and audited:

    apt-get download dict-jargon dict-devil      # Debian bookworm, section "text"
    python -m trtq.data.make_texts dict-jargon_*.deb dict-devil_*.deb

Both sources are public domain (see SOURCES.md). The dictd packaging adds a
header and an index-alphabet trailer, which are dropped; the four-space
indentation that dictd puts before every body line is removed so that the
model sees ordinary prose rather than runs of spaces.
"""

from __future__ import annotations

import gzip
import io
import re
import subprocess
import sys
import tempfile
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
CALIBRATION_BYTES = 420_000  # a few hundred KB: enough for 32 x 512-token batches and then some


def _dict_text(deb: Path, member: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True)
        raw = (Path(tmp) / member).read_bytes()
    return gzip.GzipFile(fileobj=io.BytesIO(raw)).read().decode("utf-8")


def _clean(lines: list[str]) -> str:
    body = [line[4:] if line.startswith("    ") else line for line in lines]
    while body and not body[-1].strip():
        body.pop()
    # The dictd trailer is a single line listing the alphabet of headwords.
    if body and body[-1].startswith(" ") and " " not in body[-1].strip():
        body.pop()
    text = "\n".join(line.rstrip() for line in body).strip() + "\n"
    return text


def jargon_calibration(deb: Path) -> str:
    lines = _dict_text(deb, "usr/share/dictd/jargon.dict.dz").splitlines()
    start = lines.index("(TM)")  # first entry, after the dictd header and licence note
    text = _clean(lines[start:])
    # An entry is a headword line, a " /pronunciation/, part-of-speech" line, then its body:
    # cut just before the last entry that starts within the size budget.
    entry_starts = [m.start() for m in re.finditer(r"\n\n(?=[^\n ][^\n]*\n [^\n]*\n)", text)]
    cut = max(start for start in entry_starts if start < CALIBRATION_BYTES)
    return text[:cut].rstrip() + "\n"


def devil_evaluation(deb: Path) -> str:
    lines = _dict_text(deb, "usr/share/dictd/devil.dict.dz").splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "PREFACE")
    return _clean(lines[start:])


_ENTRY = re.compile(r"^([A-Z][A-Z' -]+), ([a-z][a-z.]*)\s+(\S.*)$")
MC_ITEMS = 100
MC_CHOICES = 4


def devil_multiple_choice(evaluation: str, items: int = MC_ITEMS, seed: int = 0) -> list[dict]:
    """A tiny multiple-choice task on the evaluation text: which word did Bierce define so?

    For lm-evaluation-harness on machines that cannot download its hub datasets:
    each item quotes the first sentence of an entry (headword masked) and offers
    the headword among three others; the scored continuation is " WORD".
    """
    import random

    lines = evaluation.splitlines()
    entries = []
    for i, line in enumerate(lines):
        match = _ENTRY.match(line)
        if not match:
            continue
        word, body = match.group(1).strip(), [match.group(3)]
        for follow in lines[i + 1 :]:
            if not follow.strip() or _ENTRY.match(follow):
                break
            body.append(follow.strip())
        text = " ".join(body)
        sentence = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
        if 40 <= len(sentence) <= 220 and word.lower() not in sentence.lower():
            entries.append((word.capitalize(), sentence))
    rng = random.Random(seed)
    chosen = rng.sample(entries, items)
    words = sorted({word for word, _ in entries})
    records = []
    for word, sentence in chosen:
        choices = rng.sample([w for w in words if w != word], MC_CHOICES - 1) + [word]
        rng.shuffle(choices)
        records.append({"definition": sentence, "choices": choices, "answer": choices.index(word)})
    return records


def main(argv: list[str]) -> int:
    import json

    jargon_deb, devil_deb = (Path(arg) for arg in argv)
    (DATA_DIR / "calibration.txt").write_text(jargon_calibration(jargon_deb), encoding="utf-8")
    evaluation = devil_evaluation(devil_deb)
    (DATA_DIR / "evaluation.txt").write_text(evaluation, encoding="utf-8")
    records = devil_multiple_choice(evaluation)
    (DATA_DIR / "devil_definitions.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
