"""Library entry point of the build stage: a BuildRequest in; the runtime's files and build_record.json out.

`prepare_build` reads and checks everything and decides what to write and run (nothing is written);
`write_build` writes it (and runs trtllm-build for the engine backend); `build_checkpoint` does both.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from trtq.artifacts.build import BuildRecord
from trtq.build.checkpoint import Checkpoint
from trtq.build.request import BuildRequest
from trtq.build.trtllm import BuildPlan
from trtq.registry import GpuSpec


def prepare_build(request: BuildRequest, output: str | Path) -> tuple[Checkpoint, GpuSpec, BuildPlan]:
    from trtq.build.checkpoint import read_checkpoint
    from trtq.build.trtllm import BuildOptions, plan_build
    from trtq.registry import get_gpu
    from trtq.registry.runtimes import get_runtime

    gpu = get_gpu(request.gpu)
    checkpoint = read_checkpoint(request.checkpoint)
    runtime = get_runtime(request.runtime or checkpoint.plan_runtime)
    backend = request.backend or ("engine" if runtime.backend == "engine" else "pytorch")
    options = BuildOptions(
        gpu=gpu,
        backend=backend,
        runtime=runtime,
        tp=request.tp,
        pp=request.pp,
        max_batch_size=request.max_batch_size,
        max_input_len=request.max_input_len,
        max_seq_len=request.max_seq_len,
        max_num_tokens=request.max_num_tokens,
        free_gpu_memory_fraction=request.free_gpu_memory_fraction,
    )
    return checkpoint, gpu, plan_build(checkpoint, options, Path(output))


def write_build(
    checkpoint: Checkpoint, gpu: GpuSpec, plan: BuildPlan, before_run: Callable[[list[str]], None] | None = None
) -> BuildRecord:
    """Write the LLM API options (or build the engine: `before_run(command)` first) and build_record.json."""
    from trtq.artifacts.io import atomic_write_text, make_metadata, save_artifact
    from trtq.build.trtllm import require_tensorrt_llm, run_build, tensorrt_llm_versions
    from trtq.errors import ArtifactError

    out = plan.output_dir
    if plan.command:
        require_tensorrt_llm()  # the PyTorch backend is prepared anywhere; an engine is built in the container
    versions = tensorrt_llm_versions()
    if plan.llm_api_options is not None:
        atomic_write_text(plan.options_file, plan.llm_api_options.yaml_text())
    wall = None
    log = None
    if plan.command:
        if len(checkpoint.rank_files()) != plan.tp * plan.pp:
            raise ArtifactError(plan.warnings[0] if plan.warnings else f"{checkpoint.trtllm_dir}: rank files missing")
        if before_run is not None:
            before_run(plan.command)
        log = out / "build.log"
        wall = run_build(plan, log)
    summary = checkpoint.summary()
    inputs = {"checkpoint_config": (checkpoint.trtllm_dir or checkpoint.hf_dir) / "config.json"}
    if checkpoint.plan_path:
        inputs["plan"] = checkpoint.plan_path
    record = BuildRecord.create(
        metadata=make_metadata(inputs=inputs, versions=versions),
        backend=plan.backend,
        runtime=plan.runtime,
        status="built" if plan.command else "prepared",
        gpu=gpu.name,
        gpu_sm=gpu.sm,
        tp_size=plan.tp,
        pp_size=plan.pp,
        checkpoint=summary,
        model_dir=str(plan.model_dir.resolve()),
        model_name=checkpoint.model_name,
        tokenizer_dir=str(plan.tokenizer_dir.resolve()) if plan.tokenizer_dir else None,
        engine_dir=str(plan.engine_dir.resolve()) if plan.engine_dir else None,
        llm_api_options=plan.llm_api_options,
        checked=plan.checked,
        flags_why=plan.flags_why,
        command=plan.command,
        serve_command=plan.serve_command,
        bench_commands=plan.bench_commands,
        log=str(log) if log else None,
        wall_s=wall,
    )
    save_artifact(record, out / "build_record.json")
    return record


def build_checkpoint(request: BuildRequest, output: str | Path) -> BuildRecord:
    """`trtq build` without the printing: check, write the runtime's files, and record them."""
    return write_build(*prepare_build(request, output))
