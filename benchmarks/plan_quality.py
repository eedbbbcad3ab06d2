"""Plan quality on SmolLM2-135M: trtq's latency-budgeted plans against ModelOpt AutoQuantize and uniform formats.

    .venv/bin/python benchmarks/plan_quality.py [--points 6] [--eval-text FILE ...] [--profile-backend roofline]

Budgets are planned against the profile's *kernel* time (roofline: launch cost 0, recorded in the
profile's metadata): with the fixed launch term every SmolLM2 GEMM costs about the same and every
plan lands within a few percent of bf16, which says nothing about planners. Without it SmolLM2's
layers keep the proportions of a Llama's. `--profile-backend NAME` builds the profile through
trtq.profile.api with that backend instead.

Two latency budgets at once, decode@16 and prefill@2048, each the same fraction of all-bf16,
swept from the fastest feasible fraction to 1.0. At each budget, after ModelOpt fake quantization
(trtq.quantize.apply.quantize_model, same calibration windows for every plan):
  1. trtq's plan with each planned sensitivity method: Hessian, Fisher, and AutoQuantize's own
     scores (`trtq sensitivity --method autoquantize`, read from the AutoQuantize run of 3),
  2. mtq.auto_quantize (same formats, calibration and scoring windows, lm_head disabled), its
     effective_bits searched (grid, then bisection) for the largest value whose plan meets both
     budgets under the same profile (the plan read back per layer and costed like trtq's own),
  3. the best uniform format that meets both budgets,
  4. (--with-weight) trtq's plan with weight sensitivity.

Every plan is scored on several texts: the shipped evaluation text and the held-out public-domain
texts under benchmarks/texts/ (SOURCES.md there; never used for calibration or for choosing anything),
plus every --eval-text FILE. Each perplexity carries a 95% bootstrap interval over its windows
(seeded). A method is "strictly better" than another only when the intervals separate; overlapping
intervals are ties. The Omega -> perplexity relation (trtq.plan.quality_fit) is fitted per method.

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
import tempfile
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
PLANNED = ("trtq-hessian", "trtq-fisher", "trtq-autoquantize")
# Planned on request (--with-weight, --with-output): weight-only, and the block-local layer-output objective
# (GPTQ's, computed block-sequentially) beside the whole-model Hessian and Fisher.
OPTIONAL = ("trtq-weight", "trtq-output")
METHODS = (*PLANNED, *OPTIONAL, "autoquantize", "uniform")
HELD_OUT_TEXTS = (REPO / "benchmarks" / "texts" / "kjv_genesis.txt", REPO / "benchmarks" / "texts" / "sqlite_docs.txt")
BOOTSTRAP = 2000
RESULTS = REPO / "benchmarks" / "RESULTS.md"
SECTION = "## plan_quality"
ANALYSIS = "### plan_quality: analysis"


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
        self.key = {"calib": [args.calib_samples, args.seq_len, args.seed], "score_batch": args.score_batch}
        self.texts = self.eval_texts(args)

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

    @staticmethod
    def eval_texts(args) -> list[dict]:
        """[{name, path, sha256, text}]: the shipped evaluation text, the held-out texts, then --eval-text files."""
        from trtq.data import EVALUATION_PATH, read_text_file, text_sha256

        texts, seen = [], set()
        for path in [EVALUATION_PATH, *HELD_OUT_TEXTS, *(Path(p) for p in args.eval_text)]:
            text = read_text_file(path)
            digest = text_sha256(text)
            if digest in seen:
                continue
            seen.add(digest)
            name = path.stem if path.stem not in {t["name"] for t in texts} else f"{path.stem}-{digest[:6]}"
            texts.append({"name": name, "path": str(path), "sha256": digest, "text": text})
        return texts

    def eval_windows(self, text: dict):
        from trtq.data import token_windows

        return token_windows(self.tokenizer(), text["text"], self.args.seq_len, self.args.eval_windows)

    def profile(self) -> Profile:
        backend = self.args.profile_backend
        # The roofline is planned on kernel time (launch cost 0, see the docstring); other backends as they come.
        launch = 0.0 if backend == "roofline" else None
        path = self.cache / f"profile_{GPU}_{backend}{'_launch0' if launch == 0.0 else ''}.json"
        if not path.is_file():
            from trtq.profile.api import build_profile

            save_artifact(build_profile(self.graph, backend, GPU, sorted(POINTS.values()), FORMATS,
                                        launch_cost_ns=launch), path)
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
            elif method == "output":  # block-local, so computed as it scales: one block in memory at a time
                with tempfile.TemporaryDirectory() as checkpoint:
                    table = api.output_sensitivity(MODEL, self.args.calib_samples, self.args.seq_len, self.args.seed,
                                                   tokenizer=tokenizer, formats=FORMATS, sequential=True,
                                                   checkpoint_dir=checkpoint)
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
    def autoquantize_checkpoint(self) -> Path:
        return self.cache / f"autoquantize_{sha(self.key['calib'] + [self.key['score_batch'], FORMATS])}.pth"

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
        """trtq.sensitivity.autoquantize.run_autoquantize: mtq.auto_quantize with trtq's formats and group sizes."""
        import torch

        from trtq.registry import parse_formats
        from trtq.sensitivity.autoquantize import run_autoquantize

        batches = self.calib_batches()
        log(f"AutoQuantize: {batches.shape[0] // self.args.score_batch} calibration and scoring steps of "
            f"{self.args.score_batch} x {batches.shape[1]} tokens ...")
        torch.manual_seed(self.args.seed)
        with quiet():
            run = run_autoquantize(self.model(), self.graph, parse_formats(FORMATS), batches, score="gradient",
                                   batch_size=self.args.score_batch, checkpoint=str(ckpt))
        write_json(timing, {"total_seconds": run.seconds, "scoring_seconds": run.scoring_seconds,
                            "tokens": int(batches.numel()), "loadavg": os.getloadavg()})
        log(f"AutoQuantize: {run.seconds:.0f} s in all, scoring {run.scoring_seconds:.0f} s")

    def autoquantize_options(self) -> dict:
        from modelopt.torch.quantization.algorithms import QuantRecipe

        from trtq.registry import parse_formats
        from trtq.sensitivity.autoquantize import search_space

        space = search_space(self.model(), self.graph, parse_formats(FORMATS))
        return {QuantRecipe(cfg, name="x").checkpoint_signature: opt for opt, cfg in space.configs.items()}

    def autoquantize_sensitivity(self, state: dict, timing: dict) -> Sensitivity:
        """trtq's autoquantize table from the same AutoQuantize run the baseline uses (one scoring for both)."""
        import torch

        from trtq.artifacts import make_metadata
        from trtq.registry import parse_formats
        from trtq.sensitivity.autoquantize import AutoQuantizeRun, autoquantize_table_rows
        from trtq.sensitivity.weight import weight_rows

        fmts = parse_formats(FORMATS)
        with torch.no_grad():
            errors = {(r.layer, r.format): r.weight_error for r in weight_rows(self.model(), self.graph, fmts)}
        run = AutoQuantizeRun(state=state, options=self.autoquantize_options(), seconds=timing["total_seconds"],
                              scoring_seconds=timing["scoring_seconds"])
        rows, groups = autoquantize_table_rows(self.graph, fmts, run, errors)
        return Sensitivity.create(metadata=make_metadata(), model=MODEL, method="autoquantize",
                           formats=[f.name for f in fmts], settings={"autoquantize_groups": groups}, rows=rows)

    def autoquantize_assignment(self, state: dict, effective_bits: float) -> dict[str, str]:
        from modelopt.torch.quantization.algorithms import _resolve_best_recipe

        from trtq.sensitivity.autoquantize import recipe_option

        if not hasattr(self, "_aq_options"):
            self._aq_options = self.autoquantize_options()
        with quiet():
            best = _resolve_best_recipe(state, {"effective_bits": effective_bits})
        layer_formats: dict[str, str] = {}
        for hparam, recipe in best.items():
            fmt = recipe_option(recipe, self._aq_options)[0]
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
        """{text sha256: {"nll": [per window], "tokens": per window}} on every text; quantized once for all."""
        key = sha({"assignment": sorted(assignment.items()), **self.key})
        path = self.cache / "ppl" / f"{key}.json"
        cached = read_json(path) or {"texts": {}}
        eval_key = f"{self.args.eval_windows}x{self.args.seq_len}"
        missing = [t for t in self.texts if f"{t['sha256']}:{eval_key}" not in cached["texts"]]
        if missing and self.args.cached_only:
            return None
        if missing:
            from trtq.quantize.apply import quantize_model

            model = copy.deepcopy(self.model())
            started = time.perf_counter()
            if any(fmt != "bf16" for fmt, _ in assignment.values()):
                with quiet():
                    quantize_model(model, assignment, self.calib_batches(), batch_size=self.args.calib_batch)
            cached["quantize_seconds"] = time.perf_counter() - started
            for text in missing:
                nll, tokens = window_nll(model, self.eval_windows(text), self.args.eval_batch)
                cached["texts"][f"{text['sha256']}:{eval_key}"] = {"nll": nll, "tokens": tokens}
            write_json(path, cached)
            del model
        return {t["sha256"]: cached["texts"][f"{t['sha256']}:{eval_key}"] for t in self.texts}


def window_nll(model, windows, batch_size: int) -> tuple[list[float], int]:
    """Summed next-token NLL of each window (nats) and the tokens each predicts."""
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, windows.shape[0], batch_size):
            batch = windows[start:start + batch_size]
            logits = model(input_ids=batch, use_cache=False).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none")
            out.extend(float(v) for v in nll.double().sum(dim=1))
    return out, int(windows.shape[1] - 1)


class Score:
    """A perplexity over windows with its bootstrap interval (the same resampled windows for every plan)."""

    def __init__(self, nll: list[float], tokens: int, resamples: np.ndarray):
        self.nll = np.asarray(nll)
        self.ppl = math.exp(self.nll.mean() / tokens)
        boot = np.exp(self.nll[resamples].mean(axis=1) / tokens)
        self.low, self.high = (float(v) for v in np.percentile(boot, [2.5, 97.5]))
        self.tokens = tokens

    def __str__(self) -> str:
        return f"{self.ppl:.3f} [{self.low:.2f}, {self.high:.2f}]"


def resamples_for(windows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, windows, size=(BOOTSTRAP, windows))


def compare(ours: "Score | None", theirs: "Score | None") -> tuple[bool, bool]:
    """(not worse, strictly better): better only when the intervals separate; overlapping is a tie.

    A method with no plan meeting the budget loses to one that has a plan.
    """
    if ours is None:
        return theirs is None, False
    if theirs is None:
        return True, True
    return ours.low <= theirs.high, ours.high < theirs.low


def paired(ours: "Score | None", theirs: "Score | None", resamples: np.ndarray) -> int | None:
    """-1/0/+1: ours better/tied/worse by a paired bootstrap of the ppl ratio (same windows resampled)."""
    if ours is None or theirs is None:
        return None
    diff = (ours.nll - theirs.nll)[resamples].mean(axis=1) / ours.tokens
    low, high = np.percentile(diff, [2.5, 97.5])
    return -1 if high < 0 else (1 if low > 0 else 0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=6, help="budget fractions, fastest feasible to 1.0")
    parser.add_argument("--calib-samples", type=int, default=8, help="calibration = scoring windows")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--score-batch", type=int, default=4, help="windows per AutoQuantize step")
    parser.add_argument("--calib-batch", type=int, default=8, help="windows per calibration forward")
    parser.add_argument("--eval-windows", type=int, default=32, help="evaluation windows of --seq-len tokens per text")
    parser.add_argument("--eval-batch", type=int, default=4)
    parser.add_argument("--eval-text", action="append", default=[], metavar="FILE",
                        help="another UTF-8 text to score every plan on (repeatable), besides the shipped "
                             "evaluation text and the held-out texts under benchmarks/texts/")
    parser.add_argument("--profile-backend", default="roofline",
                        help="trtq profile backend that produces the latency table (default: roofline; "
                             "aiconfigurator: NVIDIA's measured H100 TensorRT-LLM tables, formats they lack modelled)")
    parser.add_argument("--with-weight", action="store_true", help="also plan and score with weight sensitivity")
    parser.add_argument("--with-output", action="store_true",
                        help="also plan and score with the block-local layer-output sensitivity (block-sequential)")
    parser.add_argument("--seed", type=int, default=0, help="calibration windows and bootstrap resamples")
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
                             "run (AutoQuantize runs again); tables must come out the same")
    parser.add_argument("--shard", type=_shard, default=(0, 1), metavar="K/N",
                        help="evaluate only every N-th plan from the K-th (0-based) and stop: run N shards side by "
                             "side (they share the cache), then once without --shard to report")
    parser.add_argument("--cached-only", action="store_true",
                        help="evaluate nothing new: report the plans whose perplexities are cached, the others "
                             "as not evaluated")
    args = parser.parse_args(argv)
    if args.points < 2:
        parser.error("--points must be at least 2")

    from trtq.errors import TrtqError
    from trtq.plan.api import problem_for
    from trtq.plan.budgets import parse_budgets
    from trtq.plan.costs import build_cost_model
    from trtq.plan.ilp import min_common_scale, solve
    from trtq.registry import parse_formats

    try:
        bench = Bench(args)
        profile = bench.profile()
    except TrtqError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log(f"profile: {GPU} {profile.backend}.{provenance_sentence(profile)}")
    if args.retime:
        bench.forget_timings()
    formats = parse_formats(FORMATS)
    budgets = parse_budgets(BUDGET_SPECS)
    aq_state, aq_timing = bench.autoquantize_state()
    hessian, hessian_timing = bench.timed_sensitivity("hessian")
    fisher, fisher_timing = bench.timed_sensitivity("fisher")
    tables = {"trtq-hessian": hessian, "trtq-fisher": fisher,
              "trtq-autoquantize": bench.autoquantize_sensitivity(aq_state, aq_timing)}
    seconds = {"trtq-hessian": hessian_timing["seconds"], "trtq-fisher": fisher_timing["seconds"],
               "trtq-autoquantize": aq_timing["total_seconds"]}
    if args.with_weight:
        tables["trtq-weight"] = bench.weight_sensitivity()
        seconds["trtq-weight"] = float("nan")  # not timed: no data, seconds
    if args.with_output:
        tables["trtq-output"], output_timing = bench.timed_sensitivity("output")
        seconds["trtq-output"] = output_timing["seconds"]
    costs = {m: build_cost_model(bench.graph, profile, t, formats, POINTS) for m, t in tables.items()}
    reference = costs["trtq-hessian"]  # latency and bytes do not depend on the sensitivity
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
            uniform[fmt] = {"layer_formats": layer_formats, "totals": totals_of(layer_formats)}

    aq_cache: dict[float, dict[str, str]] = {}

    def aq_plan(bits: float) -> dict[str, str]:
        bits = round(bits, 4)
        if bits not in aq_cache:
            aq_cache[bits] = bench.autoquantize_assignment(aq_state, bits)
        return aq_cache[bits]

    rows = []
    for fraction in fractions:
        scale = fraction * (1 + 1e-12)
        row = {"fraction": fraction, "plans": {}, "omega": {}}
        for method in costs:
            p, _ = problem_for(costs[method], budgets, None, scale=scale)
            sol = solve(p)
            if sol.feasible:
                row["plans"][method] = bench.assignment(costs[method], sol.choice)
                row["omega"][method] = float(costs[method].totals(sol.choice).sensitivity)
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
        row["uniform_candidates"] = [fmt for fmt, u in uniform.items() if meets(u["totals"], fraction)]
        if best_bits is not None:
            row["aq_lp"] = autoquantize_lp_check(costs["trtq-autoquantize"], aq_state, layer_formats, best_bits)
        rows.append(row)

    # perplexities: unique assignments only, each cached; uniform formats only where one meets a budget
    needed_uniform = {"bf16"} | {fmt for row in rows for fmt in row["uniform_candidates"]}
    jobs = []  # (label, assignment, where the result goes)
    for fmt in [f for f in uniform if f in needed_uniform]:
        jobs.append((f"uniform {fmt}", bench.assignment(reference, reference.choice_of(uniform[fmt]["layer_formats"])),
                     uniform[fmt]))
    for row in rows:
        for method in [m for m in ["autoquantize", *PLANNED, *OPTIONAL] if m in row["plans"]]:
            assignment = row["plans"][method]
            result = row.setdefault("results", {}).setdefault(method, {})
            result["totals"] = totals_of({m: f for m, (f, _) in assignment.items()})
            jobs.append((f"fraction {row['fraction']:.3f}: {method}", assignment, result))
    shard, shards = args.shard
    for index, (label, assignment, result) in enumerate(jobs):
        if index % shards != shard:
            continue
        log(f"{label} ...")
        result["nll"] = bench.perplexity(assignment)
    if shards > 1:
        log(f"shard {shard}/{shards} done: run without --shard to report")
        return 0

    report = render(rows, fractions, t_min, bf16_ns, uniform, seconds, aq_timing, hessian_timing, fisher_timing,
                    args, profile, bench.texts)
    print(report)
    if not args.no_record:
        record(report)
    return 0


def autoquantize_lp_check(aq_costs, state: dict, layer_formats: dict[str, str], bits: float) -> dict:
    """AutoQuantize's own pick against trtq's ILP optimum on the same scores and effective_bits constraint."""
    from trtq.plan.bits import effective_bits, effective_bits_constraint
    from trtq.plan.ilp import IlpProblem, solve

    members = {m for g in aq_costs.groups for m in g.members}
    fixed = int(sum(stat["uncompressed_cost"] for stat in state["candidate_stats"].values()
                    if not set(stat["module_names"]) & members))
    theirs = aq_costs.choice_of(layer_formats)
    sol = solve(IlpProblem(aq_costs.omega, [effective_bits_constraint(aq_costs, bits, fixed)]), mip_rel_gap=1e-9)
    return {"theirs": float(aq_costs.totals(theirs).sensitivity), "optimum": float(sol.objective),
            "theirs_bits": effective_bits(aq_costs, theirs, fixed), "optimum_bits": effective_bits(aq_costs, sol.choice, fixed)}


def _shard(value: str) -> tuple[int, int]:
    try:
        k, n = (int(v) for v in value.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N, got {value!r}") from None
    if not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"need 0 <= K < N, got {value!r}")
    return k, n


def render(rows, fractions, t_min, bf16_ns, uniform, seconds, aq_timing, hessian_timing, fisher_timing, args,
           profile, texts) -> str:
    from trtq.console import fmt_bytes, fmt_ns
    from trtq.plan.quality_fit import fit_quality

    windows = {t["sha256"]: len(uniform["bf16"]["nll"][t["sha256"]]["nll"]) for t in texts}
    resamples = {t["sha256"]: resamples_for(windows[t["sha256"]], args.seed) for t in texts}

    def scores(nll_by_text) -> dict:
        return {sha_: Score(v["nll"], v["tokens"], resamples[sha_]) for sha_, v in nll_by_text.items()}

    for u in uniform.values():
        if u.get("nll") is not None:
            u["scores"] = scores(u["nll"])
    not_evaluated = 0
    for row in rows:
        results = row.setdefault("results", {})
        for method in list(results):
            if results[method].get("nll") is None:   # --cached-only: not evaluated in time
                del results[method]
                row.setdefault("not_evaluated", []).append(method)
                not_evaluated += 1
            else:
                results[method]["scores"] = scores(results[method]["nll"])
        row["uniform_candidates"] = [f for f in row["uniform_candidates"] if "scores" in uniform[f]]
        if row["uniform_candidates"]:
            # the best uniform format per text (the one a user who measured would pick on that text)
            row["uniform_format"] = {
                t["sha256"]: min(row["uniform_candidates"], key=lambda f: uniform[f]["scores"][t["sha256"]].ppl)
                for t in texts}
            results["uniform"] = {"scores": {sha_: uniform[f]["scores"][sha_] for sha_, f in row["uniform_format"].items()},
                                  "totals": uniform[row["uniform_format"][texts[0]["sha256"]]]["totals"]}

    lines = []
    lines.append(f"Date {_dt.date.today().isoformat()}; machine: {os.cpu_count()}-core CPU, no GPU; ModelOpt fake "
                 f"quantization on CPU; run at {_dt.datetime.now().isoformat(timespec='minutes')}.")
    lines.append(
        f"Model {MODEL}; latency from the {GPU.upper()} {args.profile_backend} profile"
        + (f" with launch cost {profile.launch_cost_ns:g} ns (kernel time only)" if profile.launch_cost_ns == 0 else "")
        + ". Formats: " + FORMATS + " (INT4 group 64 where 128 does not divide the input width)."
        + provenance_sentence(profile)
    )
    lines.append(
        f"Budgets: decode@16 and prefill@2048 at the same fraction of all-bf16 GEMM time "
        f"(all-bf16: decode@16 {fmt_ns(bf16_ns['decode@16'])}, prefill@2048 {fmt_ns(bf16_ns['prefill@2048'])}); "
        f"fastest feasible fraction {t_min:.4f}. Calibration and scoring: {args.calib_samples} x {args.seq_len} "
        f"tokens of the shipped calibration text (seed {args.seed}), the same windows for every plan and for every "
        f"sensitivity: trtq's Hessian and Fisher, and AutoQuantize (gradient method, {args.score_batch} windows per "
        "step, lm_head disabled), whose one run gives both the AutoQuantize baseline and trtq-autoquantize's table."
    )
    lines.append(
        "Perplexity on each text: its first " + str(args.eval_windows) + f" windows of {args.seq_len} tokens; "
        f"[95% interval] from {BOOTSTRAP} bootstrap resamples of the windows (seed {args.seed}). Texts: "
        + "; ".join(f"{t['name']} ({t['path'].replace(str(REPO) + '/', '')}, sha256 {t['sha256'][:12]}, "
                    f"{windows[t['sha256']]} windows)" for t in texts) + "."
    )
    lines.append("")
    header = ["budget", "method", "decode@16", "prefill@2048", "weights", "Σ Ω", *(t["name"] for t in texts), "note"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    methods = [m for m in METHODS if any(m in row["results"] for row in rows) or m in PLANNED]
    for row in rows:
        results = row["results"]
        for method in methods:
            if method not in results:
                if method in OPTIONAL:
                    continue
                why = "not evaluated" if method in row.get("not_evaluated", []) else "no plan meets the budget"
                lines.append(f"| {row['fraction']:.3f} | {method} | - | - | - | - | "
                             + " | ".join("-" for _ in texts) + f" | {why} |")
                continue
            tot = results[method]["totals"]
            note = []
            if method == "autoquantize":
                note.append(f"effective_bits {row['autoquantize_bits']:.3f}")
            if method == "uniform":
                note.append("/".join(sorted(set(row["uniform_format"].values()))))
            omega = f"{row['omega'][method]:.4g}" if method in row["omega"] else "-"
            lines.append(
                f"| {row['fraction']:.3f} | {method} | {tot.latency_ns['decode@16'] / bf16_ns['decode@16']:.3f} | "
                f"{tot.latency_ns['prefill@2048'] / bf16_ns['prefill@2048']:.3f} | {fmt_bytes(tot.weight_bytes)} | "
                f"{omega} | " + " | ".join(str(results[method]["scores"][t["sha256"]]) for t in texts)
                + f" | {', '.join(note)} |"
            )
    lines.append("")
    lines.append("Uniform formats (ppl per text; decode, prefill fractions): " + "; ".join(
        f"{fmt} " + "/".join(f"{u['scores'][t['sha256']].ppl:.2f}" for t in texts)
        + f", {u['totals'].latency_ns['decode@16'] / bf16_ns['decode@16']:.3f}, "
          f"{u['totals'].latency_ns['prefill@2048'] / bf16_ns['prefill@2048']:.3f}"
        for fmt, u in uniform.items() if "scores" in u))
    aq_scoring = aq_timing["scoring_seconds"]
    lines.append(
        f"Sensitivity wall time on the same {aq_timing['tokens']} tokens: trtq Hessian {seconds['trtq-hessian']:.1f} s, "
        f"Fisher {seconds['trtq-fisher']:.1f} s; AutoQuantize scoring {aq_scoring:.1f} s (its whole run, with "
        f"calibrating each of the four candidate formats, {aq_timing['total_seconds']:.1f} s; trtq-autoquantize's "
        "table is read from that same run, so its time is the whole run). Ratios below: the method's time over "
        "AutoQuantize's scoring time."
    )
    checks = [f"{row['fraction']:.3f}: {row['aq_lp']['theirs']:.4g} vs {row['aq_lp']['optimum']:.4g} "
              f"({row['aq_lp']['theirs_bits']:.2f} / {row['aq_lp']['optimum_bits']:.2f} bits)"
              for row in rows if "aq_lp" in row]
    if checks:
        lines.append("AutoQuantize's own LP pick against trtq's ILP on the same scores and effective_bits constraint "
                     "(sum of AutoQuantize scores, its pick vs the optimum; effective bits of each): " + "; ".join(checks) + ".")
    loads = []
    for name, timing in (("Hessian", hessian_timing), ("Fisher", fisher_timing), ("AutoQuantize", aq_timing)):
        if timing and timing.get("loadavg"):
            loads.append(f"{name}: 1/5/15-min load average {'/'.join(f'{x:.1f}' for x in timing['loadavg'])} at its end")
    if loads:
        lines.append("The 2 cores were shared with other work during these timings; " + "; ".join(loads) + ".")

    # --- comparisons: per method, per text and overall, over budgets x texts
    lines.append("")
    lines.append("Comparisons (strictly better only when the 95% intervals separate; overlapping intervals are ties; "
                 "paired = a paired bootstrap of the per-window NLL difference on the same resampled windows, "
                 "shown for information: better/tie/worse):")
    summary = {}
    for method in [m for m in methods if m.startswith("trtq-")]:
        total = {"n": 0, "aq_nw": 0, "aq_sb": 0, "u_nw": 0, "paired": [0, 0, 0], "logppl": []}
        for t in texts:
            key = t["sha256"]
            c = {"n": 0, "aq_nw": 0, "aq_sb": 0, "u_nw": 0, "paired": [0, 0, 0]}
            for row in rows:
                res = row["results"]
                if {method, "autoquantize"} & set(row.get("not_evaluated", [])):
                    continue   # a pair with an unevaluated side is not counted
                ours = res[method]["scores"][key] if method in res else None
                theirs = res["autoquantize"]["scores"][key] if "autoquantize" in res else None
                uni = res["uniform"]["scores"][key] if "uniform" in res else None
                nw, sb = compare(ours, theirs)
                c["n"] += 1
                c["aq_nw"] += nw
                c["aq_sb"] += sb
                c["u_nw"] += compare(ours, uni)[0]
                pr = paired(ours, theirs, resamples[key])
                if pr is not None:
                    c["paired"][pr + 1] += 1
                if ours is not None:
                    total["logppl"].append(math.log(ours.ppl / uniform["bf16"]["scores"][key].ppl))
            for k in ("n", "aq_nw", "aq_sb", "u_nw"):
                total[k] += c[k]
            total["paired"] = [a + b for a, b in zip(total["paired"], c["paired"])]
            lines.append(f"- {method} on {t['name']}: " + summary_line(1, c["n"], c, seconds[method] / aq_scoring))
        lines.append(f"- {method} overall: " + summary_line(len(texts), total["n"] // len(texts), total,
                                                            seconds[method] / aq_scoring))
        summary[method] = total

    # --- Omega in perplexity terms
    lines.append("")
    lines.append("Sum of Omega against measured perplexity (trtq.plan.quality_fit, each method on its own plans):")
    for method in [m for m in methods if m in summary]:
        for t in texts:
            pts = [(row["omega"][method], row["results"][method]["scores"][t["sha256"]].ppl)
                   for row in rows if method in row["omega"] and method in row["results"]]
            try:
                fit = fit_quality([o for o, _ in pts], [p for _, p in pts], uniform["bf16"]["scores"][t["sha256"]].ppl)
                lines.append(f"- {method}, {t['name']}: {fit.describe()}")
            except Exception as exc:  # too few quantized plans
                lines.append(f"- {method}, {t['name']}: no fit ({exc})")

    winner = max(summary, key=lambda m: (summary[m]["aq_nw"], summary[m]["aq_sb"], summary[m]["u_nw"],
                                         -float(np.mean(summary[m]["logppl"]))))
    lines.append("")
    lines.append(f"Best planned method on this benchmark: {winner} (most budgets x texts not worse than AutoQuantize, "
                 "then strictly better, then not worse than uniform, then lowest mean log-perplexity increase: "
                 + ", ".join(f"{m} {100 * float(np.mean(summary[m]['logppl'])):.2f}%" for m in summary) + ").")
    lines.append("")
    if not_evaluated:
        lines.append(f"PARTIAL: {not_evaluated} plans were not evaluated in time (--cached-only); budgets with an "
                     "unevaluated side are left out of the counts above.")
    lines.append(summary_line(len(texts), summary[winner]["n"] // len(texts), summary[winner],
                              seconds[winner] / aq_scoring, with_paired=False))
    return "\n".join(lines)


def provenance_sentence(profile: Profile) -> str:
    """Where the profile's latencies come from, for a profile whose rows say so (e.g. aiconfigurator's tables)."""
    counts = profile.provenance_counts()
    if set(counts) <= {"modelled", "unknown"} and profile.backend != "aiconfigurator":   # a plain roofline
        return ""
    modelled = sorted({r.format for r in profile.rows if r.provenance == "modelled"})
    settings = profile.settings
    source = (f" ({settings['package']} {settings['package_version']}, {settings['system']}, {settings['framework']} "
              f"{settings['framework_version']})" if profile.backend == "aiconfigurator" else "")
    return (f" Latency rows{source}: " + ", ".join(f"{n} {p}" for p, n in sorted(counts.items()))
            + (f"; {', '.join(modelled)} modelled (roofline calibrated on the GPU's measured formats: the tables "
               "lack them)" if modelled else "") + ".")


def summary_line(n_texts: int, n_budgets: int, c: dict, ratio: float, with_paired: bool = True) -> str:
    better, tie, worse = c["paired"]
    line = (f"texts={n_texts} budgets={n_budgets} not_worse_than_autoquantize={c['aq_nw']} "
            f"strictly_better_than_autoquantize={c['aq_sb']} not_worse_than_uniform={c['u_nw']} "
            f"sensitivity_time_ratio={ratio:.2f}")
    return line + (f" (paired vs AutoQuantize: {better}/{tie}/{worse})" if with_paired else "")


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
