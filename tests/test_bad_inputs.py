"""Every bad input, as a careless user or an attacker would give it, refused the same way.

Each case runs the real CLI as a subprocess (`python -m trtq ...`, PYTHONPATH inherited) and must
exit 2 with exactly one line on stderr, no traceback, and nothing written anywhere under the
test's directories. Broken artifacts start from valid ones made here (the SmolLM2 layer graph on
the meta device, a roofline profile, a seeded sensitivity table and a real `make_plan` plan) and
are corrupted one way each.
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PYTHON = sys.executable
BLOCKS_KEPT = 15          # of SmolLM2's 30 blocks: a plan covering 105 of 210 layers
IS_ROOT = os.geteuid() == 0
# A refusal comes before the work, so it is quick; the slowest (eval, quantize: they import torch and
# build the layer graph) take ~40 s on a busy 2-core machine. Lower it to tally old code quickly.
CASE_TIMEOUT_S = float(os.environ.get("TRTQ_BAD_INPUT_TIMEOUT_S", "600"))


# ---------------------------------------------------------------------------- valid inputs, then corrupted


def _retotal(plan: dict) -> dict:
    """Totals recomputed from the groups (as the planner defines them), so only the named defect remains."""
    groups, fixed = plan["groups"], plan["fixed_parameter_bytes"]
    points = list(plan["totals"]["latency_ns"])
    plan["totals"] = {
        "latency_ns": {p: sum(g["costs"][g["format"]]["latency_ns"][p] for g in groups) for p in points},
        "bf16_latency_ns": {p: sum(g["costs"]["bf16"]["latency_ns"][p] for g in groups) for p in points},
        "weight_bytes": fixed + sum(g["costs"][g["format"]]["weight_bytes"] for g in groups),
        "bf16_weight_bytes": fixed + sum(g["costs"]["bf16"]["weight_bytes"] for g in groups),
        "sensitivity": sum(g["costs"][g["format"]]["omega"] for g in groups),
    }
    plan["pareto"] = []
    return plan


def _split_qkv(plan: dict) -> dict:
    """Block 0's q/k/v group split in two: q_proj in int4_awq, k/v in fp8."""
    i = next(i for i, g in enumerate(plan["groups"]) if g["group"] == "model.layers.0.self_attn.qkv")
    qkv = plan["groups"].pop(i)
    q, kv = copy.deepcopy(qkv), copy.deepcopy(qkv)
    q.update(group="model.layers.0.self_attn.q", members=qkv["members"][:1], format="int4_awq", group_size=64)
    kv.update(group="model.layers.0.self_attn.kv", members=qkv["members"][1:], format="fp8", group_size=None)
    plan["groups"][i:i] = [q, kv]
    return _retotal(plan)


def _half(plan: dict) -> dict:
    plan["groups"] = [g for g in plan["groups"] if g["block"] is not None and g["block"] < BLOCKS_KEPT]
    return _retotal(plan)


def _int8_sq_under_pytorch(plan: dict) -> dict:
    """One group edited to INT8 SmoothQuant, which the plan's PyTorch-backend runtime does not run."""
    g = plan["groups"][3]
    g["costs"]["int8_sq"] = copy.deepcopy(g["costs"]["bf16"])
    g.update(format="int8_sq", group_size=None)
    plan["candidate_formats"] = sorted(set(plan["candidate_formats"]) | {"int8_sq"})
    assert plan["runtime"] == "trtllm@1.2"
    return _retotal(plan)


def _edit(data: dict, fn) -> dict:
    data = copy.deepcopy(data)
    fn(data)  # edits in place
    return data


def _row(profile: dict, fmt: str, tokens: int | None = None) -> dict:
    return next(r for r in profile["rows"] if r["format"] == fmt and (tokens is None or r["tokens"] == tokens))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, smollm2_graph):
    """Valid artifacts, and every corrupted variant the cases below read."""
    from trtq.artifacts import make_metadata, save_artifact
    from trtq.artifacts.eval import EvalResult
    from trtq.artifacts.sensitivity import Sensitivity, SensitivityRow
    from trtq.plan.api import PlanRequest, make_plan
    from trtq.profile.api import build_profile

    root = tmp_path_factory.mktemp("bad-inputs")
    d = root / "in"
    d.mkdir()
    save_artifact(smollm2_graph, d / "layers.json")
    save_artifact(build_profile(smollm2_graph, "roofline", "h100", [16, 2048], launch_cost_ns=0, runtime="all"),
                  d / "profile.json")
    formats = ("bf16", "fp8", "int8_sq", "int4_awq", "w4a8_awq")
    base_omega = {"bf16": 0.0, "fp8": 1.0, "int8_sq": 1.2, "int4_awq": 6.0, "w4a8_awq": 7.0}
    rows = [SensitivityRow(layer=layer.name, format=f, group_size=64 if "4" in f else None, weight_error=1.0,
                           omega=base_omega[f] * (1 + (i % 7) / 10))
            for i, layer in enumerate(smollm2_graph.layers) for f in formats]
    save_artifact(Sensitivity.create(metadata=make_metadata(), model="smollm2-135m", method="weight",
                              formats=list(formats), rows=rows), d / "sens.json")
    plan = make_plan("smollm2-135m", d / "profile.json", d / "sens.json", "h100",
                     PlanRequest(budgets=["decode@16=0.6"]), graph=smollm2_graph)
    save_artifact(plan, d / "plan.yaml")
    save_artifact(EvalResult(artifact="eval", schema_version=1, metadata=make_metadata(), model="smollm2-135m",
                             text="t.txt", seq_len=128, ppl_bf16=20.0, ppl_quant=21.0, relative_increase=0.05,
                             threshold=0.05, passed=True), d / "eval.json")

    profile = json.loads((d / "profile.json").read_text())
    sens = json.loads((d / "sens.json").read_text())
    plan_data = yaml.safe_load((d / "plan.yaml").read_text())
    eval_data = json.loads((d / "eval.json").read_text())

    def profile_variant(name, fn):
        (d / f"{name}.json").write_text(json.dumps(_edit(profile, fn)))

    def sens_variant(name, fn):
        (d / f"{name}.json").write_text(json.dumps(_edit(sens, fn)))

    def plan_variant(name, fn):
        (d / f"{name}.yaml").write_text(yaml.safe_dump(_edit(plan_data, fn), sort_keys=False))

    profile_variant("profile-nan", lambda p: _row(p, "fp8", 16).update(latency_ns=math.nan))
    profile_variant("profile-neg-bf16", lambda p: _row(p, "bf16", 16).update(latency_ns=-540.0))
    profile_variant("profile-inf", lambda p: _row(p, "int4_awq").update(latency_ns=math.inf))
    profile_variant("profile-missing-row", lambda p: p["rows"].remove(_row(p, "int8_sq", 2048)))
    profile_variant("profile-fp3", lambda p: _row(p, "fp8").update(format="fp3"))
    profile_variant("profile-fp8-a100", lambda p: p.update(gpu="A100-SXM-80GB"))
    profile_variant("profile-neg-launch", lambda p: p.update(launch_cost_ns=-1.0))
    profile_variant("profile-tp0", lambda p: p.update(tp=0))
    profile_variant("profile-ok-without-latency", lambda p: _row(p, "fp8").update(latency_ns=None))
    sens_variant("sens-nan", lambda s: s["rows"][3].update(omega=math.nan))
    sens_variant("sens-inf", lambda s: s["rows"][8].update(omega=math.inf))
    sens_variant("sens-negative", lambda s: s["rows"][9].update(omega=-2.0))
    sens_variant("sens-fp3", lambda s: s["rows"][4].update(format="fp3"))
    plan_variant("plan-fp3", lambda p: p["groups"][5].update(format="fp3"))
    plan_variant("plan-fp3-candidate", lambda p: p["candidate_formats"].append("fp3"))
    plan_variant("plan-half-groups", lambda p: p.update(groups=p["groups"][: len(p["groups"]) // 2]))
    plan_variant("plan-half-consistent", _half)
    plan_variant("plan-split-qkv", _split_qkv)
    plan_variant("plan-fp8-a100", lambda p: p.update(gpu="A100-SXM-80GB"))
    plan_variant("plan-nan-omega", lambda p: p["groups"][2]["costs"]["fp8"].update(omega=math.nan))
    plan_variant("plan-neg-latency", lambda p: p["groups"][1]["costs"]["bf16"]["latency_ns"].update(
        {"decode@16": -540.0}))
    plan_variant("plan-neg-budget", lambda p: p["budgets"][0].update(limit_ns=-540.0))
    plan_variant("plan-edited-format", lambda p: p["groups"][0].update(
        format="bf16" if p["groups"][0]["format"] != "bf16" else "fp8", group_size=None))
    plan_variant("plan-bad-group-size", lambda p: next(g for g in p["groups"] if g["in_features"] == 576).update(
        format="int4_awq", group_size=100))
    (d / "eval-nan.json").write_text(json.dumps(_edit(eval_data, lambda e: e.update(ppl_quant=math.nan))))
    (d / "eval-neg.json").write_text(json.dumps(_edit(eval_data, lambda e: e.update(ppl_bf16=-3.0))))

    cfg = json.loads((Path(__file__).parents[1] / "trtq/model/configs/smollm2-135m.json").read_text())
    for name, value in (("cfg-layers-float", 1e9), ("cfg-layers-huge", 10**9), ("cfg-layers-negative", -1)):
        (d / name).mkdir()
        (d / name / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": value}))

    mixtral = json.loads((Path(__file__).parents[1] / "trtq/model/configs/mixtral-8x7b.json").read_text())
    for name, config in (("cfg-kv-heads-not-dividing", {**cfg, "num_key_value_heads": 4}),
                         ("cfg-heads-not-dividing-hidden", {**cfg, "num_attention_heads": 7,
                                                            "num_key_value_heads": 1}),
                         ("cfg-pad-token-outside-vocab", {**cfg, "pad_token_id": cfg["vocab_size"]}),
                         ("cfg-mixtral-top-k-over-experts", {**mixtral, "num_local_experts": 2,
                                                             "num_experts_per_tok": 4})):
        (d / name).mkdir()
        (d / name / "config.json").write_text(json.dumps(config))
    plan_variant("plan-other-model", lambda p: p.update(model="llama-3.1-8b"))
    plan_variant("plan-int8-sq-pytorch", _int8_sq_under_pytorch)
    plan_variant("plan-unknown-runtime", lambda p: p.update(runtime="trtllm@9.9"))

    (d / "a-file").write_text("not a directory")
    (d / "existing-dir").mkdir()
    (d / "existing-out").write_text("a file where an output directory goes")
    ro = d / "read-only"
    ro.mkdir()
    ro.chmod(0o555)
    yield root
    ro.chmod(0o755)


# ---------------------------------------------------------------------------- the table

PROFILE = ["profile", "smollm2-135m", "--gpu", "h100", "--tokens", "16"]
PLAN = ["plan", "smollm2-135m", "--gpu", "h100", "--budget", "decode@16=0.6"]
REPORT_OUT = ["-o", "{out}/r.html"]
QUANT = ["quantize", "smollm2-135m"]
EVAL = ["eval", "smollm2-135m", "--windows", "1", "--seq-len", "64", "-o", "{out}/e.json"]
LONG = "x" * 251 + ".json"   # 256 bytes: over NAME_MAX

CASES: list[tuple[str, list[str], str]] = [
    # -- artifacts, validated on read by every reader
    ("profile NaN latency (plan)", PLAN + ["--profile", "{in}/profile-nan.json", "--sensitivity", "{in}/sens.json",
                                           "-o", "{out}/p.yaml"], "must be finite"),
    ("profile negative bf16 latency (plan)", PLAN + ["--profile", "{in}/profile-neg-bf16.json", "--sensitivity",
                                                     "{in}/sens.json", "-o", "{out}/p.yaml"], "cannot be negative"),
    ("profile inf latency (report)", ["report", "{in}/plan.yaml", "--profile", "{in}/profile-inf.json", *REPORT_OUT],
     "must be finite"),
    ("profile tp 0 (plan)", PLAN + ["--profile", "{in}/profile-tp0.json", "--sensitivity", "{in}/sens.json",
                                    "-o", "{out}/p.yaml"], "tp is 0: it must be positive"),
    ("profile row missing (plan)", PLAN + ["--profile", "{in}/profile-missing-row.json", "--sensitivity",
                                           "{in}/sens.json", "-o", "{out}/p.yaml"], "no row for"),
    ("profile unknown format fp3", PLAN + ["--profile", "{in}/profile-fp3.json", "--sensitivity", "{in}/sens.json",
                                           "-o", "{out}/p.yaml"], "unknown format 'fp3'"),
    ("profile fp8 rows on A100", ["report", "{in}/plan.yaml", "--profile", "{in}/profile-fp8-a100.json", *REPORT_OUT],
     "does not run on A100"),
    ("profile negative launch cost", PLAN + ["--profile", "{in}/profile-neg-launch.json", "--sensitivity",
                                             "{in}/sens.json", "-o", "{out}/p.yaml"], "cannot be negative"),
    ("profile ok row without latency", PLAN + ["--profile", "{in}/profile-ok-without-latency.json", "--sensitivity",
                                               "{in}/sens.json", "-o", "{out}/p.yaml"], "without a latency"),
    ("sensitivity NaN omega", PLAN + ["--profile", "{in}/profile.json", "--sensitivity", "{in}/sens-nan.json",
                                      "-o", "{out}/p.yaml"], "must be finite"),
    ("sensitivity inf omega", PLAN + ["--profile", "{in}/profile.json", "--sensitivity", "{in}/sens-inf.json",
                                      "-o", "{out}/p.yaml"], "must be finite"),
    ("sensitivity negative omega", ["report", "{in}/plan.yaml", "--sensitivity", "{in}/sens-negative.json",
                                    *REPORT_OUT], "cannot be negative"),
    ("sensitivity unknown format", PLAN + ["--profile", "{in}/profile.json", "--sensitivity", "{in}/sens-fp3.json",
                                           "-o", "{out}/p.yaml"], "unknown format 'fp3'"),
    ("plan group in fp3 (report)", ["report", "{in}/plan-fp3.yaml", *REPORT_OUT], "unknown format 'fp3'"),
    ("plan candidate fp3 (quantize)", QUANT + ["--plan", "{in}/plan-fp3-candidate.yaml", "-o", "{out}/q"],
     "unknown format 'fp3'"),
    ("plan half its groups (report)", ["report", "{in}/plan-half-groups.yaml", *REPORT_OUT], "groups are missing"),
    ("plan 105 of 210 layers (report compare)", ["report", "compare", "{in}/plan-half-groups.yaml", *REPORT_OUT],
     "groups are missing"),
    ("plan 105 of 210 layers, totals redone (quantize)", QUANT + ["--plan", "{in}/plan-half-consistent.yaml",
                                                                  "-o", "{out}/q"], "covers 105 of 210"),
    ("plan 105 of 210 layers, totals redone (eval)", EVAL + ["--plan", "{in}/plan-half-consistent.yaml"],
     "covers 105 of 210"),
    ("plan q/k/v split int4_awq|fp8 (report)", ["report", "{in}/plan-split-qkv.yaml", *REPORT_OUT],
     "split across formats"),
    ("plan q/k/v split int4_awq|fp8 (quantize)", QUANT + ["--plan", "{in}/plan-split-qkv.yaml", "-o", "{out}/q"],
     "split across formats"),
    ("plan fp8 on A100 (report)", ["report", "{in}/plan-fp8-a100.yaml", *REPORT_OUT], "does not run on A100"),
    ("plan fp8 on A100 (quantize)", QUANT + ["--plan", "{in}/plan-fp8-a100.yaml", "-o", "{out}/q"],
     "does not run on A100"),
    ("plan NaN omega", ["report", "{in}/plan-nan-omega.yaml", *REPORT_OUT], "must be finite"),
    ("plan negative latency", ["report", "{in}/plan-neg-latency.yaml", *REPORT_OUT], "cannot be negative"),
    ("plan negative budget", ["report", "{in}/plan-neg-budget.yaml", *REPORT_OUT], "cannot be negative"),
    ("plan format edited after the solve", ["report", "{in}/plan-edited-format.yaml", *REPORT_OUT],
     "edited after it was solved"),
    ("plan group size 100", ["report", "{in}/plan-bad-group-size.yaml", *REPORT_OUT], "group_size 100"),
    ("eval NaN perplexity", ["report", "{in}/plan.yaml", "--eval", "{in}/eval-nan.json", *REPORT_OUT],
     "must be finite"),
    ("eval negative perplexity", ["report", "{in}/plan.yaml", "--eval", "{in}/eval-neg.json", *REPORT_OUT],
     "must be positive"),
    # -- numeric options, checked when parsed
    ("profile --launch-cost nan", PROFILE + ["--launch-cost", "nan", "-o", "{out}/p.json"], "finite"),
    ("profile --launch-cost inf", PROFILE + ["--launch-cost", "inf", "-o", "{out}/p.json"], "finite"),
    ("profile --launch-cost -1", PROFILE + ["--launch-cost", "-1", "-o", "{out}/p.json"], "at least 0"),
    ("profile --tokens huge", ["profile", "smollm2-135m", "--gpu", "h100", "--tokens", "16,99999999999",
                               "-o", "{out}/p.json"], "over the limit"),
    ("profile --tokens 0", ["profile", "smollm2-135m", "--gpu", "h100", "--tokens", "0", "-o", "{out}/p.json"],
     "--tokens must be"),
    ("profile --repeats 0", PROFILE + ["--repeats", "0", "-o", "{out}/p.json"], "at least 1"),
    ("profile --warmup -1", PROFILE + ["--warmup", "-1", "-o", "{out}/p.json"], "at least 0"),
    ("profile --seed -1", PROFILE + ["--seed", "-1", "-o", "{out}/p.json"], "at least 0"),
    ("sensitivity --tolerance nan", ["sensitivity", "smollm2-135m", "--method", "hessian", "--tolerance", "nan",
                                     "-o", "{out}/s.json"], "finite"),
    ("sensitivity --tolerance -1", ["sensitivity", "smollm2-135m", "--method", "hessian", "--tolerance", "-1",
                                    "-o", "{out}/s.json"], "tolerance must be between 0 and 1"),
    ("sensitivity --samples 10**12", ["sensitivity", "smollm2-135m", "--method", "hessian", "--samples",
                                      "1000000000000", "-o", "{out}/s.json"], "at most"),
    ("quantize --calib-samples 0", QUANT + ["--plan", "{in}/plan.yaml", "--calib-samples", "0", "-o", "{out}/q"],
     "at least 1"),
    ("quantize --calib-samples 1e9", QUANT + ["--plan", "{in}/plan.yaml", "--calib-samples", "1e9", "-o", "{out}/q"],
     "not an integer"),
    ("quantize --calib-seq-len 10**9", QUANT + ["--plan", "{in}/plan.yaml", "--calib-seq-len", "1000000000",
                                                "-o", "{out}/q"], "at most"),
    ("eval --max-ppl-increase nan", EVAL + ["--plan", "{in}/plan.yaml", "--max-ppl-increase", "nan"], "finite"),
    ("eval --max-ppl-increase inf", EVAL + ["--plan", "{in}/plan.yaml", "--max-ppl-increase", "inf"], "finite"),
    ("eval --windows -1", EVAL + ["--plan", "{in}/plan.yaml", "--windows", "-1"], "at least 0"),
    ("eval --lm-eval mmlu=nan", EVAL + ["--plan", "{in}/plan.yaml", "--lm-eval", "mmlu=nan"], "finite"),
    ("build --tp 0", ["build", "{in}/existing-dir", "--gpu", "h100", "--tp", "0", "-o", "{out}/b"], "at least 1"),
    ("build --max-batch-size -1", ["build", "{in}/existing-dir", "--gpu", "h100", "--max-batch-size", "-1",
                                   "-o", "{out}/b"], "at least 1"),
    ("bench --isl 0", ["bench", "--url", "http://127.0.0.1:9", "--model", "m", "--isl", "0", "-o", "{out}/b"],
     "at least 1"),
    ("bench --startup-timeout nan", ["bench", "--url", "http://127.0.0.1:9", "--model", "m", "--startup-timeout",
                                     "nan", "-o", "{out}/b"], "finite"),
    ("bench ingest --concurrency 0", ["bench", "ingest", "{in}/existing-dir", "--concurrency", "0",
                                      "-o", "{out}/t.csv"], "at least 1"),
    ("report compare --fraction nan", ["report", "compare", "{in}/plan.yaml", "--fraction", "nan", *REPORT_OUT],
     "finite"),
    ("report compare --quality-bound -1", ["report", "compare", "{in}/plan.yaml", "--quality-bound", "-1",
                                           *REPORT_OUT], "at least 0"),
    ("demo --pareto -3", ["demo", "--pareto", "-3", "-o", "{out}/demo", "--report", "{out}/d.html"], "at least 2"),
    ("demo --budget decode@16 (malformed)", ["demo", "--budget", "decode@16", "-o", "{out}/demo",
                                              "--report", "{out}/d.html"], "bad budget 'decode@16'"),
    ("plan --slo without --workload", PLAN + ["--profile", "{in}/profile.json", "--sensitivity", "{in}/sens.json",
                                              "--slo", "ttft=500ms", "-o", "{out}/p.yaml"], "--slo needs --workload"),
    ("plan --workload concurrency=0", PLAN + ["--profile", "{in}/profile.json", "--sensitivity", "{in}/sens.json",
                                              "--workload", "isl=2048,osl=256,concurrency=0", "-o", "{out}/p.yaml"],
     "concurrency must be >= 1"),
    ("plan --workload isl=-1", PLAN + ["--profile", "{in}/profile.json", "--sensitivity", "{in}/sens.json",
                                       "--workload", "isl=-1,osl=256", "-o", "{out}/p.yaml"], "isl must be >= 1"),
    ("plan --workload isl=x", PLAN + ["--profile", "{in}/profile.json", "--sensitivity", "{in}/sens.json",
                                      "--workload", "isl=x,osl=256", "-o", "{out}/p.yaml"], "must be an integer"),
    ("plan --workload missing file", PLAN + ["--profile", "{in}/profile.json", "--sensitivity", "{in}/sens.json",
                                             "--workload", "{in}/no-such-workload.yaml", "-o", "{out}/p.yaml"],
     "does not exist"),
    ("plan --slo ttft=-5ms", PLAN + ["--profile", "{in}/profile.json", "--sensitivity", "{in}/sens.json",
                                     "--workload", "isl=2048,osl=256", "--slo", "ttft=-5ms", "-o", "{out}/p.yaml"],
     "positive finite"),
    ("plan --slo latency=5ms", PLAN + ["--profile", "{in}/profile.json", "--sensitivity", "{in}/sens.json",
                                       "--workload", "isl=2048,osl=256", "--slo", "latency=5ms", "-o", "{out}/p.yaml"],
     "bad --slo 'latency=5ms'"),
    ("plan --slo ttft=nan", PLAN + ["--profile", "{in}/profile.json", "--sensitivity", "{in}/sens.json",
                                    "--workload", "isl=2048,osl=256", "--slo", "ttft=nan", "-o", "{out}/p.yaml"],
     "bad --slo 'ttft=nan'"),
    ("plan --kv-formats fp3", PLAN + ["--profile", "{in}/profile.json", "--sensitivity", "{in}/sens.json",
                                      "--workload", "isl=2048,osl=256", "--kv-formats", "fp3", "-o", "{out}/p.yaml"],
     "unknown KV-cache format 'fp3'"),
    ("plan --kv-formats nvfp4 on H100", PLAN + ["--profile", "{in}/profile.json", "--sensitivity",
                                                "{in}/sens.json", "--workload", "isl=2048,osl=256", "--kv-formats",
                                                "nvfp4", "-o", "{out}/p.yaml"], "nvfp4 KV cache is not supported"),
    ("plan --kv-formats fp8 not measured", PLAN + ["--profile", "{in}/profile.json", "--sensitivity",
                                                   "{in}/sens.json", "--workload", "isl=2048,osl=256", "--kv-formats",
                                                   "fp8", "-o", "{out}/p.yaml"], "no KV-cache Omega for fp8"),
    ("plan --tp 0 with a workload", PLAN + ["--profile", "{in}/profile.json", "--sensitivity", "{in}/sens.json",
                                            "--workload", "isl=2048,osl=256", "--tp", "0", "-o", "{out}/p.yaml"],
     "--tp must be"),
    ("compare --price H100=abc", ["compare", "smollm2-135m", "--gpu", "h100", "--profile", "h100={in}/profile.json",
                                  "--sensitivity", "{in}/sens.json", "--workload", "isl=2048,osl=256", "--price",
                                  "H100=abc"], "is not a number"),
    ("compare --profile without GPU=", ["compare", "smollm2-135m", "--gpu", "h100", "--profile", "{in}/profile.json",
                                        "--sensitivity", "{in}/sens.json", "--workload", "isl=2048,osl=256"],
     "expected GPU=FILE"),
    ("compare --profile twice for a GPU", ["compare", "smollm2-135m", "--gpu", "h100", "--profile",
                                          "h100={in}/profile.json", "--profile", "H100-SXM={in}/profile.json",
                                          "--sensitivity", "{in}/sens.json", "--workload", "isl=2048,osl=256"],
     "H100-SXM is given twice"),
    ("compare no profile for a GPU", ["compare", "smollm2-135m", "--gpu", "b200", "--profile", "h100={in}/profile.json",
                                      "--sensitivity", "{in}/sens.json", "--workload", "isl=2048,osl=256"],
     "no --profile for B200"),
    ("compare --workload osl=1", ["compare", "smollm2-135m", "--gpu", "h100", "--profile", "h100={in}/profile.json",
                                  "--sensitivity", "{in}/sens.json", "--workload", "isl=2048,osl=1"], "osl must be >= 2"),
    ("config num_hidden_layers: 1e9", ["layers", "{in}/cfg-layers-float"], "num_hidden_layers must be an integer"),
    ("config num_hidden_layers: 10**9", ["layers", "{in}/cfg-layers-huge"], "outside 1..4096"),
    ("config num_hidden_layers: -1", ["layers", "{in}/cfg-layers-negative"], "outside 1..4096"),
    ("unknown Hub id", ["layers", "made-up-org/made-up-model-3f9c2"], "made-up-org/made-up-model-3f9c2"),
    # -- commands and options that landed after the table was first written (second adversarial pass)
    ("predict --workload with isl twice", ["predict", "llama-3.1-8b", "--uniform", "fp8", "--gpu", "h100",
                                           "--workload", "isl=128,osl=64,isl=4096"], "isl is given twice"),
    ("predict a plan for another model", ["predict", "{in}/plan-other-model.yaml", "--workload", "isl=128,osl=64"],
     "quantizable layers of llama-3.1-8b"),
    ("predict config: KV heads do not divide the heads", ["predict", "{in}/cfg-kv-heads-not-dividing", "--uniform",
                                                          "fp8", "--gpu", "h100", "--workload", "isl=128,osl=64"],
     "is not a multiple of num_key_value_heads"),
    ("config: KV heads do not divide the heads", ["layers", "{in}/cfg-kv-heads-not-dividing"],
     "is not a multiple of num_key_value_heads"),
    ("config: heads do not divide hidden_size", ["layers", "{in}/cfg-heads-not-dividing-hidden"],
     "does not divide into num_attention_heads"),
    ("config: pad_token_id outside the vocabulary", ["layers", "{in}/cfg-pad-token-outside-vocab"],
     "is outside the vocabulary"),
    ("config: MoE top-k over the experts", ["layers", "{in}/cfg-mixtral-top-k-over-experts"],
     "more than the 2 routed experts"),
    ("sensitivity --score with --method weight", ["sensitivity", "smollm2-135m", "--method", "weight", "--score",
                                                  "kl_div", "-o", "{out}/s.json"], "--score applies to --method"),
    ("sensitivity --tolerance with --method weight", ["sensitivity", "smollm2-135m", "--method", "weight",
                                                      "--tolerance", "0.1", "-o", "{out}/s.json"],
     "--tolerance applies to --method"),
    ("sensitivity --sequential with --method autoquantize", ["sensitivity", "smollm2-135m", "--method",
                                                             "autoquantize", "--sequential", "-o", "{out}/s.json"],
     "--sequential applies to --method output, weight, fisher or hessian, not autoquantize"),
    ("sensitivity weight --sequential with lm_head", ["sensitivity", "smollm2-135m", "--method", "weight",
                                                      "--sequential", "--include-lm-head", "-o", "{out}/s.json"],
     "drop --include-lm-head"),
    ("quantize --max-shard-size 5XB", QUANT + ["--plan", "{in}/plan.yaml", "--max-shard-size", "5XB",
                                               "-o", "{out}/q"], "not a size: '5XB'"),
    ("quantize --max-shard-size 100 (bytes)", QUANT + ["--plan", "{in}/plan.yaml", "--max-shard-size", "100",
                                                       "-o", "{out}/q"], "greater than or equal to 1048576"),
    ("eval --sequential --lm-eval", EVAL + ["--checkpoint", "{in}/existing-dir", "--sequential", "--lm-eval",
                                            "trtq_devil_definitions"], "drop --sequential or --lm-eval"),
    ("sensitivity --score-batch with --method fisher", ["sensitivity", "smollm2-135m", "--method", "fisher",
                                                        "--score-batch", "2", "-o", "{out}/s.json"],
     "--score-batch applies to --method"),
    ("autoquantize --formats nvfp4 on CPU", ["sensitivity", "smollm2-135m", "--method", "autoquantize", "--formats",
                                             "nvfp4", "-o", "{out}/s.json"], "needs a CUDA GPU"),
    ("autoquantize --formats bf16", ["sensitivity", "smollm2-135m", "--method", "autoquantize", "--formats", "bf16",
                                     "-o", "{out}/s.json"], "nothing for AutoQuantize to score"),
    ("plan in int8_sq under the PyTorch runtime (report)", ["report", "{in}/plan-int8-sq-pytorch.yaml", *REPORT_OUT],
     "not run by the plan's runtime trtllm@1.2"),
    ("plan in int8_sq under the PyTorch runtime (quantize)", QUANT + ["--plan", "{in}/plan-int8-sq-pytorch.yaml",
                                                                     "-o", "{out}/q"],
     "not run by the plan's runtime trtllm@1.2"),
    ("plan naming an unknown runtime (predict)", ["predict", "{in}/plan-unknown-runtime.yaml", "--workload",
                                                  "isl=128,osl=64"], "unknown runtime 'trtllm@9.9'"),
    ("plan --runtime ''", PLAN + ["--profile", "{in}/profile.json", "--sensitivity", "{in}/sens.json",
                                  "--runtime", "", "-o", "{out}/p.yaml"], "empty runtime name"),
    # -- output paths, checked before any work
    ("-o ''", PROFILE + ["-o", ""], "path is empty"),
    ("-o an existing directory", PROFILE + ["-o", "{in}/existing-dir"], "is a directory"),
    ("-o under a file", PROFILE + ["-o", "{in}/a-file/p.json"], "is a file, not a directory"),
    ("-o deep under a file", ["layers", "smollm2-135m", "-o", "{in}/a-file/x/y/l.json"], "is a file, not a directory"),
    ("-o 256-byte name", PROFILE + ["-o", "{out}/" + LONG], "over this file system's limit"),
    ("-o p.parquet for a JSON artifact", PROFILE + ["-o", "{out}/p.parquet"], "writes .json or .yaml"),
    ("plan -o p.parquet", PLAN + ["--profile", "{in}/profile.json", "--sensitivity", "{in}/sens.json",
                                  "-o", "{out}/p.parquet"], "writes .json or .yaml"),
    ("eval -o under a file", EVAL[:-2] + ["--plan", "{in}/plan.yaml", "-o", "{in}/a-file/e.json"], "is a file"),
    ("quantize -o an existing file", QUANT + ["--plan", "{in}/plan.yaml", "-o", "{in}/existing-out"],
     "is not a directory"),
    ("build -o under a file", ["build", "{in}/existing-dir", "--gpu", "h100", "-o", "{in}/a-file/b"], "is a file"),
    ("report -o out.txt", ["report", "{in}/plan.yaml", "-o", "{out}/r.txt"], "writes .html or .htm"),
    ("bench ingest -o under a file", ["bench", "ingest", "{in}/existing-dir", "-o", "{in}/a-file/t.csv"], "is a file"),
    ("demo --report ''", ["demo", "-o", "{out}/demo", "--report", ""], "path is empty"),
    ("-o in a read-only directory", PROFILE + ["-o", "{in}/read-only/p.json"], "permission denied"),
    ("-o missing parent under a read-only directory", PROFILE + ["-o", "{in}/read-only/new/p.json"],
     "permission denied"),
]

NEEDS_NON_ROOT = {"-o in a read-only directory", "-o missing parent under a read-only directory"}
# ModelOpt calibrates NVFP4 on CUDA only: where a GPU is present the run is legitimate, nothing to refuse.
NEEDS_NO_CUDA = {"autoquantize --formats nvfp4 on CPU"}


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("name, argv, needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(inputs, tmp_path, name, argv, needle):
    if name in NEEDS_NON_ROOT and IS_ROOT:
        pytest.skip("running as root, which may write into a 0555 directory: nothing to refuse")
    if name in NEEDS_NO_CUDA:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a CUDA GPU is present: ModelOpt calibrates NVFP4 here, nothing to refuse")
    out = tmp_path / "cwd"
    out.mkdir()
    args = [a.replace("{in}", str(inputs / "in")).replace("{out}", str(out)) for a in argv]
    before = _tree(inputs) | {f"cwd/{p}" for p in _tree(out)}
    try:
        proc = subprocess.run([PYTHON, "-m", "trtq", *args], capture_output=True, text=True, cwd=out,
                              timeout=CASE_TIMEOUT_S, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {CASE_TIMEOUT_S:g} s: the bad input was not refused before the work")
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, f"exit {proc.returncode}; stderr: {proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{proc.stderr[-2000:]}"
    assert lines[0].startswith("trtq: error: ") and needle in lines[0], lines[0]
    after = _tree(inputs) | {f"cwd/{p}" for p in _tree(out)}
    assert after == before, f"wrote {sorted(after - before)}"


# ---------------------------------------------------------------------------- what must work


def test_a_250_character_file_name_is_written(tmp_path):
    """The temporary name beside it must fit NAME_MAX too (it did not: '.NAME.XXXXXXXX.tmp')."""
    from trtq.artifacts import load_artifact, make_metadata, save_artifact
    from trtq.artifacts.sensitivity import Sensitivity

    name = "s" * 245 + ".json"
    sens = Sensitivity.create(metadata=make_metadata(),
                       model="m", method="weight", formats=["bf16"], rows=[])
    path = save_artifact(sens, tmp_path / name)
    assert len(name) == 250 and load_artifact(path, Sensitivity) == sens
    assert os.listdir(tmp_path) == [name]


def test_a_250_character_file_name_through_the_cli(tmp_path):
    name = "l" * 245 + ".json"
    proc = subprocess.run([PYTHON, "-m", "trtq", "layers", "smollm2-135m", "-o", name], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert os.listdir(tmp_path) == [name] and json.loads((tmp_path / name).read_text())["artifact"] == "layers"


def test_temp_files_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    """A writer killed with SIGKILL mid-write leaves its temporary; the next write of that file removes it."""
    target = tmp_path / "plan.yaml"
    script = ("import sys, time\nfrom trtq.artifacts import atomic_path\n"
              f"with atomic_path({str(target)!r}) as tmp:\n"
              "    tmp.write_text('half'); print(tmp, flush=True); time.sleep(600)\n")
    writer = subprocess.Popen([PYTHON, "-c", script], stdout=subprocess.PIPE, text=True)
    temp = Path(writer.stdout.readline().strip())
    assert temp.exists() and temp.parent == tmp_path
    writer.kill()
    writer.wait()
    assert temp.exists(), "SIGKILL runs no cleanup: the temporary is left"

    from trtq.artifacts import atomic_write_text

    atomic_write_text(target, "whole")
    assert target.read_text() == "whole"
    assert os.listdir(tmp_path) == ["plan.yaml"]


def test_temp_files_of_a_running_writer_are_left_alone(tmp_path):
    from trtq.artifacts import atomic_path, atomic_write_text

    target = tmp_path / "plan.yaml"
    with atomic_path(target) as mine:
        mine.write_text("in progress")
        atomic_write_text(target, "another write of the same file by this (live) process")
        assert mine.exists()
    assert target.read_text() == "in progress"


class _Crash(BaseException):
    pass


@pytest.mark.parametrize("crash_at", [1, 2, 3])
def test_report_html_and_json_land_together_or_not_at_all(tmp_path, monkeypatch, crash_at):
    """A crash at each step of the publication leaves no new file beside an old one of the pair."""
    import tests.helpers.synthetic_reports as synthetic
    from trtq.report.model import build_plan_report
    from trtq.report.render import render_plan_report

    (tmp_path / "in").mkdir()
    plan_path = synthetic.write_plans(tmp_path / "in", gpus=("H100-SXM",))[0]
    html = tmp_path / "r.html"
    old = build_plan_report(plan_path)
    old.title = "OLD REPORT"
    render_plan_report(old, html)
    new = build_plan_report(plan_path)
    new.title = "NEW REPORT"

    calls = {"n": 0}
    real_replace, real_unlink = os.replace, Path.unlink

    def step():
        calls["n"] += 1
        if calls["n"] == crash_at:
            raise _Crash()

    def replace(src, dst, *a, **k):
        if Path(dst).parent == tmp_path:
            step()
        return real_replace(src, dst, *a, **k)

    def unlink(self, *a, **k):
        if self == html:
            step()
        return real_unlink(self, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(_Crash):
        render_plan_report(new, html)
    monkeypatch.undo()
    json_path = html.with_suffix(".json")
    json_title = json.loads(json_path.read_text())["title"] if json_path.exists() else None
    html_title = ("NEW REPORT" if "NEW REPORT" in html.read_text() else "OLD REPORT") if html.exists() else None
    assert html_title is None or html_title == json_title, (html_title, json_title)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) in (["r.html", "r.json"], ["r.json"])


def test_quantize_output_directory_is_never_missing(tmp_path, monkeypatch):
    """Replacing engines/NAME/: at every rename the output path holds the old tree or the new one."""
    from trtq.artifacts.paths import make_temp_beside, replace_directory

    target = tmp_path / "engines" / "NAME"
    target.mkdir(parents=True)
    (target / "marker").write_text("old")
    new = make_temp_beside(target, directory=True)
    (new / "marker").write_text("new")
    seen = []
    real_replace = os.replace

    def replace(src, dst, *a, **k):
        result = real_replace(src, dst, *a, **k)
        seen.append(target.exists())
        return result

    monkeypatch.setattr(os, "replace", replace)
    how = replace_directory(new, target)
    assert all(seen), "a moment with nothing at the output path"
    assert (target / "marker").read_text() == "new"
    assert os.listdir(target.parent) == ["NAME"]
    assert how in ("exchange", "two renames")
    if sys.platform == "linux":
        assert how == "exchange"


def test_quantize_export_uses_the_atomic_swap():
    import inspect

    from trtq.quantize import apply

    source = inspect.getsource(apply.export_checkpoint)
    assert "replace_directory(work, target)" in source and "os.replace(target" not in source


def test_layers_artifact_validator_refuses_a_broken_graph(smollm2_graph, tmp_path):
    """No command reads a layers file yet; the validator is there for the one that will."""
    from trtq.artifacts import load_artifact, save_artifact
    from trtq.artifacts.layers import LayerGraph
    from trtq.errors import ArtifactError

    path = save_artifact(smollm2_graph, tmp_path / "layers.json")
    assert load_artifact(path, LayerGraph) == smollm2_graph
    data = json.loads(path.read_text())
    cases = {
        "negative width": (lambda d: d["layers"][0].update(in_features=-576), "must be positive"),
        "group member unknown": (lambda d: d["groups"][0]["members"].append("model.nope"), "not a listed layer"),
        "layer in no group": (lambda d: d["groups"].pop(), "is in no group"),
        "fused width wrong": (lambda d: d["groups"][0].update(out_features=1), "not its members' sum"),
    }
    for name, (fn, needle) in cases.items():
        bad = tmp_path / f"{name}.json"
        bad.write_text(json.dumps(_edit(data, fn)))
        with pytest.raises(ArtifactError) as err:
            load_artifact(bad, LayerGraph)
        assert needle in str(err.value) and str(bad) in str(err.value) and "\n" not in str(err.value), name


def test_check_output_path_refuses_a_read_only_directory(tmp_path, monkeypatch):
    """The same refusal as the CLI rows above, where this process (root) could write anyway."""
    from trtq.artifacts.paths import check_output_path
    from trtq.errors import InputError

    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == ro else real_access(p, mode, **k))
    for target in (ro / "p.json", ro / "missing" / "deeper" / "p.json"):
        with pytest.raises(InputError, match="permission denied"):
            check_output_path(target)


def test_build_record_validator_refuses_formats_the_gpu_cannot_run(tmp_path):
    """`trtq bench --engine` reads build_record.json through the loader: its GPU and formats are checked."""
    from trtq.artifacts import load_artifact, make_metadata, save_artifact
    from trtq.artifacts.build import BuildRecord, CheckpointSummary
    from trtq.errors import ArtifactError

    record = BuildRecord.create(
        metadata=make_metadata(),
        backend="pytorch", runtime="trtllm@1.2", status="prepared", gpu="H100-SXM", gpu_sm=90, tp_size=1, pp_size=1,
        checkpoint=CheckpointSummary(path="engines/x", hf_dir="engines/x/hf", trtllm_dir=None, architecture=None,
                                     dtype="bfloat16", quant_algo="FP8", kv_cache_quant_algo=None, formats=["fp8"],
                                     tp_size=1, pp_size=1),
        model_dir="engines/x/hf", serve_command=["trtllm-serve", "engines/x/hf"],
    )
    path = save_artifact(record, tmp_path / "build_record.json")
    assert load_artifact(path, BuildRecord) == record
    data = json.loads(path.read_text())
    cases = {
        "fp8 on A100": (lambda d: d.update(gpu="A100-SXM-80GB"), "does not run on A100"),
        "unknown GPU": (lambda d: d.update(gpu="V100"), "unknown GPU 'V100'"),
        "unknown format": (lambda d: d["checkpoint"]["formats"].append("fp3"), "unknown format 'fp3'"),
        "tp 0": (lambda d: d.update(tp_size=0), "tp_size"),
        "NaN wall time": (lambda d: d.update(wall_s=math.nan), "must be finite"),
    }
    for name, (fn, needle) in cases.items():
        bad = tmp_path / f"{name}.json"
        bad.write_text(json.dumps(_edit(data, fn)))
        with pytest.raises(ArtifactError) as err:
            load_artifact(bad, BuildRecord)
        assert needle in str(err.value) and str(bad) in str(err.value) and "\n" not in str(err.value), name
