"""The stage cache: a unit is done only when its marker (written last) matches its key and its files."""

from __future__ import annotations

import json
import os

from trtq.run.cache import MARKER, StageCache, content_key


def _unit(cache: StageCache, key: str):
    out = cache.begin("profile", "H100-SXM")
    (out / "profile.json").write_text('{"rows": 1}')
    (out / "ckpt").mkdir()
    (out / "ckpt" / "model.safetensors").write_bytes(b"\0" * 64)
    return out, cache.complete("profile", "H100-SXM", key, [out / "profile.json", out / "ckpt"], {"rows": 1}, 0.5)


def test_complete_unit_is_found_by_its_key_only(tmp_path):
    cache = StageCache(tmp_path)
    key = content_key(stage="profile", gpu="H100-SXM")
    out, done = _unit(cache, key)
    assert set(done.files) == {"profile.json", "ckpt/model.safetensors"}
    found = cache.lookup("profile", "H100-SXM", key)
    assert found is not None and found.files == done.files and found.summary == {"rows": 1}
    assert cache.lookup("profile", "H100-SXM", content_key(stage="profile", gpu="B200")) is None
    assert content_key(a=1, b=[1, 2]) == content_key(b=[1, 2], a=1) != content_key(a=1, b=[2, 1])


def test_a_changed_or_missing_file_undoes_the_unit(tmp_path):
    cache = StageCache(tmp_path)
    key = content_key(x=1)
    out, _ = _unit(cache, key)
    (out / "profile.json").write_text('{"rows": 22}')
    assert cache.lookup("profile", "H100-SXM", key) is None
    out, _ = _unit(cache, key)
    os.unlink(out / "ckpt" / "model.safetensors")
    assert cache.lookup("profile", "H100-SXM", key) is None


def test_begin_forgets_the_unit_before_anything_is_written(tmp_path):
    cache = StageCache(tmp_path)
    key = content_key(x=1)
    out, _ = _unit(cache, key)
    assert json.loads((out / MARKER).read_text())["key"] == key
    again = cache.begin("profile", "H100-SXM")
    assert again == out and list(out.iterdir()) == []       # marker and old files gone: a kill now resumes here
    assert cache.lookup("profile", "H100-SXM", key) is None
    (out / MARKER).write_text("{not json")
    assert cache.lookup("profile", "H100-SXM") is None
