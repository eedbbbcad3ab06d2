"""`trtq build`: prepare a trtq checkpoint for TensorRT-LLM's PyTorch backend (or a legacy TensorRT engine)."""

from __future__ import annotations

import argparse

from trtq.artifacts.paths import output_dir
from trtq.options import MAX_CONCURRENCY, MAX_PARALLEL, count, number, tokens


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
    p.add_argument("checkpoint", metavar="CHECKPOINT_DIR",
                   help="trtq quantize output (engines/NAME/ with hf/ and trtllm/), or a checkpoint directory")
    p.add_argument("--gpu", required=True, help="target GPU (see `trtq gpus`)")
    p.add_argument("--runtime", metavar="NAME@VERSION",
                   help="TensorRT-LLM runtime (see `trtq formats --gpu G --runtime all`; default: the plan's, else "
                        "the release docker/ pins)")
    p.add_argument("--backend", choices=("pytorch", "engine"),
                   help="pytorch (default): no engine, trtllm-serve loads hf/; engine: trtllm-build a TensorRT engine "
                        "(legacy, only runtimes that still ship trtllm-build; the default for trtllm-engine@*)")
    p.add_argument("--tp", type=count(1, MAX_PARALLEL),
                   help="tensor parallel size (engine: must match the exported checkpoint)")
    p.add_argument("--pp", type=count(1, MAX_PARALLEL),
                   help="pipeline parallel size (engine: must match the exported checkpoint)")
    p.add_argument("--max-batch-size", type=count(1, MAX_CONCURRENCY))
    p.add_argument("--max-input-len", type=tokens, help="engine backend only")
    p.add_argument("--max-seq-len", type=tokens)
    p.add_argument("--max-num-tokens", type=tokens)
    p.add_argument("--free-gpu-memory-fraction", type=number(minimum=0.01, maximum=1.0),
                   help="KV cache share of free GPU memory (default 0.9)")
    p.add_argument("--dry-run", action="store_true", help="print what would be written and run, and stop")
    p.add_argument("-o", "--output", required=True, metavar="DIR", type=output_dir,
                   help="output directory, e.g. engines/NAME/")
    p.set_defaults(handler=run_build_command)


def run_build_command(args: argparse.Namespace) -> int:
    import shlex
    from pathlib import Path

    from trtq.artifacts.build import BuildRecord
    from trtq.artifacts.io import atomic_write_text, make_metadata, save_artifact
    from trtq.build.checkpoint import read_checkpoint
    from trtq.build.trtllm import BuildOptions, plan_build, require_tensorrt_llm, run_build, tensorrt_llm_versions
    from trtq.console import stdout_console
    from trtq.registry import get_gpu
    from trtq.registry.runtimes import get_runtime

    gpu = get_gpu(args.gpu)
    checkpoint = read_checkpoint(args.checkpoint)
    runtime = get_runtime(args.runtime or checkpoint.plan_runtime)
    backend = args.backend or ("engine" if runtime.backend == "engine" else "pytorch")
    options = BuildOptions(gpu=gpu, backend=backend, runtime=runtime, tp=args.tp, pp=args.pp,
                           max_batch_size=args.max_batch_size, max_input_len=args.max_input_len,
                           max_seq_len=args.max_seq_len, max_num_tokens=args.max_num_tokens,
                           free_gpu_memory_fraction=args.free_gpu_memory_fraction)
    out = Path(args.output)
    plan = plan_build(checkpoint, options, out)
    console = stdout_console()
    console.print(f"checkpoint {checkpoint.path}: formats {', '.join(checkpoint.format_names)}; "
                  f"{gpu.name} (sm{gpu.sm}) runs them all under {plan.runtime}; tp={plan.tp} pp={plan.pp}")
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

    if plan.command:
        require_tensorrt_llm()  # the PyTorch backend is prepared anywhere; an engine is built in the container
    versions = tensorrt_llm_versions()
    if plan.llm_api_options is not None:
        atomic_write_text(plan.options_file, plan.llm_api_options.yaml_text())
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
    record = BuildRecord.create(
        metadata=make_metadata(inputs=inputs, versions=versions),
        backend=plan.backend, runtime=plan.runtime, status="built" if plan.command else "prepared",
        gpu=gpu.name, gpu_sm=gpu.sm, tp_size=plan.tp, pp_size=plan.pp, checkpoint=summary,
        model_dir=str(plan.model_dir.resolve()), model_name=checkpoint.model_name,
        tokenizer_dir=str(plan.tokenizer_dir.resolve()) if plan.tokenizer_dir else None,
        engine_dir=str(plan.engine_dir.resolve()) if plan.engine_dir else None,
        llm_api_options=plan.llm_api_options, checked=plan.checked, flags_why=plan.flags_why,
        command=plan.command, serve_command=plan.serve_command, bench_commands=plan.bench_commands,
        log=str(log) if log else None, wall_s=wall,
    )
    save_artifact(record, out / "build_record.json")
    console.print(f"wrote {out / 'build_record.json'}"
                  + (f" and the engine in {plan.engine_dir}" if plan.command else f" and {plan.options_file}"))
    return 0
