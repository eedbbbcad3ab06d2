"""`trtq build`: TensorRT-LLM engines (or a PyTorch-backend serving setup) from a trtq checkpoint."""

from __future__ import annotations

import argparse

from trtq.artifacts.paths import output_dir
from trtq.options import MAX_CONCURRENCY, MAX_PARALLEL, count, tokens


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build",
        help="build TensorRT-LLM engines from a trtq quantize checkpoint (trtllm-build), or prepare it for "
             "the PyTorch backend",
        description="Build TensorRT-LLM engines from the mixed-precision checkpoint `trtq quantize` wrote. "
                    "Flags follow the formats in the checkpoint; a GPU lacking one of them is refused first.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT_DIR",
                   help="trtq quantize output (engines/NAME/ with hf/ and trtllm/), or a checkpoint directory")
    p.add_argument("--gpu", required=True, help="target GPU (see `trtq gpus`)")
    p.add_argument("--tp", type=count(1, MAX_PARALLEL),
                   help="tensor parallel size (must match the exported checkpoint)")
    p.add_argument("--pp", type=count(1, MAX_PARALLEL),
                   help="pipeline parallel size (must match the exported checkpoint)")
    p.add_argument("--max-batch-size", type=count(1, MAX_CONCURRENCY))
    p.add_argument("--max-input-len", type=tokens)
    p.add_argument("--max-seq-len", type=tokens)
    p.add_argument("--max-num-tokens", type=tokens)
    p.add_argument("--backend", choices=("tensorrt", "pytorch"), default="tensorrt",
                   help="tensorrt: trtllm-build an engine; pytorch: no engine, trtllm-serve loads the HF checkpoint")
    p.add_argument("--dry-run", action="store_true", help="print what would run and stop")
    p.add_argument("-o", "--output", required=True, metavar="DIR", type=output_dir,
                   help="output directory, e.g. engines/NAME/")
    p.set_defaults(handler=run_build_command)


def run_build_command(args: argparse.Namespace) -> int:
    import shlex
    from pathlib import Path

    import yaml

    from trtq.artifacts.build import BuildRecord
    from trtq.artifacts.io import atomic_write_text, make_metadata, save_artifact
    from trtq.build.checkpoint import read_checkpoint
    from trtq.build.trtllm import (
        BuildOptions, plan_build, require_tensorrt_llm, run_build, tensorrt_llm_versions,
    )
    from trtq.console import stdout_console
    from trtq.registry import get_gpu

    gpu = get_gpu(args.gpu)
    checkpoint = read_checkpoint(args.checkpoint)
    options = BuildOptions(gpu=gpu, backend=args.backend, tp=args.tp, pp=args.pp,
                           max_batch_size=args.max_batch_size, max_input_len=args.max_input_len,
                           max_seq_len=args.max_seq_len, max_num_tokens=args.max_num_tokens)
    out = Path(args.output)
    plan = plan_build(checkpoint, options, out)
    console = stdout_console()
    console.print(f"checkpoint {checkpoint.path}: formats {', '.join(checkpoint.format_names)}; "
                  f"{gpu.name} (sm{gpu.sm}) runs them all; tp={plan.tp} pp={plan.pp}")
    for warning in plan.warnings:
        console.print(f"warning: {warning}")

    def show(label: str, command: list[str]) -> None:
        console.print(f"{label}:\n  {shlex.join(command)}", soft_wrap=True)

    if args.dry_run:
        if plan.command:
            show("would run", plan.command)
        else:
            console.print(f"would prepare {out} for the PyTorch backend (no engine build)")
        if plan.extra_llm_api_options:
            console.print(f"would write {out / 'extra_llm_api_options.yaml'}:\n{yaml.safe_dump(plan.extra_llm_api_options)}")
        show("then serve with", plan.serve_command + ["--host", "HOST", "--port", "PORT"])
        for flag, why in plan.flags_why.items():
            console.print(f"  {flag}: {why}", soft_wrap=True)
        return 0

    require_tensorrt_llm()
    versions = tensorrt_llm_versions()
    if plan.extra_llm_api_options:
        atomic_write_text(out / "extra_llm_api_options.yaml", yaml.safe_dump(plan.extra_llm_api_options))
    wall = None
    log = None
    if plan.command:
        if len(checkpoint.rank_files()) != plan.tp * plan.pp:
            from trtq.errors import ArtifactError

            raise ArtifactError(plan.warnings[0] if plan.warnings else f"{checkpoint.trtllm_dir}: rank files missing")
        show("running", plan.command)
        log = out / "build.log"
        wall = run_build(plan, log)
    summary = checkpoint.summary()
    inputs = {"checkpoint_config": (checkpoint.trtllm_dir or checkpoint.hf_dir) / "config.json"}
    if checkpoint.plan_path:
        inputs["plan"] = checkpoint.plan_path
    record = BuildRecord(
        artifact=BuildRecord.KIND, schema_version=BuildRecord.SCHEMA_VERSION,
        metadata=make_metadata(inputs=inputs, versions=versions),
        backend=plan.backend, status="built" if plan.command else "prepared",
        gpu=gpu.name, gpu_sm=gpu.sm, tp_size=plan.tp, pp_size=plan.pp, checkpoint=summary,
        command=plan.command, flags_why=plan.flags_why,
        engine_dir=str(plan.engine_dir) if plan.engine_dir else None,
        model_dir=str(plan.model_dir), tokenizer_dir=str(plan.tokenizer_dir) if plan.tokenizer_dir else None,
        serve_command=plan.serve_command, extra_llm_api_options=plan.extra_llm_api_options,
        log=str(log) if log else None, wall_s=wall,
    )
    save_artifact(record, out / "build_record.json")
    console.print(f"wrote {out / 'build_record.json'}" + (f" and the engine in {plan.engine_dir}" if plan.command else ""))
    return 0
