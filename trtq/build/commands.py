"""`trtq build`: prepare a trtq checkpoint for TensorRT-LLM's PyTorch backend (or a legacy TensorRT engine)."""

from __future__ import annotations

import argparse

from trtq.artifacts.paths import output_dir
from trtq.build.request import BuildRequest
from trtq.settings import add_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build",
        help="check a trtq quantize checkpoint against TensorRT-LLM (PyTorch backend) and write its LLM API "
        "options and trtllm-serve / trtllm-bench commands; --backend engine: a legacy TensorRT engine",
        description="Validate the mixed-precision checkpoint `trtq quantize` wrote against what the runtime loads "
        "and runs on the GPU, write extra_llm_api_options.yaml and build_record.json with the exact "
        "trtllm-serve and trtllm-bench commands. --backend engine runs trtllm-build instead, for runtimes "
        "that still have it (TensorRT-LLM <= 1.2).",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT_DIR", help=BuildRequest.model_fields["checkpoint"].description)
    add_options(p, BuildRequest, *(name for name in BuildRequest.model_fields if name != "checkpoint"))
    p.add_argument("--dry-run", action="store_true", help="print what would be written and run, and stop")
    p.add_argument(
        "-o", "--output", required=True, metavar="DIR", type=output_dir, help="output directory, e.g. engines/NAME/"
    )
    p.set_defaults(handler=run_build_command)


def run_build_command(args: argparse.Namespace) -> int:
    import shlex

    from trtq.build.api import prepare_build, write_build
    from trtq.console import stdout_console

    checkpoint, gpu, plan = prepare_build(BuildRequest.from_args(args), args.output)
    console = stdout_console()
    console.print(
        f"checkpoint {checkpoint.path}: formats {', '.join(checkpoint.format_names)}; "
        f"{gpu.name} (sm{gpu.sm}) runs them all under {plan.runtime}; tp={plan.tp} pp={plan.pp}"
    )
    for line in plan.checked:
        console.print(f"checked: {line}", soft_wrap=True)
    for warning in plan.warnings:
        console.print(f"warning: {warning}")

    def show(label: str, command: list[str]) -> None:
        console.print(f"{label}:\n  {shlex.join(command)}", soft_wrap=True)

    if args.dry_run:
        if plan.command:
            show("would run", plan.command)
        if plan.llm_api_options is not None:
            console.print(f"would write {plan.options_file}:\n{plan.llm_api_options.yaml_text()}", soft_wrap=True)
        show("then serve with", plan.serve_command + ["--host", "HOST", "--port", "PORT"])
        for name, command in plan.bench_commands.items():
            show(f"offline numbers ({name})", command)
        for flag, why in plan.flags_why.items():
            console.print(f"  {flag}: {why}", soft_wrap=True)
        return 0

    write_build(checkpoint, gpu, plan, before_run=lambda command: show("running", command))
    out = plan.output_dir
    console.print(
        f"wrote {out / 'build_record.json'}"
        + (f" and the engine in {plan.engine_dir}" if plan.command else f" and {plan.options_file}")
    )
    return 0
