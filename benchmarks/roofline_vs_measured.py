"""The roofline against a measured GPU table, before and after calibration.

    .venv/bin/python benchmarks/roofline_vs_measured.py --aiconfigurator [--gpus H100-SXM,B200 ...]
    .venv/bin/python benchmarks/roofline_vs_measured.py [MEASURED ...] [--calibration FIT | --fit-on OTHER]
    .venv/bin/python benchmarks/roofline_vs_measured.py --synthetic

--aiconfigurator (the default when profiles/measured/ holds no table): NVIDIA's measured GEMM tables
(aiconfigurator-core, TensorRT-LLM, newest version per GPU) on the GEMM shapes of the shipped
Llama-3.1-8B / Llama-3.1-70B / Qwen2.5-7B / Mistral-7B configs at tokens 1, 16, 128, 2048, 8192, for every
GPU x format the tables measure. The truth is the table's value (a grid point, or the package's
interpolation between grid points; shapes beyond the grid are left out). Three models are compared:
the datasheet roofline, the calibrated roofline (trtq's --calibrate-from fit: per-format compute and
bandwidth fractions, one launch cost) and the calibrated roofline with the serial activation-quantize
pass (the model the aiconfigurator backend uses for its modelled rows). Every calibration is fitted
leaving one model's shapes out and scored on those shapes only (3 folds: Llama-3.1-8B = Mistral-7B,
Llama-3.1-70B, Qwen2.5-7B): never in-sample. Last line:
`median_err_datasheet=<x> median_err_calibrated=<y>` over the held-out large shapes (m >= 128), with
the better calibrated model.

MEASURED is a `trtq profile MODEL --gpu auto --backend cuda -o FILE` table; without arguments
every table under profiles/measured/ is used. For each shape x format x tokens it prints the
measured latency, the datasheet roofline's prediction and error, and the calibrated roofline's
prediction and error, then the median and max |error| per format.

The calibration is, in order: --calibration FIT (a `--fit-out` file of the same GPU), a fit to
--fit-on OTHER (another measured table of the same GPU: an out-of-sample check), or a fit to
the table itself (in-sample; said so in the output).

With no measured GPU table it says so and exits 2: the numbers are never invented. --synthetic
runs the same comparison on the roofline's own table with known fractions and 3% noise, to show
the mechanics; its output says SYNTHETIC on every line that matters and is not a measurement.
Results go to benchmarks/RESULTS.md, section `## roofline_vs_measured`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MEASURED_DIR = REPO / "profiles" / "measured"


def _measured_paths(given: list[str]) -> list[Path]:
    if given:
        return [Path(p) for p in given]
    if not MEASURED_DIR.is_dir():
        return []
    return sorted(p for p in MEASURED_DIR.iterdir() if p.suffix.lower() in (".json", ".yaml", ".yml"))


def _synthetic_profile():
    """The H100 roofline with known fractions and 3% log-normal noise, labelled as such."""
    import numpy as np

    from trtq.artifacts import make_metadata
    from trtq.artifacts.profile import Profile
    from trtq.profile.harness import GemmCase
    from trtq.profile.roofline import RooflineParams, roofline_row
    from trtq.registry import get_gpu

    gpu = get_gpu("H100-SXM")
    truth = RooflineParams(
        compute_fraction={"bf16": 0.62, "fp8": 0.48, "int8_sq": 0.41, "int4_awq": 0.33, "w4a8_awq": 0.27},
        bandwidth_fraction={"bf16": 0.81, "fp8": 0.77, "int8_sq": 0.70, "int4_awq": 0.52, "w4a8_awq": 0.45},
        default_compute_fraction=0.75, default_bandwidth_fraction=0.85, launch_cost_ns=4200.0,
        source="SYNTHETIC known fractions")
    rng = np.random.default_rng(0)
    rows = []
    for n, k in [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336)]:
        for fmt in truth.compute_fraction:
            for m in (1, 16, 128, 2048):
                row = roofline_row(gpu, GemmCase(n, k, m, fmt), truth)
                rows.append(row.model_copy(update={"latency_ns": row.latency_ns * float(np.exp(rng.normal(0, 0.03))),
                                                   "method": "SYNTHETIC"}))
    return Profile.create(metadata=make_metadata(notes=["SYNTHETIC: not a measurement"]), model="llama-3.1-8b (SYNTHETIC)",
                   gpu=gpu.name, backend="cuda", launch_cost_ns=0.0, tokens=[1, 16, 128, 2048],
                   formats=list(truth.compute_fraction), rows=rows), truth


def compare(profile, calibration, label: str, out=sys.stdout) -> dict:
    """Print the per-row table and the per-format summary; return the summary."""
    import numpy as np

    from trtq.console import fmt_ns
    from trtq.profile.calibrate import fitted_params
    from trtq.profile.harness import GemmCase
    from trtq.profile.roofline import RooflineParams, roofline_row
    from trtq.registry import get_gpu

    gpu = get_gpu(profile.gpu)
    datasheet = RooflineParams.for_gpu(gpu)
    calibrated = fitted_params(calibration)
    print(f"\n{label}: {profile.model} on {gpu.name}, {profile.backend} backend, "
          f"{sum(r.latency_ns is not None for r in profile.rows)} measured rows", file=out)
    print(f"calibration: launch cost {fmt_ns(calibration.launch_cost_ns)} (datasheet "
          f"{fmt_ns(calibration.datasheet_launch_cost_ns)}); from {calibration.source_profile.path}", file=out)
    header = (f"{'shape (out x in)':>17} {'format':>9} {'tokens':>6} {'measured':>10} {'roofline':>10} "
              f"{'error':>7} {'calibrated':>10} {'error':>7}")
    print(header, file=out)
    print("-" * len(header), file=out)
    errors: dict[str, tuple[list[float], list[float]]] = {}
    for row in profile.rows:
        if row.latency_ns is None:
            continue
        case = GemmCase(row.out_features, row.in_features, row.tokens, row.format)
        before = roofline_row(gpu, case, datasheet)
        after = roofline_row(gpu, case, calibrated)
        if before.latency_ns is None or after.latency_ns is None:
            continue
        e0, e1 = before.latency_ns / row.latency_ns - 1, after.latency_ns / row.latency_ns - 1
        errors.setdefault(row.format, ([], []))
        errors[row.format][0].append(e0)
        errors[row.format][1].append(e1)
        print(f"{row.out_features:>8} x {row.in_features:<6} {row.format:>9} {row.tokens:>6} "
              f"{fmt_ns(row.latency_ns):>10} {fmt_ns(before.latency_ns):>10} {e0:>+7.0%} "
              f"{fmt_ns(after.latency_ns):>10} {e1:>+7.0%}", file=out)
    print(f"\n{'format':>9} {'rows':>5} {'compute':>8} {'bandwidth':>9}   {'|error| before: median':>22} "
          f"{'max':>6}   {'after: median':>13} {'max':>6}", file=out)
    summary = {}
    for fmt, (before, after) in errors.items():
        fit = calibration.formats.get(fmt)
        b, a = np.abs(before), np.abs(after)
        summary[fmt] = (float(np.median(b)), float(b.max()), float(np.median(a)), float(a.max()))
        compute = f"{fit.compute_fraction:.2f}{'' if fit.compute_identified else '*'}" if fit else "-"
        bandwidth = f"{fit.bandwidth_fraction:.2f}{'' if fit.bandwidth_identified else '*'}" if fit else "-"
        print(f"{fmt:>9} {len(before):>5} {compute:>8} {bandwidth:>9}   {summary[fmt][0]:>22.1%} "
              f"{summary[fmt][1]:>6.0%}   {summary[fmt][2]:>13.1%} {summary[fmt][3]:>6.0%}", file=out)
    print("(* = no measured row is bound by that fraction: datasheet value kept)", file=out)
    return summary


SHAPE_MODELS = (("llama-3.1-8b", "mistral-7b"), ("llama-3.1-70b",), ("qwen2.5-7b",))
TOKENS = (1, 16, 128, 2048, 8192)
AIC_GPUS = ("H100-SXM", "H200", "B200", "A100-SXM-80GB", "L40S")
LARGE_M = 128


def _fold_shapes() -> list[tuple[str, list[tuple[int, int]]]]:
    from trtq.model.layers import build_layer_graph
    from trtq.model.zoo import resolve_model

    folds, seen = [], set()
    for models in SHAPE_MODELS:
        shapes = []
        for model in models:
            for shape in build_layer_graph(resolve_model(model)).unique_shapes():
                if shape not in seen:
                    seen.add(shape)
                    shapes.append(shape)
        folds.append(("+".join(models), shapes))
    return folds


def _params_from(fit, datasheet, with_activation: bool):
    update = {"compute_fraction": {f: x.compute_fraction for f, x in fit.formats.items()},
              "bandwidth_fraction": {f: x.bandwidth_fraction for f, x in fit.formats.items()},
              "launch_cost_ns": fit.launch_cost_ns}
    if with_activation:
        update["activation_pass"] = {f: x.activation_pass for f, x in fit.formats.items()}
    return datasheet.model_copy(update=update)


def _stats(errors) -> str:
    import numpy as np

    a = np.abs(np.asarray(errors))
    return f"{np.median(a):>6.1%} {np.percentile(a, 90):>6.1%}" if len(a) else f"{'-':>6} {'-':>6}"


def run_aiconfigurator(gpus: list[str], framework: str = "trtllm", out=sys.stdout) -> tuple[float, float]:
    """Held-out |error| per GPU x format of the datasheet and calibrated rooflines against the tables."""
    import numpy as np

    from trtq.profile.aiconfigurator import AiconfiguratorBackend, package_version, table_dtype
    from trtq.profile.calibrate import fit_roofline
    from trtq.profile.harness import GemmCase
    from trtq.profile.roofline import RooflineParams, roofline_row
    from trtq.registry import get_gpu
    from trtq.registry.formats import FORMATS

    folds = _fold_shapes()
    models = ("datasheet", "calibrated", "calibrated+act")
    print(f"aiconfigurator-core {package_version()}, {framework} tables; shapes of "
          + "; ".join(f"{name} ({len(shapes)})" for name, shapes in folds)
          + f"; tokens {', '.join(map(str, TOKENS))}; fit leaving one model's shapes out", file=out)
    header = (f"{'gpu':>14} {'framework':>18} {'format':>9} {'m':>6} {'rows':>4}   "
              + "   ".join(f"{m + ' med':>19} {'p90':>6}" for m in models))
    print(header, file=out)
    print("-" * len(header), file=out)
    pooled = {m: [] for m in models}
    for gpu_name in gpus:
        gpu = get_gpu(gpu_name)
        backend = AiconfiguratorBackend(gpu, framework=framework)
        formats = [f for f in FORMATS if table_dtype(f, backend.tables) and gpu.supports(FORMATS[f])]
        datasheet = RooflineParams.for_gpu(gpu)
        truth = {}
        for _, shapes in folds:
            for n, k in shapes:
                for fmt in formats:
                    if not FORMATS[fmt].available_for(k):
                        continue
                    for m in TOKENS:
                        row = backend.row(GemmCase(n, k, m, fmt))
                        if row.provenance in ("measured", "interpolated"):
                            truth[(n, k, m, fmt)] = row
        errors = {}                   # (fmt, large) -> model -> [relative errors]
        for _, held_out in folds:
            held = set(held_out)
            train = [r for key, r in truth.items() if key[:2] not in held]
            plain = _params_from(fit_roofline(gpu, train), datasheet, False)
            with_act = _params_from(fit_roofline(gpu, train, activation_pass=True), datasheet, True)
            for (n, k, m, fmt), row in truth.items():
                if (n, k) not in held:
                    continue
                case = GemmCase(n, k, m, fmt)
                slot = errors.setdefault((fmt, m >= LARGE_M), {mm: [] for mm in models})
                for name, params in zip(models, (datasheet, plain, with_act)):
                    slot[name].append(roofline_row(gpu, case, params).latency_ns / row.latency_ns - 1)
        for (fmt, large), by_model in sorted(errors.items(), key=lambda kv: (formats.index(kv[0][0]), kv[0][1])):
            label = f"{framework} {backend.version}"
            print(f"{gpu_name:>14} {label:>18} {fmt:>9} {'>=128' if large else '<128':>6} "
                  f"{len(by_model['datasheet']):>4}   "
                  + "   ".join(f"{'':>12}{_stats(by_model[m])}" for m in models), file=out)
            if large:
                for m in models:
                    pooled[m].extend(by_model[m])
    medians = {m: float(np.median(np.abs(pooled[m]))) for m in models}
    p90 = {m: float(np.percentile(np.abs(pooled[m]), 90)) for m in models}
    print("\nheld-out large shapes (m >= 128), all GPUs x formats: "
          + ", ".join(f"{m} median {medians[m]:.1%} p90 {p90[m]:.1%}" for m in models), file=out)
    best = min(medians["calibrated"], medians["calibrated+act"])
    return medians["datasheet"], best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("measured", nargs="*", help="measured GPU tables (default: profiles/measured/*)")
    parser.add_argument("--calibration", help="a roofline_calibration file (trtq profile --fit-out)")
    parser.add_argument("--fit-on", help="fit on this other measured table of the same GPU (out-of-sample)")
    parser.add_argument("--aiconfigurator", action="store_true",
                        help="compare against aiconfigurator-core's measured GEMM tables (default without a table)")
    parser.add_argument("--gpus", default=",".join(AIC_GPUS), help="with --aiconfigurator: registry GPUs")
    parser.add_argument("--framework", default="trtllm", choices=("trtllm", "vllm", "sglang"))
    parser.add_argument("--synthetic", action="store_true",
                        help="demonstrate on a SYNTHETIC roofline table with known fractions (not a measurement)")
    args = parser.parse_args(argv)

    from trtq.artifacts import input_ref, load_artifact
    from trtq.artifacts.profile import Profile
    from trtq.errors import TrtqError
    from trtq.profile.calibrate import (
        MEASURED_GPU_BACKENDS,
        calibrate_from_file,
        calibrate_profile,
        load_calibration,
    )

    if args.synthetic:
        profile, truth = _synthetic_profile()
        calibration = calibrate_profile(profile, input_ref("SYNTHETIC (in memory)"))
        compare(profile, calibration, "SYNTHETIC table (roofline with known fractions + 3% noise; NOT measured)")
        print("\nSYNTHETIC truth vs fit: " + ", ".join(
            f"{f} c {truth.compute(f):.2f}/{fit.compute_fraction:.2f} b {truth.bandwidth(f):.2f}/"
            f"{fit.bandwidth_fraction:.2f}" for f, fit in calibration.formats.items())
            + f"; launch {truth.launch_cost_ns:.0f}/{calibration.launch_cost_ns:.0f} ns")
        return 0

    paths = _measured_paths(args.measured)
    if args.aiconfigurator or not paths:
        try:
            datasheet, calibrated = run_aiconfigurator([g.strip() for g in args.gpus.split(",") if g.strip()],
                                                       args.framework)
        except TrtqError as exc:
            print(f"roofline_vs_measured: {exc}", file=sys.stderr)
            return 2
        print(f"median_err_datasheet={datasheet:.4f} median_err_calibrated={calibrated:.4f}")
        return 0
    if not paths:
        print("roofline_vs_measured: no measured GPU table (none given, none under profiles/measured/). "
              "The GPU measurement is owed: on an NVIDIA GPU run `trtq profile MODEL --gpu auto --backend cuda "
              "-o profiles/measured/GPU-MODEL.json`, then run this again. (--synthetic shows the mechanics "
              "on a labelled synthetic table.)", file=sys.stderr)
        return 2
    try:
        for path in paths:
            profile = load_artifact(path, Profile)
            if profile.backend not in MEASURED_GPU_BACKENDS:
                print(f"roofline_vs_measured: {path} is a {profile.backend} table, not a GPU measurement: "
                      "nothing to compare the roofline against", file=sys.stderr)
                return 2
            if args.calibration:
                calibration, how = load_calibration(args.calibration), f"calibration {args.calibration}"
                if calibration.gpu != profile.gpu:
                    print(f"roofline_vs_measured: {args.calibration} is for {calibration.gpu}, {path} for "
                          f"{profile.gpu}", file=sys.stderr)
                    return 2
            elif args.fit_on:
                calibration, how = calibrate_from_file(args.fit_on), f"fitted on {args.fit_on} (out-of-sample)"
                if calibration.gpu != profile.gpu:
                    print(f"roofline_vs_measured: {args.fit_on} is for {calibration.gpu}, {path} for "
                          f"{profile.gpu}", file=sys.stderr)
                    return 2
            else:
                calibration, how = calibrate_from_file(path), "fitted on this table (in-sample)"
            compare(profile, calibration, f"{path} [{how}]")
    except TrtqError as exc:
        print(f"roofline_vs_measured: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
