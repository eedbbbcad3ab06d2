"""`trtq profile MODEL --gpu GPU|auto --backend roofline|cpu|cuda|aiconfigurator --tokens ... -o FILE`.

Calibrated roofline, two ways:
  trtq profile M --backend roofline --gpu H100-SXM --calibrate-from measured.json --fit-out fit.json -o p.json
  trtq profile OTHER --backend roofline --calibrate fit.json -o other.json
"""

from __future__ import annotations

import argparse

from trtq.artifacts.paths import ARTIFACT_SUFFIXES, output_file
from trtq.options import count, number, seed


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="per-layer latency table (unique GEMM shape x format x tokens, ns)")
    p.add_argument("model", help="built-in alias, HF id or local path (config only is enough)")
    p.add_argument("--gpu", help="target GPU from `trtq gpus`, or `auto` for the GPU in hand (roofline: required "
                               "unless --calibrate gives it; cuda: auto, the default, or the GPU in hand's name)")
    p.add_argument("--backend", default="roofline",
                   help="profiler backend: roofline (datasheet model, runs anywhere) | cuda (real kernels on the "
                        "GPU in hand) | cpu (real kernels on this CPU) | aiconfigurator (NVIDIA's measured kernel "
                        "tables from aiconfigurator-core, for --gpu)")
    p.add_argument("--framework", choices=("trtllm", "vllm", "sglang"), default=None,
                   help="aiconfigurator: whose kernels the tables measured (default trtllm)")
    p.add_argument("--framework-version", metavar="V", default=None,
                   help="aiconfigurator: the framework version's tables (default: the package's current one for the GPU)")
    p.add_argument("--tokens", default="1,16,128,2048", help="GEMM M values (token counts), comma-separated")
    p.add_argument("--formats", help="comma-separated formats (default: all the GPU supports; cuda: all, "
                                       "those it cannot run recorded as unsupported with the reason)")
    p.add_argument("--runtime", metavar="NAME@VERSION",
                   help="profile the formats this TensorRT-LLM runtime runs on the GPU (default: the default runtime, "
                        "PyTorch backend; `all`: every format some runtime in `trtq formats --runtime` runs there, "
                        "one table for plans under any runtime)")
    p.add_argument("--launch-cost", type=number(minimum=0, maximum=1e9), default=None, metavar="NS",
                   help="roofline: fixed cost per GEMM in ns (default: the GPU's; 0 = pure kernel time)")
    p.add_argument("--repeats", type=count(1), default=None, help="measuring backends: minimum repetitions")
    p.add_argument("--warmup", type=count(0), default=None, help="measuring backends: warm-up runs")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="cuda: time CUDA-graph replays (strips launch overhead; recorded in the settings)")
    p.add_argument("--calibrate", metavar="FIT",
                   help="roofline: use fractions and launch cost fitted to a measured table of the same GPU "
                        "(a roofline_calibration file from --fit-out)")
    p.add_argument("--calibrate-from", metavar="MEASURED",
                   help="roofline: fit the fractions and launch cost to this measured table (trtq profile "
                        "--backend cuda output on the same GPU), then use them")
    p.add_argument("--fit-out", metavar="FIT", type=output_file(*ARTIFACT_SUFFIXES),
                   help="with --calibrate-from: also write the fit (with its error before and after) here")
    p.add_argument("--include-lm-head", action="store_true")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("-o", "--output", required=True, type=output_file(*ARTIFACT_SUFFIXES),
                   help="profile table (JSON or YAML)")
    p.set_defaults(handler=run_profile)


def run_profile(args: argparse.Namespace) -> int:
    from trtq.artifacts import save_artifact
    from trtq.console import stderr_console
    from trtq.errors import InputError
    from trtq.model.layers import build_layer_graph
    from trtq.model.zoo import resolve_model
    from trtq.profile.api import build_profile, parse_tokens

    tokens = parse_tokens(args.tokens)
    if args.launch_cost is not None and args.launch_cost < 0:
        raise InputError("--launch-cost must be >= 0 ns")
    options, inputs = calibration_options(args)
    if args.cuda_graphs:
        if args.backend != "cuda":
            raise InputError("--cuda-graphs applies to the cuda backend")
        options["cuda_graphs"] = True
    if args.framework or args.framework_version:
        if args.backend != "aiconfigurator":
            raise InputError("--framework / --framework-version apply to the aiconfigurator backend")
        options["framework"] = args.framework
        options["framework_version"] = args.framework_version
    harness = {k: v for k, v in (("min_repeats", args.repeats), ("warmup", args.warmup)) if v is not None}
    graph = build_layer_graph(resolve_model(args.model), include_lm_head=args.include_lm_head)
    console = stderr_console()
    profile = build_profile(graph, args.backend, args.gpu, tokens, args.formats, args.launch_cost,
                            harness, args.seed, options=options, inputs=inputs, runtime=args.runtime)
    save_artifact(profile, args.output)
    ok = sum(r.latency_ns is not None for r in profile.rows)
    console.print(
        f"{graph.model}: {len(graph.unique_shapes())} unique GEMM shapes x {len(profile.formats)} formats x "
        f"{len(tokens)} token counts = {len(profile.rows)} rows ({ok} with a latency) -> {args.output}"
    )
    if profile.backend == "aiconfigurator":
        counts = profile.provenance_counts()
        console.print("provenance: " + ", ".join(f"{n} {p}" for p, n in sorted(counts.items())))
    return 0


def calibration_options(args: argparse.Namespace) -> tuple[dict, dict]:
    """--calibrate / --calibrate-from / --fit-out -> build_profile's options and recorded inputs."""
    from trtq.errors import InputError

    if not (args.calibrate or args.calibrate_from):
        if args.fit_out:
            raise InputError("--fit-out needs --calibrate-from MEASURED")
        return {}, {}
    if args.calibrate and args.calibrate_from:
        raise InputError("give --calibrate FIT or --calibrate-from MEASURED, not both")
    if args.backend != "roofline":
        raise InputError(f"--calibrate / --calibrate-from apply to the roofline backend, not {args.backend}")
    from trtq.profile.calibrate import calibrate_from_file, load_calibration

    if args.calibrate:
        if args.fit_out:
            raise InputError("--fit-out goes with --calibrate-from (a --calibrate file is already a fit)")
        return {"calibration": load_calibration(args.calibrate)}, {"calibration": args.calibrate}
    calibration = calibrate_from_file(args.calibrate_from)
    if args.fit_out:
        from trtq.artifacts import save_artifact

        save_artifact(calibration, args.fit_out)
    inputs = {"measured_profile": args.calibrate_from}
    if args.fit_out:
        inputs["calibration"] = args.fit_out
    return {"calibration": calibration}, inputs
