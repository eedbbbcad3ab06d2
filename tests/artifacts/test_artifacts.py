import os

import pytest

from trtq.artifacts import atomic_path, atomic_write_text, load_artifact, make_metadata, save_artifact
from trtq.artifacts.layers import LayerGraph
from trtq.artifacts.profile import Profile
from trtq.artifacts.sensitivity import Sensitivity
from trtq.errors import ArtifactError
from trtq.profile.api import build_profile


@pytest.fixture(scope="module")
def profile(smollm2_graph):
    return build_profile(smollm2_graph, "roofline", "h100", [1, 16])


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_round_trip_layers_profile_sensitivity(smollm2_graph, profile, tmp_path, suffix):
    sens = Sensitivity.create(metadata=make_metadata(seed=3),
                       model="smollm2-135m", method="weight", formats=["bf16"], rows=[])
    for artifact, cls in ((smollm2_graph, LayerGraph), (profile, Profile), (sens, Sensitivity)):
        path = save_artifact(artifact, tmp_path / f"{cls.KIND}{suffix}")
        assert load_artifact(path, cls) == artifact


def test_metadata_records_versions_inputs_and_hashes(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("hello")
    meta = make_metadata(inputs={"text": src}, seed=7)
    assert meta.versions["torch"] and meta.versions["python"] and meta.versions["trtq"]
    assert meta.inputs["text"].sha256 == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert meta.seed == 7 and meta.created_at


def test_malformed_artifacts_give_one_line_naming_the_file(profile, tmp_path):
    path = save_artifact(profile, tmp_path / "p.json")
    cases = {
        "missing": (tmp_path / "nope.json", "profile artifact not found"),
        "garbage": ("{[", "is not valid YAML/JSON"),
        "list": ("[1, 2]", "expected a mapping"),
        "kind": (path.read_text().replace('"artifact": "profile"', '"artifact": "plan"'), "expected a profile artifact, found 'plan'"),
        "version": (path.read_text().replace(f'"schema_version": {Profile.SCHEMA_VERSION}', '"schema_version": 99', 1), "schema_version 99 is not supported"),
        "typo": (path.read_text().replace('"backend"', '"backnd"', 1), "invalid profile artifact"),
        "truncated": (path.read_text()[: len(path.read_text()) // 2], "not valid YAML/JSON"),
    }
    for name, (content, message) in cases.items():
        target = content if name == "missing" else tmp_path / f"{name}.json"
        if name != "missing":
            target.write_text(content)
        with pytest.raises(ArtifactError) as err:
            load_artifact(target, Profile)
        assert message in str(err.value), name
        assert "\n" not in str(err.value) and str(target) in str(err.value)


def test_atomic_write_leaves_nothing_half_written(tmp_path):
    target = tmp_path / "plan.yaml"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["plan.yaml"]
