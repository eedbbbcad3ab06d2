"""`trtq predict`: plans and uniform models, JSON, refusals, speed without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from trtq.artifacts import make_metadata, save_artifact
from trtq.cli import main
from trtq.model.zoo import resolve_model

KEYS = ("ttft_ms", "tpot_ms", "output_tokens_per_s", "concurrency", "max_concurrency",
        "measured_share", "interpolated_share", "extrapolated_share", "modelled_share")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def predict_json(capsys, *argv):
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def write_plan(path, model, gpu, format_of):
    """A plan artifact as `trtq plan` writes it (costs and totals consistent), with the formats given per group."""
    from tests.helpers.plans import group, plan_of
    from trtq.model.layers import build_layer_graph

    # The model's own layer graph: a plan names real layers (predict checks them against the model).
    graph = build_layer_graph(resolve_model(model))
    groups = [group(g.name, g.members, format_of(g), None, g.in_features, g.out_features, g.kind, g.block)
              for g in graph.groups]
    return save_artifact(plan_of(groups, model=model, gpu=gpu, runtime="trtllm@1.2"), path)


def test_uniform_prediction_json(capsys):
    r = predict_json(capsys, "predict", "llama-3.1-8b", "--uniform", "fp8", "--gpu", "h100",
                     "--workload", "isl=2048,osl=256,concurrency=32", "--kv-format", "fp8")
    for key in KEYS:
        assert key in r
    assert r["concurrency"] == 32 and r["in_flight"] == 32 and r["max_concurrency"] > 32
    assert r["measured_share"] + r["interpolated_share"] + r["extrapolated_share"] + r["modelled_share"] == \
        pytest.approx(1.0)
    # Llama-3's lm_head (n = 128256) lies beyond the tables' n = 65536: its time is extrapolated, said so.
    assert 0 < r["extrapolated_share"] < 0.1
    assert 0 < r["ttft_ms"] and 0 < r["tpot_ms"] < r["ttft_ms"]
    assert r["request_latency_ms"] == pytest.approx(r["ttft_ms"] + 255 * r["tpot_ms"])
    assert sum(r["time_breakdown"].values()) == pytest.approx(1.0)
    assert r["kernels"]["package"].startswith("aiconfigurator-core==")
    best = predict_json(capsys, "predict", "llama-3.1-8b", "--uniform", "fp8", "--gpu", "h100",
                        "--workload", "isl=2048,osl=256", "--kv-format", "fp8", "--max-throughput")
    assert best["output_tokens_per_s"] > r["output_tokens_per_s"] and best["concurrency"] > 32


def test_a_model_between_the_tables_kv_heads(capsys):
    # SmolLM2 has 3 KV heads, between the attention tables' 2 and 4: predicted, not refused.
    r = predict_json(capsys, "predict", "smollm2-135m", "--uniform", "bf16", "--gpu", "h100",
                     "--workload", "isl=1024,osl=128,concurrency=8")
    assert 0 < r["tpot_ms"] < r["ttft_ms"] and r["time_breakdown"]["generation_attention"] > 0


def test_tp2_halves_per_gpu_weights_and_adds_allreduce(capsys):
    args = ("predict", "llama-3.1-8b", "--uniform", "bf16", "--gpu", "h200", "--workload", "isl=1024,osl=128,concurrency=8")
    one, two = predict_json(capsys, *args), predict_json(capsys, *args, "--tp", "2")
    assert two["memory"]["weight_bytes"] < 0.55 * one["memory"]["weight_bytes"]
    assert "allreduce" in two["time_breakdown"] and "allreduce" not in one["time_breakdown"]
    assert two["output_tokens_per_s_per_gpu"] == pytest.approx(two["output_tokens_per_s"] / 2)


def test_plan_files_move_between_the_uniform_plans(capsys, tmp_path):
    w = ("--workload", "isl=2048,osl=256,concurrency=32")
    bf16 = predict_json(capsys, "predict", "llama-3.1-8b", "--uniform", "bf16", "--gpu", "h100", *w)
    fp8 = predict_json(capsys, "predict", "llama-3.1-8b", "--uniform", "fp8", "--gpu", "h100", *w)
    tpots = []
    for blocks in (0, 16, 32):
        plan = write_plan(tmp_path / f"plan{blocks}.yaml", "llama-3.1-8b", "H100-SXM",
                          lambda g, b=blocks: "fp8" if g.block < b else "bf16")
        r = predict_json(capsys, "predict", str(plan), *w)
        assert r["gpu"] == "H100-SXM" and r["plan"] == str(plan)
        tpots.append(r["tpot_ms"])
    assert tpots[0] == pytest.approx(bf16["tpot_ms"]) and tpots[2] == pytest.approx(fp8["tpot_ms"])
    assert tpots[0] > tpots[1] > tpots[2]


@pytest.mark.parametrize("argv, words", [
    (("llama-3.1-8b", "--uniform", "fp8", "--gpu", "h100", "--workload", "isl=2048,osl=256,concurrency=0"),
     "concurrency must be >= 1"),
    (("llama-3.1-8b", "--uniform", "fp8", "--gpu", "h100", "--workload", "isl=-1,osl=256"), "isl must be >= 1"),
    (("llama-3.1-8b", "--uniform", "fp8", "--gpu", "h100", "--workload", "isl=8,osl=8", "--kv-format", "nvfp4"),
     "KV-cache format nvfp4 needs Blackwell"),
    (("llama-3.1-8b", "--uniform", "fp8", "--gpu", "b200", "--workload", "isl=8,osl=8", "--kv-format", "nvfp4"),
     "no attention table"),
    (("llama-3.1-8b", "--uniform", "fp8", "--gpu", "h100", "--workload", "isl=8,osl=8", "--kv-format", "int2"),
     "unknown KV-cache format"),
    (("llama-3.1-8b", "--uniform", "fp8", "--gpu", "tpu-v5", "--workload", "isl=8,osl=8"), "unknown GPU 'tpu-v5'"),
    (("llama-3.1-8b", "--uniform", "nvfp4", "--gpu", "h100", "--workload", "isl=8,osl=8"),
     "nvfp4 is not supported on H100"),
    (("llama-3.1-8b", "--uniform", "int4_awq", "--gpu", "h100", "--workload", "isl=8,osl=8"),
     "no GEMM latency for int4_awq on H100-SXM"),
    (("llama-3.1-8b", "--gpu", "h100", "--workload", "isl=8,osl=8"), "give --uniform FORMAT"),
    (("llama-3.1-70b", "--uniform", "bf16", "--gpu", "h100", "--workload", "isl=2048,osl=256", "--max-throughput"),
     "does not fit on H100-SXM"),
    (("llama-3.1-8b", "--uniform", "fp8", "--gpu", "h100", "--workload", "isl=8,osl=8", "--tp", "3"),
     "do not divide by --tp 3"),
])
def test_bad_inputs_are_one_line_exit_2(capsys, argv, words):
    code, out, err = run(capsys, "predict", *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("trtq: error: ") and words in err, err


def test_warm_prediction_is_fast_and_imports_no_torch(tmp_path, predict_cache):
    probe = (
        "import resource, sys; from trtq.cli import main; "
        "code = main(['predict', 'llama-3.1-70b', '--uniform', 'fp8', '--gpu', 'h200', '--tp', '2', "
        "'--workload', 'isl=4096,osl=512', '--kv-format', 'fp8', '--max-throughput', '--json']); "
        "u = resource.getrusage(resource.RUSAGE_SELF); "
        "print(u.ru_utime + u.ru_stime, file=sys.stderr); "
        "print(sorted(m for m in ('torch', 'pandas', 'transformers', 'modelopt', 'tensorrt_llm', "
        "'aiconfigurator_core.sdk') if m in sys.modules), file=sys.stderr)"
    )
    env = {**os.environ, "TRTQ_CACHE": str(predict_cache)}
    cold = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    warm = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert json.loads(cold.stdout) == json.loads(warm.stdout)
    # Not even the first prediction (which opens aiconfigurator's engine) imports them.
    assert cold.stderr.strip().splitlines()[-1] == "[]", cold.stderr
    cpu_s, modules = warm.stderr.strip().splitlines()[-2:]
    assert modules == "[]", f"heavy modules imported: {modules}"
    # CPU time, not wall time: the workplace's 2 cores are shared with other sessions.
    assert float(cpu_s) < 1.0, f"warm prediction took {cpu_s} s of CPU"


def test_profile_gemms_interpolate_and_keep_provenance(tmp_path):
    from trtq.artifacts.profile import Profile, ProfileRow
    from trtq.predict.api import ProfileGemms

    rows = [ProfileRow(out_features=6144, in_features=4096, tokens=t, format="fp8", status="ok", latency_ns=ns,
                       method="table", details={"provenance": "measured"})
            for t, ns in ((16, 20000.0), (128, 30000.0), (2048, 80000.0))]
    # A schema-2 row carries its provenance in its own field (the aiconfigurator backend's rows do).
    rows.append(ProfileRow(out_features=6144, in_features=4096, tokens=16, format="bf16", status="ok",
                           latency_ns=15000.0, method="table", provenance="extrapolated"))
    profile = Profile(artifact=Profile.KIND, schema_version=Profile.SCHEMA_VERSION, metadata=make_metadata(),
                      model="llama-3.1-8b", gpu="H100-SXM", backend="aiconfigurator", launch_cost_ns=0.0,
                      tokens=[16, 128, 2048], formats=["fp8", "bf16"], rows=rows)
    gemms = ProfileGemms(profile, "p.json", 1)
    assert gemms.gemm(6144, 4096, "fp8", 128).ms == pytest.approx(0.030)
    assert gemms.gemm(6144, 4096, "fp8", 128).provenance == "measured"
    mid = gemms.gemm(6144, 4096, "fp8", 512)     # halfway between 128 and 2048 in log tokens
    assert mid.provenance == "interpolated"
    assert mid.ms == pytest.approx(0.030 * (80 / 30) ** 0.5, rel=1e-9)
    assert gemms.gemm(6144, 4096, "fp8", 4096).provenance == "modelled"
    assert gemms.has("fp8") and not gemms.has("nvfp4")
    assert gemms.gemm(6144, 4096, "bf16", 16).provenance == "extrapolated"
    from trtq.errors import UnsupportedError

    with pytest.raises(UnsupportedError, match="no fp8 row for the GEMM 1024x4096"):
        gemms.gemm(1024, 4096, "fp8", 16)


def test_prediction_from_a_profile(capsys, tmp_path):
    """GEMMs from a trtq profile (here a roofline one, marked modelled), the rest from the tables."""
    profile = tmp_path / "h100.json"
    code, _, err = run(capsys, "profile", "llama-3.1-8b", "--gpu", "h100", "--formats", "bf16,fp8",
                       "--tokens", "1,16,128,1024,2048,4096,8192", "-o", str(profile))
    assert code == 0, err
    r = predict_json(capsys, "predict", "llama-3.1-8b", "--uniform", "fp8", "--gpu", "h100", "--profile", str(profile),
                     "--workload", "isl=1024,osl=128,concurrency=16")
    assert r["gemm_source"].startswith(f"profile {profile}") and r["modelled_share"] > 0.5
    code, _, err = run(capsys, "predict", "llama-3.1-8b", "--uniform", "fp8", "--gpu", "h200",
                       "--profile", str(profile), "--workload", "isl=8,osl=8")
    assert code == 2 and "was made for H100-SXM, not H200" in err


def test_predict_options_come_from_its_request_and_the_library_takes_it(capsys):
    from trtq.cli import build_parser
    from trtq.errors import InputError
    from trtq.predict.api import predict
    from trtq.predict.request import PredictRequest

    argv = ["predict", "llama-3.1-8b", "--uniform", "fp8", "--gpu", "h100", "--workload", "isl=512,osl=64",
            "--kv-format", " FP8 "]
    request = PredictRequest.from_args(build_parser().parse_args(argv))
    assert request == PredictRequest(target="llama-3.1-8b", uniform="fp8", gpu="h100", workload="isl=512,osl=64",
                                     kv_format="fp8")
    assert request.tp == 1 and request.max_batch_size == 512 and request.max_throughput is False  # its defaults
    assert predict(request) == predict_json(capsys, *argv)
    with pytest.raises(InputError, match="osl= is required"):
        PredictRequest(target="llama-3.1-8b", workload="isl=512")
    with pytest.raises(InputError, match="--tp: input should be greater than or equal to 1"):
        PredictRequest(target="llama-3.1-8b", workload="isl=512,osl=64", tp=0)
