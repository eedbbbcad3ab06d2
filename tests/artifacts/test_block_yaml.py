"""trtq's block YAML writer: any YAML 1.1 loader reads back exactly the data written (PyYAML's pure-Python and
libyaml loaders, as trtq and its users read artifacts), for every JSON value type and the strings YAML reads as
something else when unquoted."""

from __future__ import annotations

import math
import random

import pytest
import yaml

from trtq.artifacts.io import block_yaml

TRICKY_STRINGS = [
    "", " ", "  lead", "trail ", "yes", "No", "ON", "off", "y", "N", "true", "False", "null", "NULL", "~", "-", "- a",
    "--budget", "a: b", "a:b", "key:", "#x", "a #b", "1", "-1", "+1", "1e5", "1.0", "0x1F", "0o17", "1_000", "0777",
    "2026-12-02", "2026-12-02T14:21:26+00:00", "12:30:00", ".inf", "-.Inf", ".nan", "NaN", "inf", "<<", "=", "!tag",
    "&anchor", "*alias", "%dir", "@at", "`tick`", "|", ">", "{", "}", "[", "]", ",", "?", "'", '"', "\\", "a\nb",
    "\n", "tab\there", "\r\n", "\x00nul", "\x7f", "\x85", "\u2028", "é", "ünïcode", "中文", "😀", "a😀b", "\ufeff",
    "plain_name", "model.layers.0.self_attn.q_proj", "trtllm-engine@1.2", "path/to/file.json", "x" * 300,
]
FLOATS = [0.0, -0.0, 1.0, -1.5, 0.1, 1e-05, 1e-300, 5e-324, 1e16, 1.5e16, 1e+20, -2.5e-7, 123456789.123, 1 / 3]


def roundtrips(data):
    text = block_yaml(data)
    loaders = [yaml.SafeLoader] + ([yaml.CSafeLoader] if hasattr(yaml, "CSafeLoader") else [])
    for loader in loaders:
        assert yaml.load(text, Loader=loader) == data, (loader.__name__, text[:2000])
    return text


@pytest.mark.parametrize("value", TRICKY_STRINGS, ids=range(len(TRICKY_STRINGS)))
def test_strings_as_values_keys_and_items(value):
    roundtrips({"v": value})
    roundtrips({value: 1})
    roundtrips([value, {"k": [value]}])


def test_scalars_of_every_json_type():
    roundtrips({"none": None, "t": True, "f": False, "i": 0, "neg": -7, "big": 2**70, "floats": FLOATS})
    text = block_yaml({"a": float("inf"), "b": float("-inf"), "c": float("nan")})
    back = yaml.safe_load(text)
    assert back["a"] == math.inf and back["b"] == -math.inf and math.isnan(back["c"])
    assert isinstance(yaml.safe_load(block_yaml({"x": 1e-05}))["x"], float)   # not the string "1e-05"


def test_nesting_and_empty_containers():
    roundtrips({"a": {}, "b": [], "c": [[], {}, [[1, [2, []]]], {"d": {"e": []}}], "f": [{"g": 1, "h": [{"i": {}}]}]})
    roundtrips([[[]]])
    roundtrips([{"a": 1}, {"b": {"c": [1, 2]}}, [{"d": None}]])
    roundtrips({})
    roundtrips([])


def test_random_documents():
    rng = random.Random(0)
    scalars = [*TRICKY_STRINGS, *FLOATS, None, True, False, 0, 42, -3]

    def value(depth):
        kind = rng.random()
        if depth > 3 or kind < 0.5:
            return rng.choice(scalars)
        if kind < 0.75:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        return {rng.choice(TRICKY_STRINGS): value(depth + 1) for _ in range(rng.randrange(4))}

    for _ in range(300):
        roundtrips({"doc": value(0)})


def test_non_json_values_are_refused():
    with pytest.raises(TypeError, match="not a JSON value"):
        block_yaml({"a": object()})
