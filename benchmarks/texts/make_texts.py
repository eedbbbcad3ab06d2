"""Rebuild the benchmark's held-out evaluation texts from their Debian packages (see SOURCES.md here).

Not imported by trtq or the benchmark; kept so the shipped files can be reproduced and audited:

    apt-get download bible-kjv bible-kjv-text sqlite3-doc      # Debian bookworm
    python benchmarks/texts/make_texts.py bible-kjv_*.deb bible-kjv-text_*.deb sqlite3-doc_*.deb

Both texts are public domain and come from domains the shipped calibration text (the Jargon File)
and evaluation text (the Devil's Dictionary) do not: scripture in Early Modern English, and
database engineering prose. They are used for evaluation only, never for calibration or for
choosing anything in trtq.
"""

from __future__ import annotations

import html.parser
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAX_BYTES = 64_000  # about 15k SmolLM2 tokens: 32 windows of 256 tokens and some to spare
SQLITE_PAGES = ("whentouse.html", "howtocorrupt.html", "atomiccommit.html", "lockingv3.html", "queryplanner.html")


def _extract(deb: str, into: str) -> Path:
    subprocess.run(["dpkg-deb", "-x", deb, into], check=True)
    return Path(into)


def _cut(lines: list[str]) -> str:
    out, size = [], 0
    for line in lines:
        size += len(line.encode("utf-8")) + 1
        if size > MAX_BYTES:
            break
        out.append(line)
    return "\n".join(out).strip() + "\n"


def kjv(bible_deb: str, text_deb: str) -> str:
    """Genesis, one verse per line, the references ("Gen1:1 ") removed; cut at a verse below MAX_BYTES."""
    with tempfile.TemporaryDirectory() as tmp:
        root = _extract(bible_deb, tmp)
        _extract(text_deb, tmp)
        raw = subprocess.run([str(root / "usr/bin/bible"), "-p", str(root / "usr/lib"), "-f", "gen1:1-50:26"],
                             check=True, capture_output=True, text=True).stdout
    verses = [re.sub(r"^\S+\d+:\d+ ", "", line).strip() for line in raw.splitlines() if line.strip()]
    return _cut(verses)


class _Text(html.parser.HTMLParser):
    SKIP = {"script", "style", "head", "title"}

    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in ("p", "br", "li", "h1", "h2", "h3", "h4", "tr", "pre", "blockquote", "div"):
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(data.replace("\n", " "))  # the HTML source is hard-wrapped; blocks end lines


def sqlite_docs(deb: str) -> str:
    """Prose pages of the SQLite documentation as plain text, paragraphs one per line."""
    with tempfile.TemporaryDirectory() as tmp:
        root = _extract(deb, tmp) / "usr/share/doc/sqlite3"
        lines: list[str] = []
        for page in SQLITE_PAGES:
            parser = _Text()
            parser.feed((root / page).read_text(encoding="utf-8"))
            for line in "".join(parser.parts).splitlines():
                line = re.sub(r"\s+", " ", line).strip()
                if len(line) > 40:  # navigation, table cells and headings are short; keep the prose
                    lines.append(line)
    return _cut(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    bible_deb, text_deb, sqlite_deb = argv
    (HERE / "kjv_genesis.txt").write_text(kjv(bible_deb, text_deb), encoding="utf-8")
    (HERE / "sqlite_docs.txt").write_text(sqlite_docs(sqlite_deb), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
