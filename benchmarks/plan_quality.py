"""Plan quality on SmolLM2-135M: trtq's latency-budgeted plans against ModelOpt AutoQuantize and uniform formats.

    .venv/bin/python benchmarks/plan_quality.py [--points 7] [--calib-samples 16] [--eval-windows 32]

Budgets are planned against the H100 roofline's *kernel* time (launch cost 0, recorded in the
profile's metadata): with the fixed launch term every SmolLM2 GEMM costs about the same and every
plan lands within a few percent of bf16, which says nothing about planners. Without it SmolLM2's
layers keep the proportions of a Llama's.

Two latency budgets at once, decode@16 and prefill@2048, each the same fraction of all-bf16,
swept from the fastest feasible fraction to 1.0. At each budget, perplexity on the shipped
evaluation text after ModelOpt fake quantization (trtq.quantize.apply.quantize_model, same
calibration windows for every plan) of:
  1. trtq's plan with Hessian sensitivity,  2. trtq's plan with weight sensitivity,
  3. mtq.auto_quantize (same formats, calibration and scoring windows, lm_head disabled), its
     effective_bits searched (grid, then bisection) for the largest value whose plan meets both budgets under the same
     profile (the plan read back per layer and costed with trtq.plan.costs like trtq's own),
  4. the best uniform format that meets both budgets.

Every expensive intermediate is cached under ~/.cache/trtq/bench/plan_quality (TRTQ_CACHE moves
it): a re-run only re-prints. Results go to benchmarks/RESULTS.md, section `## plan_quality`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as _dt
import hashlib
import io
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trtq.artifacts import load_artifact, save_artifact  # noqa: E402
from trtq.artifacts.io import atomic_write_text  # noqa: E402
from trtq.artifacts.profile import Profile  # noqa: E402
from trtq.artifacts.sensitivity import Sensitivity  # noqa: E402
from trtq.model.zoo import cache_dir  # noqa: E402

MODEL = "smollm2-135m"
GPU = "h100"
FORMATS = "bf16,fp8,int8_sq,int4_awq,w4a8_awq"
POINTS = {"decode@16": 16, "prefill@2048": 2048}
BUDGET_SPECS = ["decode@16=1.0", "prefill@2048=1.0"]  # limits are replaced by fraction x all-bf16
METHODS = ("trtq-hessian", "trtq-fisher", "trtq-weight", "autoquantize", "uniform")
RESULTS = REPO / "benchmarks" / "RESULTS.md"
SECTION = "## plan_quality"
ANALYSIS = "### plan_quality: analysis"
# Perplexities within this relative tolerance count as a tie (identical plans give identical numbers).
TIE = 1e-3


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


@contextlib.contextmanager
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(io.StringIO()):
            yield


class Bench:
    def __init__(self, args):
        self.args = args
        self.cache = Path(args.cache) if args.cache else cache_dir() / "bench" / "plan_quality"
        self.cache.mkdir(parents=True, exist_ok=True)
        self._model = self._tokenizer = None
        from trtq.model.layers import build_layer_graph
        from trtq.model.zoo import resolve_model

        self.resolved = resolve_model(MODEL)
        self.graph = build_layer_graph(self.resolved)
        self.key = {"calib": [args.calib_samples, args.seq_len, args.seed], "score_batch": args.score_batch,
                    "eval": [args.eval_windows, args.seq_len]}

    # --- inputs ---------------------------------------------------------------------------
    def model(self):
        if self._model is None:
            from trtq.model.zoo import load_pretrained

            self._model, self._tokenizer = load_pretrained(self.resolved)
        return self._model

    def tokenizer(self):
        self.model()
        return self._tokenizer

    def calib_batches(self):
        from trtq.data import calibration_text, token_batches

        return token_batches(self.tokenizer(), calibration_text(), self.args.calib_samples, self.args.seq_len,
                             self.args.seed)

    def eval_windows(self):
        from trtq.data import evaluation_text, token_windows

        return token_windows(self.tokenizer(), evaluation_text(), self.args.seq_len, self.args.eval_windows)

    def profile(self) -> Profile:
        path = self.cache / "profile_h100_roofline_launch0.json"
        if not path.is_file():
            from trtq.profile.api import build_profile

            save_artifact(build_profile(self.graph, "roofline", GPU, sorted(POINTS.values()), FORMATS,
                                        launch_cost_ns=0.0), path)
        return load_artifact(path, Profile)

    def weight_sensitivity(self) -> Sensitivity:
        path = self.cache / f"sensitivity_weight_v{Sensitivity.SCHEMA_VERSION}.json"
        if not path.is_file():
            from trtq.sensitivity.api import weight_sensitivity

            save_artifact(weight_sensitivity(MODEL, FORMATS, model=self.model()), path)
        return load_artifact(path, Sensitivity)

    def sensitivity_stem(self, method: str) -> str:
        settings = self.key["calib"] + ([self.args.hessian_probes] if method == "hessian" else [])
        return f"sensitivity_{method}_v{Sensitivity.SCHEMA_VERSION}_{sha(settings)}"

    def timed_sensitivity(self, method: str) -> tuple[Sensitivity, dict]:
        """trtq's `method` sensitivity on the calibration windows and its timing (model already loaded)."""
        from trtq.sensitivity import api

        stem = self.sensitivity_stem(method)
        path, timing = self.cache / f"{stem}.json", self.cache / f"{stem}.time.json"
        if not path.is_file() or not timing.is_file():
            model, tokenizer, batches = self.model(), self.tokenizer(), self.calib_batches()
            log(f"{method} sensitivity on {tuple(batches.shape)} tokens ...")
            started = time.perf_counter()
            # The same windows as calib_batches(): token_batches of the shipped text, same size and seed.
            if method == "hessian":
                table = api.hessian_sensitivity(MODEL, self.args.calib_samples, self.args.seq_len, self.args.seed,
                                                model=model, tokenizer=tokenizer, formats=FORMATS,
                                                max_iterations=self.args.hessian_probes)
            else:
                table = api.fisher_sensitivity(MODEL, self.args.calib_samples, self.args.seq_len, self.args.seed,
                                               model=model, tokenizer=tokenizer, formats=FORMATS)
            seconds = time.perf_counter() - started
            if path.is_file() and load_artifact(path, Sensitivity).rows != table.rows:
                raise SystemExit(f"{method} sensitivity differs from the cached {path}: not deterministic")
            save_artifact(table, path)
            write_json(timing, {"seconds": seconds, "tokens": int(batches.numel()), "loadavg": os.getloadavg()})
            log(f"{method} sensitivity: {seconds:.0f} s")
        return load_artifact(path, Sensitivity), read_json(timing)

    def forget_timings(self) -> None:
        """--retime: measure trtq's two scorings and AutoQuantize's again, one after another in this run."""
        for method in ("hessian", "fisher"):
            (self.cache / f"{self.sensitivity_stem(method)}.time.json").unlink(missing_ok=True)
        ckpt = self.autoquantize_checkpoint()
        ckpt.unlink(missing_ok=True)
        ckpt.with_suffix(".time.json").unlink(missing_ok=True)

    # --- AutoQuantize -----------------------------------------------------------------------
    def autoquantize_formats(self):
        """ModelOpt configs for the four quantized formats, INT4 blocks of `group_size`."""
        from trtq.quantize.quant_cfg import _preset, _with_group_size
        from trtq.registry import get_format

        def config(name, group_size):
            cfg = _preset(get_format(name))
            if group_size:
                for entry in cfg["quant_cfg"]:
                    if entry.get("quantizer_name") == "*weight_quantizer":
                        entry["cfg"] = _with_group_size(entry["cfg"], group_size)
            return cfg

        everywhere = [config("fp8", None), config("int8_sq", None), config("int4_awq", 64), config("w4a8_awq", 64)]
        down = [config("fp8", None), config("int8_sq", None), config("int4_awq", 128), config("w4a8_awq", 128)]
        return everywhere, down

    def autoquantize_checkpoint(self) -> Path:
        return self.cache / f"autoquantize_{sha(self.key['calib'] + [self.key['score_batch']])}.pth"

    def autoquantize_state(self) -> tuple[dict, dict]:
        """AutoQuantize's search state (scores of every layer group x format) and its timings."""
        from modelopt.torch.utils import safe_load

        ckpt = self.autoquantize_checkpoint()
        timing = ckpt.with_suffix(".time.json")
        if not ckpt.is_file() or not timing.is_file():
            ckpt.unlink(missing_ok=True)
            self._run_autoquantize(ckpt, timing)
        return safe_load(str(ckpt)), read_json(timing)

    def _run_autoquantize(self, ckpt: Path, timing: Path) -> None:
        import modelopt.torch.quantization as mtq
        from modelopt.torch.quantization import algorithms

        batches = self.calib_batches()
        loader = [batches[i:i + self.args.score_batch] for i in range(0, batches.shape[0], self.args.score_batch)]
        everywhere, down = self.autoquantize_formats()
        searcher_cls = algorithms.AutoQuantizeGradientSearcher
        original = searcher_cls.estimate_sensitivity_scores
        spent = {}

        def timed(self_, *a, **k):
            started = time.perf_counter()
            try:
                return original(self_, *a, **k)
            finally:
                spent["scoring"] = time.perf_counter() - started

        model = copy.deepcopy(self.model())
        log(f"AutoQuantize: {len(loader)} calibration and scoring batches of {tuple(loader[0].shape)} ...")
        searcher_cls.estimate_sensitivity_scores = timed
        started = time.perf_counter()
        try:
            with quiet():
                mtq.auto_quantize(
                    model,
                    constraints={"effective_bits": 8.0},
                    quantization_formats=everywhere,
                    module_search_spaces=[{"module_name_patterns": ["*down_proj*"], "quantization_formats": down}],
                    data_loader=loader,
                    forward_step=lambda m, batch: m(input_ids=batch, labels=batch),
                    loss_func=lambda output, batch: output.loss,
                    disabled_layers=["*lm_head*"],
                    num_calib_steps=len(loader),
                    num_score_steps=len(loader),
                    method="gradient",
                    checkpoint=str(ckpt),
                )
        finally:
            searcher_cls.estimate_sensitivity_scores = original
        total = time.perf_counter() - started
        write_json(timing, {"total_seconds": total, "scoring_seconds": spent.get("scoring", float("nan")),
                            "tokens": int(batches.numel()), "loadavg": os.getloadavg()})
        log(f"AutoQuantize: {total:.0f} s in all, scoring {spent.get('scoring', float('nan')):.0f} s")
        del model

    @staticmethod
    def recipe_format(recipe) -> str:
        """trtq format of an AutoQuantize recipe, from its weight/input quantizer settings."""
        weight = inp = None
        for entry in recipe.config.quant_cfg:
            name = entry["quantizer_name"]
            if name == "*weight_quantizer":
                weight = entry if entry.get("enable", True) and entry.get("cfg") is not None else None
            elif name == "*input_quantizer":
                inp = entry if entry.get("enable", True) and entry.get("cfg") is not None else None
        if weight is None:
            return "bf16"
        cfg = weight["cfg"]
        first = cfg[0] if isinstance(cfg, list) else cfg
        bits = first["num_bits"] if isinstance(first, dict) else first.num_bits
        if isinstance(cfg, list) and len(cfg) > 1:
            return "w4a8_awq"
        if bits == 4:
            return "int4_awq" if inp is None else "w4a8_awq"
        if bits == 8:
            return "int8_sq"
        if tuple(bits) == (4, 3):
            return "fp8"
        raise ValueError(f"unmapped AutoQuantize recipe {recipe}")

    def autoquantize_assignment(self, state: dict, effective_bits: float) -> dict[str, str]:
        from modelopt.torch.quantization.algorithms import _resolve_best_recipe

        with quiet():
            best = _resolve_best_recipe(state, {"effective_bits": effective_bits})
        layer_formats: dict[str, str] = {}
        for hparam, recipe in best.items():
            fmt = self.recipe_format(recipe)
            for module in state["candidate_stats"][hparam]["module_names"]:
                layer_formats[module] = fmt
        return layer_formats

    # --- evaluation ----------------------------------------------------------------------------
    def assignment(self, costs, choice) -> dict[str, tuple[str, int | None]]:
        out = {}
        for g, group in enumerate(costs.groups):
            f = int(choice[g])
            for member in group.members:
                out[member] = (costs.formats[f], costs.group_sizes[g][f])
        return out

    def perplexity(self, assignment: dict[str, tuple[str, int | None]]) -> dict:
        key = sha({"assignment": sorted(assignment.items()), **self.key})
        path = self.cache / "ppl" / f"{key}.json"
        cached = read_json(path)
        if cached is not None:
            return cached
        from trtq.quantize.apply import quantize_model

        model = copy.deepcopy(self.model())
        started = time.perf_counter()
        if any(fmt != "bf16" for fmt, _ in assignment.values()):
            with quiet():
                quantize_model(model, assignment, self.calib_batches(), batch_size=self.args.calib_batch)
        quantize_s = time.perf_counter() - started
        started = time.perf_counter()
        ppl = perplexity(model, self.eval_windows(), self.args.eval_batch)
        result = {"perplexity": ppl, "quantize_seconds": quantize_s, "eval_seconds": time.perf_counter() - started}
        write_json(path, result)
        del model
        return result


def perplexity(model, windows, batch_size: int) -> float:
    """exp(mean next-token NLL) over the windows; trtq.eval's when that module is installed."""
    try:
        from trtq.eval.perplexity import perplexity_of_windows  # the eval stage's, when it lands
    except ImportError:
        perplexity_of_windows = None
    if perplexity_of_windows is not None:
        return float(perplexity_of_windows(model, windows, batch_size=batch_size))
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, windows.shape[0], batch_size):
            batch = windows[start:start + batch_size]
            logits = model(input_ids=batch).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1),
                                                    reduction="sum")
            total += float(nll)
            count += batch[:, 1:].numel()
    return math.exp(total / count)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=6, help="budget fractions, fastest feasible to 1.0")
    parser.add_argument("--calib-samples", type=int, default=8, help="calibration = scoring windows")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--score-batch", type=int, default=4, help="windows per AutoQuantize step")
    parser.add_argument("--calib-batch", type=int, default=8, help="windows per calibration forward")
    parser.add_argument("--eval-windows", type=int, default=32, help="evaluation windows of --seq-len tokens")
    parser.add_argument("--eval-batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bisect-steps", type=int, default=8, help="AutoQuantize effective_bits bisection steps")
    parser.add_argument("--aq-grid-step", type=float, default=0.5,
                        help="AutoQuantize effective_bits grid, 16 down to 6, scanned before bisecting")
    parser.add_argument("--cache", help="cache directory (default ~/.cache/trtq/bench/plan_quality)")
    parser.add_argument("--no-record", action="store_true", help="print only; leave RESULTS.md alone")
    from trtq.sensitivity.hessian import DEFAULT_MAX_ITERATIONS

    parser.add_argument("--hessian-probes", type=int, default=DEFAULT_MAX_ITERATIONS,
                        help=f"most Hutchinson probes of trtq's Hessian sensitivity (default {DEFAULT_MAX_ITERATIONS}, "
                             "the library's)")
    parser.add_argument("--retime", action="store_true",
                        help="re-measure the Hessian, Fisher and AutoQuantize scoring times side by side in this "
                             "run (AutoQuantize runs again: about 20 minutes on 2 cores); tables must come out the same")
    args = parser.parse_args(argv)
    if args.points < 2:
        parser.error("--points must be at least 2")

    from trtq.plan.api import problem_for
    from trtq.plan.budgets import parse_budgets
    from trtq.plan.costs import build_cost_model
    from trtq.plan.ilp import min_common_scale, solve
    from trtq.registry import parse_formats

    bench = Bench(args)
    if args.retime:
        bench.forget_timings()
    profile = bench.profile()
    formats = parse_formats(FORMATS)
    budgets = parse_budgets(BUDGET_SPECS)
    log("weight sensitivity ...")
    weight = bench.weight_sensitivity()
    aq_state, aq_timing = bench.autoquantize_state()
    costs = {"trtq-weight": build_cost_model(bench.graph, profile, weight, formats, POINTS)}
    hessian, hessian_timing = bench.timed_sensitivity("hessian")
    costs["trtq-hessian"] = build_cost_model(bench.graph, profile, hessian, formats, POINTS)
    fisher, fisher_timing = bench.timed_sensitivity("fisher")
    costs["trtq-fisher"] = build_cost_model(bench.graph, profile, fisher, formats, POINTS)
    reference = costs["trtq-weight"]  # latency and bytes do not depend on the sensitivity
    bf16_ns = {p: float(reference.latency[p][:, reference.bf16_index()].sum()) for p in POINTS}
    problem, _ = problem_for(reference, budgets, None, scale=1.0)
    t_min = min_common_scale(problem, [0, 1])
    fractions = [float(t) for t in np.linspace(t_min, 1.0, args.points)]
    log(f"fastest feasible common fraction {t_min:.4f}; budgets {', '.join(f'{t:.3f}' for t in fractions)}")

    def totals_of(layer_formats: dict[str, str]):
        return reference.totals(reference.choice_of(layer_formats))

    def meets(totals, fraction) -> bool:
        return all(totals.latency_ns[p] <= fraction * bf16_ns[p] * (1 + 1e-9) for p in POINTS)

    uniform = {}
    for fmt in reference.formats:
        layer_formats = {m: fmt for g in reference.groups for m in g.members}
        with contextlib.suppress(Exception):
            uniform[fmt] = (layer_formats, totals_of(layer_formats))

    aq_cache: dict[float, dict[str, str]] = {}

    def aq_plan(bits: float) -> dict[str, str]:
        bits = round(bits, 4)
        if bits not in aq_cache:
            aq_cache[bits] = bench.autoquantize_assignment(aq_state, bits)
        return aq_cache[bits]

    rows = []
    for fraction in fractions:
        scale = fraction * (1 + 1e-12)
        row = {"fraction": fraction, "plans": {}}
        for method in costs:
            p, _ = problem_for(costs[method], budgets, None, scale=scale)
            sol = solve(p)
            if sol.feasible:
                row["plans"][method] = bench.assignment(costs[method], sol.choice)
        # AutoQuantize: the largest effective_bits target whose plan meets both budgets. The set of
        # targets that meet them need not reach down to the lowest target (low-bit plans pick
        # INT4-AWQ, which misses prefill), so scan a grid from 16 bits down, then bisect between the
        # first target that meets the budgets and the grid point above it.
        grid = [16.0 - args.aq_grid_step * i for i in range(int(10.0 / args.aq_grid_step) + 1)]
        best_bits = next((bits for bits in grid if meets(totals_of(aq_plan(bits)), fraction)), None)
        if best_bits is not None and best_bits < 16.0:
            low, high = best_bits, best_bits + args.aq_grid_step
            for _ in range(args.bisect_steps):
                mid = (low + high) / 2
                if meets(totals_of(aq_plan(mid)), fraction):
                    low = mid
                else:
                    high = mid
            best_bits = low
        if best_bits is not None:
            layer_formats = aq_plan(best_bits)
            row["autoquantize_bits"] = best_bits
            row["plans"]["autoquantize"] = {
                m: (f, reference.group_sizes[g][reference.formats.index(f)])
                for g, group in enumerate(reference.groups) for m in group.members
                for f in [layer_formats.get(m, "bf16")]
            }
        candidates = [(fmt, lf) for fmt, (lf, tot) in uniform.items() if meets(tot, fraction)]
        row["uniform_candidates"] = [fmt for fmt, _ in candidates]
        rows.append(row)

    # perplexities: unique assignments only, each cached
    for fmt, (layer_formats, _) in uniform.items():
        choice = reference.choice_of(layer_formats)
        assignment = bench.assignment(reference, choice)
        log(f"uniform {fmt} ...")
        uniform[fmt] = (layer_formats, totals_of(layer_formats), bench.perplexity(assignment)["perplexity"])
    for row in rows:
        for method, assignment in sorted(row["plans"].items(), key=lambda kv: kv[0] == "trtq-hessian"):
            log(f"fraction {row['fraction']:.3f}: {method} ...")
            result = bench.perplexity(assignment)
            layer_formats = {m: f for m, (f, _) in assignment.items()}
            row.setdefault("results", {})[method] = {"perplexity": result["perplexity"], "totals": totals_of(layer_formats)}
        if row["uniform_candidates"]:
            fmt = min(row["uniform_candidates"], key=lambda f: uniform[f][2])
            row["uniform_format"] = fmt
            row.setdefault("results", {})["uniform"] = {"perplexity": uniform[fmt][2], "totals": uniform[fmt][1]}

    report = render(rows, fractions, t_min, bf16_ns, uniform, hessian_timing, aq_timing, args, profile,
                    fisher_timing)
    print(report)
    if not args.no_record:
        record(report)
    return 0


def compare(ours: float | None, theirs: float | None) -> tuple[bool, bool]:
    """(not worse, strictly better) of trtq-hessian against another method at one budget.

    A method with no plan meeting the budget loses to one that has a plan.
    """
    if ours is None:
        return theirs is None, False
    if theirs is None:
        return True, True
    return ours <= theirs * (1 + TIE), ours < theirs * (1 - TIE)


def render(rows, fractions, t_min, bf16_ns, uniform, hessian_timing, aq_timing, args, profile,
           fisher_timing) -> str:
    from trtq.console import fmt_bytes, fmt_ns

    lines = []
    lines.append(f"Date {_dt.date.today().isoformat()}; machine: {os.cpu_count()}-core CPU, no GPU; ModelOpt fake "
                 f"quantization on CPU; run at {_dt.datetime.now().isoformat(timespec='minutes')}.")
    lines.append(
        f"Model {MODEL}; latency from the {GPU.upper()} roofline profile with launch cost "
        f"{profile.launch_cost_ns:g} ns (kernel time only: with the launch term every SmolLM2 GEMM costs about "
        "the same and every plan lands within a few percent of bf16; without it the layers keep a Llama's "
        "proportions). Formats: " + FORMATS + " (INT4 group 64 where 128 does not divide the input width)."
    )
    lines.append(
        f"Budgets: decode@16 and prefill@2048 at the same fraction of all-bf16 GEMM time "
        f"(all-bf16: decode@16 {fmt_ns(bf16_ns['decode@16'])}, prefill@2048 {fmt_ns(bf16_ns['prefill@2048'])}); "
        f"fastest feasible fraction {t_min:.4f}. Calibration and scoring: {args.calib_samples} x {args.seq_len} "
        f"tokens of the shipped calibration text (seed {args.seed}), the same windows for every plan, for trtq's "
        f"Hessian and for AutoQuantize (gradient method, {args.score_batch} windows per step, lm_head disabled). "
        f"Perplexity: {args.eval_windows} x {args.seq_len} tokens of the shipped evaluation text."
    )
    lines.append("")
    header = ["budget", "method", "decode@16", "prefill@2048", "weights", "ppl", "note"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    counts = {"aq_not_worse": 0, "aq_better": 0, "uniform_not_worse": 0,
              "fisher_aq_not_worse": 0, "fisher_aq_better": 0, "fisher_uniform_not_worse": 0}
    for row in rows:
        results = row.get("results", {})
        ppl = {m: results[m]["perplexity"] if m in results else None for m in METHODS}
        finite = {m: v for m, v in ppl.items() if v is not None}
        winner = min(finite, key=finite.get) if finite else "-"
        nw_aq, sb_aq = compare(ppl["trtq-hessian"], ppl["autoquantize"])
        nw_u, _ = compare(ppl["trtq-hessian"], ppl["uniform"])
        counts["aq_not_worse"] += nw_aq
        counts["aq_better"] += sb_aq
        counts["uniform_not_worse"] += nw_u
        nw_faq, sb_faq = compare(ppl["trtq-fisher"], ppl["autoquantize"])
        counts["fisher_aq_not_worse"] += nw_faq
        counts["fisher_aq_better"] += sb_faq
        counts["fisher_uniform_not_worse"] += compare(ppl["trtq-fisher"], ppl["uniform"])[0]
        for method in METHODS:
            if method not in results:
                lines.append(f"| {row['fraction']:.3f} | {method} | - | - | - | - | no plan meets the budget |")
                continue
            tot = results[method]["totals"]
            note = []
            if method == "autoquantize":
                note.append(f"effective_bits {row['autoquantize_bits']:.3f}")
            if method == "uniform":
                note.append(row["uniform_format"])
            if method == winner:
                note.append("**winner**")
            lines.append(
                f"| {row['fraction']:.3f} | {method} | {tot.latency_ns['decode@16'] / bf16_ns['decode@16']:.3f} "
                f"({fmt_ns(tot.latency_ns['decode@16'])}) | "
                f"{tot.latency_ns['prefill@2048'] / bf16_ns['prefill@2048']:.3f} "
                f"({fmt_ns(tot.latency_ns['prefill@2048'])}) | {fmt_bytes(tot.weight_bytes)} | "
                f"{results[method]['perplexity']:.3f} | {', '.join(note)} |"
            )
    lines.append("")
    lines.append("Uniform formats: " + "; ".join(
        f"{fmt} ppl {value[2]:.3f}, decode {value[1].latency_ns['decode@16'] / bf16_ns['decode@16']:.3f}, "
        f"prefill {value[1].latency_ns['prefill@2048'] / bf16_ns['prefill@2048']:.3f}"
        for fmt, value in uniform.items()))
    hessian_seconds, fisher_seconds = hessian_timing["seconds"], fisher_timing["seconds"]
    ratio = hessian_seconds / aq_timing["scoring_seconds"]
    lines.append(
        f"Sensitivity wall time on the same {aq_timing['tokens']} tokens: trtq Hessian {hessian_seconds:.1f} s; "
        f"AutoQuantize scoring {aq_timing['scoring_seconds']:.1f} s (its whole run, with calibrating each of the "
        f"four candidate formats, {aq_timing['total_seconds']:.1f} s); ratio {ratio:.2f}. "
        f"Ties: perplexities within {TIE:.1%}."
    )
    loads = []
    for name, timing in (("Hessian", hessian_timing), ("Fisher", fisher_timing), ("AutoQuantize", aq_timing)):
        if timing and timing.get("loadavg"):
            loads.append(f"{name}: 1/5/15-min load average {'/'.join(f'{x:.1f}' for x in timing['loadavg'])} at its end")
        elif timing and timing.get("load_note"):
            loads.append(f"{name}: {timing['load_note']}")
    if loads:
        lines.append("The 2 cores were shared with other work during these timings; " + "; ".join(loads) + ".")
    lines.append(
        f"trtq-fisher (Fisher-weighted output error of quantized weights and activations, same windows): "
        f"{fisher_seconds:.1f} s; against AutoQuantize not worse at {counts['fisher_aq_not_worse']}, strictly "
        f"better at {counts['fisher_aq_better']}, not worse than uniform at "
        f"{counts['fisher_uniform_not_worse']} of {len(rows)} budgets; time ratio "
        f"{fisher_seconds / aq_timing['scoring_seconds']:.2f}."
    )
    lines.append("")
    lines.append(
        f"budgets={len(rows)} not_worse_than_autoquantize={counts['aq_not_worse']} "
        f"strictly_better_than_autoquantize={counts['aq_better']} "
        f"not_worse_than_uniform={counts['uniform_not_worse']} sensitivity_time_ratio={ratio:.2f}"
    )
    return "\n".join(lines)


def record(report: str) -> None:
    """Replace (or add) the `## plan_quality` section of RESULTS.md, leaving other sections alone."""
    text = RESULTS.read_text() if RESULTS.is_file() else "# Benchmark results\n"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == SECTION), None)
    command = " ".join([".venv/bin/python", "benchmarks/plan_quality.py", *sys.argv[1:]])
    body = [SECTION, "", f"`{command}`", "", *report.splitlines(), ""]
    if start is None:
        new = lines + ([""] if lines and lines[-1].strip() else []) + body
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        # A hand-written analysis under the section survives a re-run.
        keep = next((i for i in range(start, end) if lines[i].strip() == ANALYSIS), None)
        new = lines[:start] + body + (lines[keep:end] if keep is not None else []) + lines[end:]
    atomic_write_text(RESULTS, "\n".join(new).rstrip("\n") + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
