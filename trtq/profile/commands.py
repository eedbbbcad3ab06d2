"""`trtq profile MODEL --gpu GPU|auto --backend roofline|cpu|cuda|aiconfigurator --tokens ... -o FILE`.

Calibrated roofline, two ways:
  trtq profile M --backend roofline --gpu H100-SXM --calibrate-from measured.json --fit-out fit.json -o p.json
  trtq profile OTHER --backend roofline --calibrate fit.json -o other.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from trtq.artifacts.paths import ARTIFACT_SUFFIXES, output_file
from trtq.profile.request import ProfileRequest
from trtq.settings import add_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="per-layer latency table (unique GEMM shape x format x tokens, ns)")
    p.add_argument("model", help=ProfileRequest.model_fields["model"].description)
    add_options(
        p,
        ProfileRequest,
        *(name for name in ProfileRequest.model_fields if name != "model"),
        fit_out={"type": output_file(*ARTIFACT_SUFFIXES)},
    )
    p.add_argument(
        "-o", "--output", required=True, type=output_file(*ARTIFACT_SUFFIXES), help="profile table (JSON or YAML)"
    )
    p.set_defaults(handler=run_profile)


def run_profile(args: argparse.Namespace) -> int:
    from trtq.artifacts import save_artifact
    from trtq.console import stderr_console
    from trtq.model.layers import build_layer_graph
    from trtq.model.zoo import resolve_model
    from trtq.profile.api import build_profile

    request = ProfileRequest.from_args(args)
    tokens = request.token_counts
    options, inputs = calibration_options(request)
    if request.cuda_graphs:
        options["cuda_graphs"] = True
    if request.framework or request.framework_version:
        options["framework"] = request.framework
        options["framework_version"] = request.framework_version
    graph = build_layer_graph(resolve_model(request.model), include_lm_head=request.include_lm_head)
    console = stderr_console()
    profile = build_profile(
        graph,
        request.backend,
        request.gpu,
        tokens,
        request.formats,
        request.launch_cost,
        request.harness,
        request.seed,
        options=options,
        inputs=inputs,
        runtime=request.runtime,
        tp=request.tp,
    )
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


def calibration_options(request: ProfileRequest) -> tuple[dict, dict]:
    """--calibrate / --calibrate-from / --fit-out -> build_profile's options and recorded inputs."""
    if not (request.calibrate or request.calibrate_from):
        return {}, {}
    from trtq.profile.calibrate import calibrate_from_file, load_calibration

    if request.calibrate:
        return {"calibration": load_calibration(request.calibrate)}, {"calibration": request.calibrate}
    calibration = calibrate_from_file(request.calibrate_from)
    if request.fit_out:
        from trtq.artifacts import save_artifact

        save_artifact(calibration, request.fit_out)
    inputs: dict[str, str | Path] = {"measured_profile": request.calibrate_from}
    if request.fit_out:
        inputs["calibration"] = request.fit_out
    return {"calibration": calibration}, inputs
