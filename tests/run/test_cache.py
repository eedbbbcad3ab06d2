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


def test_data_hash_is_what_an_artifact_says_not_when_it_was_made(tmp_path):
    """Keys chain through data hashes: an upstream unit redone with the same result keeps what follows cached."""
    import yaml

    from trtq.artifacts.io import make_metadata
    from trtq.run.cache import data_sha256

    def plan_file(name: str, solve_time_s: float, formats: list[str], made: str = "2026-12-02T04:00:00+00:00"):
        metadata = make_metadata(notes=[name]).model_dump(mode="json") | {"created_at": made}
        data = {"artifact": "plan", "schema_version": 2, "metadata": metadata,
                "solver": {"name": "highs", "solve_time_s": solve_time_s}, "groups": formats}
        (tmp_path / name).write_text(yaml.safe_dump(data))
        return data_sha256(tmp_path / name)

    first = plan_file("a.yaml", 0.25, ["fp8", "bf16"])
    later = plan_file("b.yaml", 0.31, ["fp8", "bf16"], made="2026-12-02T05:00:00+00:00")
    assert later == first       # other metadata (time, notes) and solver wall time: the same data
    assert plan_file("c.yaml", 0.25, ["fp8", "fp8"]) != first          # another plan
    (tmp_path / "w.safetensors").write_bytes(b"\1" * 8)
    (tmp_path / "not-an-artifact.json").write_text('{"metadata": {"created_at": "now"}}')
    from trtq.artifacts.io import sha256_file

    for raw in ("w.safetensors", "not-an-artifact.json"):   # anything else: its bytes
        assert data_sha256(tmp_path / raw) == sha256_file(tmp_path / raw)
