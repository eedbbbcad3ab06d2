"""Stages ask the format object; none tests a quantized format's name or keeps a table keyed by it.

What a format is lives in trtq/formats/<name>.py. KV-cache formats (a KV cache's dtype, not a layer
format) are a separate vocabulary and are left out: lines that speak of the KV cache are skipped.
"""

import re
from pathlib import Path

from trtq.registry import FORMATS

PACKAGE = Path(__file__).resolve().parents[2] / "trtq"


def stage_lines():
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name == "formats":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "kv" not in line.lower():
                yield f"{path.relative_to(PACKAGE.parent)}:{number}", line


def test_no_stage_compares_a_format_name_or_keys_a_table_by_one():
    names = "|".join(re.escape(f.name) for f in FORMATS.values() if f.quantized)
    quoted = rf"[\"']({names})[\"']"
    comparison = re.compile(rf"(==|!=|\bin)\s*\(?{quoted}|{quoted}\s*(==|!=|\bin\b)")
    table_key = re.compile(rf"{quoted}\s*:")
    found = [f"{where}: {line.strip()}" for where, line in stage_lines()
             if comparison.search(line) or table_key.search(line)]
    assert not found, "ask the format (trtq/formats/) instead:\n" + "\n".join(found)


def test_the_check_finds_a_name_check():
    names = "|".join(re.escape(f.name) for f in FORMATS.values() if f.quantized)
    quoted = rf"[\"']({names})[\"']"
    comparison = re.compile(rf"(==|!=|\bin)\s*\(?{quoted}|{quoted}\s*(==|!=|\bin\b)")
    assert comparison.search('    if fmt.name == "int4_awq":')
    assert comparison.search('    if "nvfp4" in checkpoint.formats:')
    assert re.search(rf"{quoted}\s*:", '    "fp8_block": "#D55E00",')
    assert not comparison.search('    if fmt.quantized:')
