"""`trtq quantize` refusals, in process through trtq.cli.main: one line on stderr, exit 2, before
any model is loaded (so these run in a second)."""

from __future__ import annotations

import pytest

from tests.helpers.plans import group, plan_of
from trtq.artifacts import save_artifact
from trtq.cli import main

QKV = ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.v_proj"]


def run(capsys, plan_path, out, *extra):
    code = main(["quantize", "smollm2-135m", "--plan", str(plan_path), "-o", str(out), *extra])
    err = capsys.readouterr().err
    return code, err


def assert_one_line_error(code, err, *needles):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("trtq: error: ")
    for needle in needles:
        assert needle in lines[0]


def test_nvfp4_plan_refused_without_a_gpu(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: ModelOpt quantizes NVFP4 here")
    plan = plan_of([group("model.layers.0.self_attn.qkv", QKV, "nvfp4", 16, kind="qkv"),
                    group("model.layers.0.mlp.down_proj", ["model.layers.0.mlp.down_proj"], "nvfp4", 16,
                          in_features=1536),
                    group("model.layers.0.self_attn.o_proj", ["model.layers.0.self_attn.o_proj"], "fp8")])
    save_artifact(plan, tmp_path / "plan.yaml")
    code, err = run(capsys, tmp_path / "plan.yaml", tmp_path / "out")
    assert_one_line_error(code, err, "4 layers in nvfp4", "model.layers.0.self_attn.q_proj",
                          "model.layers.0.mlp.down_proj", "CUDA GPU")
    assert "o_proj" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("groups: [\n", "not valid YAML/JSON"),
        ("artifact: profile\nschema_version: 1\n", "expected a plan artifact, found 'profile'"),
        ("- just\n- a list\n", "expected a mapping"),
    ],
)
def test_unreadable_plan_files(tmp_path, capsys, content, needle):
    (tmp_path / "plan.yaml").write_text(content)
    code, err = run(capsys, tmp_path / "plan.yaml", tmp_path / "out")
    assert_one_line_error(code, err, needle)


def test_missing_plan_file(tmp_path, capsys):
    code, err = run(capsys, tmp_path / "nope.yaml", tmp_path / "out")
    assert_one_line_error(code, err, "plan artifact not found")


@pytest.mark.parametrize(
    ("groups", "needle"),
    [
        ([group("model.layers.0.self_attn.o_proj", ["model.layers.0.self_attn.o_proj"], "int4_awq", None)],
         "format int4_awq needs a group_size"),
        ([group("model.layers.0.self_attn.o_proj", ["model.layers.0.self_attn.o_proj"], "int4_awq", 128)],
         "group_size 128 does not divide its input width 576"),
        ([group("model.layers.0.self_attn.o_proj", ["model.layers.0.self_attn.o_proj"], "int2")],
         "unknown format 'int2'"),
    ],
)
def test_malformed_plan_contents(tmp_path, capsys, groups, needle):
    save_artifact(plan_of(groups), tmp_path / "plan.yaml")
    code, err = run(capsys, tmp_path / "plan.yaml", tmp_path / "out")
    assert_one_line_error(code, err, needle)


def test_plan_missing_a_required_field(tmp_path, capsys):
    plan = plan_of([group("model.layers.0.self_attn.o_proj", ["model.layers.0.self_attn.o_proj"], "fp8")])
    data = plan.model_dump(mode="json")
    del data["groups"][0]["format"]
    import yaml

    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(data))
    code, err = run(capsys, tmp_path / "plan.yaml", tmp_path / "out")
    assert_one_line_error(code, err, "groups.0.format")


def test_plan_for_another_model(tmp_path, capsys):
    save_artifact(plan_of([group("model.layers.0.self_attn.o_proj", ["model.layers.0.self_attn.o_proj"], "fp8")],
                          model="llama-3.1-8b"), tmp_path / "plan.yaml")
    code, err = run(capsys, tmp_path / "plan.yaml", tmp_path / "out")
    assert_one_line_error(code, err, "made for model 'llama-3.1-8b', not 'smollm2-135m'")


def test_bad_calibration_file(tmp_path, capsys):
    save_artifact(plan_of([group("model.layers.0.self_attn.o_proj", ["model.layers.0.self_attn.o_proj"], "fp8")]),
                  tmp_path / "plan.yaml")
    code, err = run(capsys, tmp_path / "plan.yaml", tmp_path / "out", "--calib", str(tmp_path / "none.txt"))
    assert_one_line_error(code, err, "text file not found")


def test_plan_for_another_runtime_is_refused_before_the_model_loads(tmp_path, capsys):
    int8 = [group("model.layers.0.self_attn.qkv", QKV, "int8_sq", kind="qkv")]
    save_artifact(plan_of(int8, runtime="trtllm-engine@1.2"), tmp_path / "engine.yaml")
    code, err = run(capsys, tmp_path / "engine.yaml", tmp_path / "out", "--runtime", "trtllm@1.2")
    assert_one_line_error(code, err, "engine.yaml was planned for runtime trtllm-engine@1.2, not trtllm@1.2")
    # A plan that predates recorded runtimes is gated by the runtime asked for (the default here).
    save_artifact(plan_of(int8, runtime=None), tmp_path / "old.yaml")
    code, err = run(capsys, tmp_path / "old.yaml", tmp_path / "out")
    assert_one_line_error(code, err, "format int8_sq is not supported on H100-SXM (sm90) by trtllm@1.2")
    code, err = run(capsys, tmp_path / "old.yaml", tmp_path / "out", "--runtime", "nope@1")
    assert_one_line_error(code, err, "unknown runtime 'nope@1'")
    assert not (tmp_path / "out").exists()
