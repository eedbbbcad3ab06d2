import json
import subprocess
import sys
import time

import pytest
import yaml

from trtq.cli import main
from trtq.errors import InputError


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_is_instant_and_imports_no_torch():
    probe = ("import sys, time; t = time.perf_counter(); from trtq.cli import build_parser; "
             "build_parser().format_help(); print(time.perf_counter() - t); "
             "print(sorted(m for m in ('torch', 'pandas', 'modelopt', 'transformers', 'tensorrt_llm', 'pulp') "
             "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[1] == "[]", f"heavy modules imported by --help: {out[1]}"
    assert float(out[0]) < 1.0
    start = time.perf_counter()
    help_text = subprocess.run([sys.executable, "-m", "trtq", "--help"], capture_output=True, text=True, check=True).stdout
    assert time.perf_counter() - start < 5
    for command in ("gpus", "formats", "layers", "profile", "sensitivity", "plan", "demo"):
        assert command in help_text


def test_gpus_and_formats(capsys):
    code, out, _ = run(capsys, "gpus", "--json")
    gpus = {g["name"]: g for g in json.loads(out)}
    assert code == 0 and gpus["A100-SXM-80GB"]["formats"] == ["bf16", "int8_sq", "int4_awq"]
    code, out, _ = run(capsys, "formats", "--json")
    formats = {f["name"]: f for f in json.loads(out)}
    assert formats["w4a8_awq"]["modelopt_config"] == "W4A8_AWQ_BETA_CFG" and formats["nvfp4"]["min_sm"] == 100
    code, out, _ = run(capsys, "gpus")
    assert code == 0 and "B200" in out and "9000 T" in out


def test_layers_command_writes_the_graph(capsys, tmp_path):
    code, out, _ = run(capsys, "layers", "llama-3.1-70b", "-o", str(tmp_path / "layers.json"))
    assert code == 0 and "unique GEMM shapes (out x in): 10240x8192, 8192x8192, 57344x8192, 8192x28672" in out
    assert len(json.loads((tmp_path / "layers.json").read_text())["layers"]) == 560


def test_profile_sensitivity_plan_end_to_end(capsys, tmp_path, smollm2_weight_sensitivity):
    from trtq.artifacts import save_artifact

    sens = save_artifact(smollm2_weight_sensitivity, tmp_path / "sens.json")
    profile = tmp_path / "h100.json"
    code, _, err = run(capsys, "profile", "smollm2-135m", "--gpu", "h100", "--launch-cost", "0",
                       "--tokens", "16,2048", "-o", str(profile))
    # Without --runtime: the formats the default runtime (PyTorch backend) runs on H100, fp8_block included.
    assert code == 0 and "4 unique GEMM shapes x 5 formats x 2 token counts = 40 rows" in err.replace("\n", " ")
    assert json.loads(profile.read_text())["launch_cost_ns"] == 0
    plan = tmp_path / "plan.yaml"
    code, out, _ = run(capsys, "plan", "smollm2-135m", "--profile", str(profile), "--sensitivity", str(sens),
                       "--gpu", "h100", "--budget", "decode@16=0.45", "--budget", "prefill@2048=0.9",
                       "--pareto", "6", "-o", str(plan))
    assert code == 0 and "H100-SXM" in out
    data = yaml.safe_load(plan.read_text())
    assert data["artifact"] == "plan" and data["schema_version"] == 3
    assert data["metadata"]["inputs"]["profile"]["sha256"] and data["metadata"]["inputs"]["sensitivity"]["sha256"]
    assert data["totals"]["latency_ns"]["decode@16"] <= 0.45 * data["totals"]["bf16_latency_ns"]["decode@16"] * (1 + 1e-9)
    # real weight sensitivity: 4-bit formats cost orders of magnitude more than 8-bit ones
    rows = {(r.layer, r.format): r.omega for r in smollm2_weight_sensitivity.rows}
    layer = "model.layers.7.mlp.down_proj"
    assert rows[layer, "bf16"] < rows[layer, "int8_sq"] < rows[layer, "fp8"] < rows[layer, "int4_awq"]
    assert rows[layer, "int4_awq"] < rows[layer, "w4a8_awq"]


BAD_INPUTS = [
    (["layers", "no-such-model"], "unknown model 'no-such-model'"),
    (["profile", "smollm2-135m", "--gpu", "v100", "-o", "{tmp}/p.json"], "unknown GPU 'v100'"),
    (["profile", "smollm2-135m", "--gpu", "a100", "--formats", "fp8", "-o", "{tmp}/p.json"],
     "format fp8 is not supported on A100-SXM-80GB"),
    (["profile", "smollm2-135m", "--gpu", "h100", "--formats", "int3", "-o", "{tmp}/p.json"], "unknown format 'int3'"),
    (["profile", "smollm2-135m", "--gpu", "h100", "--tokens", "16,x", "-o", "{tmp}/p.json"], "--tokens must be"),
    (["profile", "smollm2-135m", "--backend", "tpu", "--gpu", "h100", "-o", "{tmp}/p.json"], "unknown profiler backend 'tpu'"),
    (["profile", "smollm2-135m", "--backend", "roofline", "-o", "{tmp}/p.json"], "the roofline backend needs --gpu"),
    (["sensitivity", "llama-3.1-8b", "-o", "{tmp}/s.json"], "has no weights here"),
    (["plan", "smollm2-135m", "--profile", "{tmp}/missing.json", "--sensitivity", "{tmp}/s.json", "--gpu", "h100",
      "--budget", "decode@16=0.5", "-o", "{tmp}/plan.yaml"], "profile artifact not found"),
    (["plan", "smollm2-135m", "--profile", "{tmp}/garbage.json", "--sensitivity", "{tmp}/s.json", "--gpu", "h100",
      "--budget", "decode@16=0.5", "-o", "{tmp}/plan.yaml"], "is not valid YAML/JSON"),
    (["plan", "smollm2-135m", "--profile", "{tmp}/p.json", "--sensitivity", "{tmp}/s.json", "--gpu", "h100",
      "--budget", "decode16=0.5", "-o", "{tmp}/plan.yaml"], "bad budget 'decode16=0.5'"),
    (["plan", "smollm2-135m", "--profile", "{tmp}/p.json", "--sensitivity", "{tmp}/s.json", "--gpu", "h100",
      "--budget", "decode@16=0.05", "-o", "{tmp}/plan.yaml"], "budget decode@16=0.05 cannot be met on H100-SXM"),
    (["plan", "smollm2-135m", "--profile", "{tmp}/p.json", "--sensitivity", "{tmp}/s.json", "--gpu", "h100",
      "--budget", "decode@16=0.5", "--memory-gb", "-1", "-o", "{tmp}/plan.yaml"], "--memory-gb must be positive"),
]


@pytest.fixture(scope="module")
def bad_input_dir(tmp_path_factory, smollm2_graph):
    from trtq.artifacts import make_metadata, save_artifact
    from trtq.artifacts.sensitivity import Sensitivity, SensitivityRow
    from trtq.profile.api import build_profile

    tmp = tmp_path_factory.mktemp("bad")
    save_artifact(build_profile(smollm2_graph, "roofline", "h100", [16], launch_cost_ns=0), tmp / "p.json")
    rows = [SensitivityRow(layer=layer.name, format=f, group_size=64 if "4" in f else None, weight_error=1.0,
                           omega={"bf16": 0.0, "fp8": 1.0, "int8_sq": 1.0, "int4_awq": 2.0, "w4a8_awq": 2.0}[f])
            for layer in smollm2_graph.layers for f in ("bf16", "fp8", "int8_sq", "int4_awq", "w4a8_awq")]
    save_artifact(Sensitivity.create(metadata=make_metadata(),
                              model="smollm2-135m", method="weight", formats=[], rows=rows), tmp / "s.json")
    (tmp / "garbage.json").write_text("{ this is : [ not json")
    return tmp


@pytest.mark.parametrize("argv, message", BAD_INPUTS, ids=[" ".join(a[:2]) + f"-{i}" for i, (a, _) in enumerate(BAD_INPUTS)])
def test_bad_input_is_one_line_and_exit_2(capsys, bad_input_dir, argv, message):
    code, out, err = run(capsys, *[a.replace("{tmp}", str(bad_input_dir)) for a in argv])
    assert code == 2
    assert err.startswith("trtq: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (bad_input_dir / "plan.yaml").exists()


def test_bad_input_through_the_console_script_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "trtq", "plan", "smollm2-135m", "--profile", str(tmp_path / "x"),
                           "--sensitivity", str(tmp_path / "y"), "--gpu", "h100", "--budget", "decode@16=0.5",
                           "-o", str(tmp_path / "plan.yaml")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_layers_options_come_from_its_request_and_the_library_gives_the_cli_graph(capsys, tmp_path):
    from trtq.artifacts.io import load_artifact
    from trtq.artifacts.layers import LayerGraph
    from trtq.cli import build_parser
    from trtq.model.layers import layers_of
    from trtq.model.request import LayersRequest

    args = build_parser().parse_args(["layers", "smollm2-135m"])
    assert LayersRequest.from_args(args) == LayersRequest(model="smollm2-135m")  # defaults: the model's
    args = build_parser().parse_args(["layers", "smollm2-135m", "--include-lm-head"])
    assert LayersRequest.from_args(args).include_lm_head is True
    code, _, _ = run(capsys, "layers", "smollm2-135m", "--include-lm-head", "-o", str(tmp_path / "layers.json"))
    written = load_artifact(tmp_path / "layers.json", LayerGraph)
    graph = layers_of(LayersRequest(model="smollm2-135m", include_lm_head=True))
    assert code == 0 and graph.layers == written.layers and graph.groups == written.groups
    assert graph.layers[-1].name == "lm_head"
    with pytest.raises(InputError, match="unknown setting 'include_lm_heads'"):
        LayersRequest(model="smollm2-135m", include_lm_heads=True)


def test_the_command_table_is_what_the_modules_register():
    """cli.COMMANDS names each subcommand's module: a module registering a command the table lacks (or
    the table naming one its module does not register) would make that command unreachable or wrong."""
    import argparse
    import importlib

    from trtq.cli import COMMAND_MODULES, COMMANDS

    registered = {}
    for module_name in COMMAND_MODULES:
        subparsers = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(module_name).register(subparsers)
        registered.update(dict.fromkeys(subparsers.choices, module_name))
    assert registered == COMMANDS


def test_a_command_builds_only_its_own_parser():
    """`trtq plan ...` imports no other command's module (nor their request models); help lists every command."""
    probe = ("import json, sys; from trtq.cli import build_parser; "
             "build_parser('plan').parse_args(['plan', 'm', '--gpu', 'h100', '--profile', 'p.json', "
             "'--sensitivity', 's.json', '-o', 'o.yaml']); "
             "print(json.dumps(sorted(m for m in sys.modules if m.startswith('trtq.'))))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                       check=True).stdout)
    assert "trtq.plan.commands" in loaded and "trtq.plan.request" in loaded
    others = ("quantize", "eval", "build", "bench", "report", "run", "predict", "profile", "sensitivity")
    assert not [m for m in loaded if m.split(".")[1] in others and m.endswith((".commands", ".request"))], loaded
    from trtq.cli import COMMANDS, build_parser

    assert set(build_parser()._subparsers._group_actions[0].choices) == set(COMMANDS)
