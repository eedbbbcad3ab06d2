"""Library entry point of the sensitivity stage."""

from __future__ import annotations

import argparse

from trtq.artifacts import make_metadata, save_artifact
from trtq.artifacts.sensitivity import Sensitivity
from trtq.errors import InputError
from trtq.registry import parse_formats


def weight_sensitivity(model_spec: str, formats: str | None = None, include_lm_head: bool = False,
                       model=None) -> Sensitivity:
    """Weight-perturbation sensitivity of every quantizable layer for every format that fits it."""
    import torch

    from trtq.model.layers import build_layer_graph
    from trtq.model.zoo import load_pretrained, resolve_model
    from trtq.sensitivity.weight import weight_rows

    resolved = resolve_model(model_spec)
    graph = build_layer_graph(resolved, include_lm_head=include_lm_head)
    fmts = parse_formats(formats)
    if model is None:
        model, _ = load_pretrained(resolved)
    with torch.no_grad():
        rows = weight_rows(model, graph, fmts)
    inputs = {"weights": str(resolved.weights)} if resolved.weights and resolved.weights.is_file() else {}
    return Sensitivity(
        artifact=Sensitivity.KIND,
        schema_version=Sensitivity.SCHEMA_VERSION,
        metadata=make_metadata(inputs=inputs, notes=[
            "omega = ||Q_f(W) - W||_F^2 with trtq's reference quantizers (round-to-nearest; "
            "AWQ/SmoothQuant scaling not applied)"]),
        model=resolved.name,
        method="weight",
        formats=[f.name for f in fmts],
        settings={"include_lm_head": include_lm_head},
        rows=rows,
    )


def compute_sensitivity(args: argparse.Namespace) -> Sensitivity:
    if args.method == "weight":
        table = weight_sensitivity(args.model, args.formats, args.include_lm_head)
    else:
        raise InputError("--method hessian is not built yet (issue 4); use --method weight")
    save_artifact(table, args.output)
    return table
