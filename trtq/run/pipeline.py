"""The pipeline file of `trtq run`: one YAML document that names everything a run needs.

Every field is declared here once (pydantic, `extra="forbid"`: a typo is an error, not a default),
and checked against the registries (GPUs, runtimes, models, budgets) before any work starts, so a
bad file is one line and exit 2. `examples/smollm2.yaml` is the commented example.

Layout (schema_version 1):

    schema_version: 1
    model: smollm2-135m                 # alias, HF id or local directory (as every trtq command takes)
    gpus:                               # one Pareto front and one selected plan per GPU
      - {name: H100-SXM, price_per_hour: 2.5}   # price: optional, USD per GPU-hour, shown in the summary
    runtime: null                       # TensorRT-LLM runtime NAME@VERSION (default: the release docker/ pins)
    profile: {backend: roofline, tokens: [1, 16, 128, 2048], launch_cost_ns: null}
    plan: {budgets: [decode@16=0.45, prefill@2048=0.9], memory_gb: null, pareto: 12,
           workload: null, slo: []}     # and every other option of `trtq plan` (trtq/plan/request.py)
    sensitivity: {method: hessian, samples: 4, seq_len: 256, probes: 6}
    texts: {calibration: null, evaluation: null}   # UTF-8 files; null: the shipped texts
    quality: {max_ppl_increase: 5.0, seq_len: 256, windows: 16, calib_samples: 8, lm_eval: {}}
    compute: {device: cpu, dtype: float32, sequential: false}   # where sensitivity, the evaluations, quantize
                                        # and eval run the model; sequential: one decoder block in memory at a time
    quantize: {enabled: true, gpus: []} # [] = every GPU with a selected plan
    build: {enabled: true, backend: pytorch, tp: null, max_batch_size: null}
    bench: {enabled: true, concurrency: [1, 8, 32], isl: 1024, osl: 128}
    report: {enabled: true}
    output: engines/demo                # the artifact tree; relative paths are relative to the current directory
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator

from trtq.artifacts.io import StrictModel, read_structured, validate_model
from trtq.errors import InputError
from trtq.model.device import DeviceSettings
from trtq.plan.request import MAX_PARETO_POINTS, PlanRequest
from trtq.run import STAGES  # noqa: F401  (the order of the stages, one definition)
from trtq.settings import setting

PIPELINE_SCHEMA_VERSION = 1


class GpuEntry(StrictModel):
    name: str
    price_per_hour: float | None = Field(default=None, ge=0)  # USD per GPU-hour, optional


class ProfileSettings(StrictModel):
    backend: Literal["roofline", "aiconfigurator", "cuda", "cpu"] = "roofline"
    tokens: list[int] = Field(default=[1, 16, 128, 2048], min_length=1)
    # Per-GEMM launch cost added by the roofline; 0 plans against kernel time (small models), null: the backend's.
    launch_cost_ns: float | None = Field(default=None, ge=0)


class PlanSettings(PlanRequest):
    """The `plan:` section: `trtq plan`'s own request (trtq.plan.request, every option and check of it), less
    `runtime` (the pipeline's top level), with the budgets required (the points each GPU's front sweeps) and a
    front by default (its points are the candidates of the gated selection). `slo` is read as `slos`."""

    budgets: list[str] = Field(min_length=1)
    pareto: int = Field(default=12, ge=2, le=MAX_PARETO_POINTS)
    slos: list[str] = Field(default=[], validation_alias=AliasChoices("slos", "slo"))
    runtime: None = None

    @field_validator("runtime", mode="before")
    @classmethod
    def _runtime_at_top(cls, runtime: object) -> object:
        if runtime is not None:
            raise ValueError("runtime is set at the pipeline's top level (every stage plans for it), not under plan")
        return runtime

    def request(self, runtime: str | None, **fields) -> PlanRequest:
        """The plan stage's request: these settings under the pipeline's runtime, `fields` replacing some."""
        return PlanRequest(**{**self.model_dump(), "runtime": runtime, **fields})


class SensitivitySettings(StrictModel):
    method: Literal["weight", "hessian", "fisher", "autoquantize"] = "hessian"
    formats: str | None = None  # comma-separated; null: every format trtq knows
    samples: int = Field(default=8, ge=1)
    seq_len: int = Field(default=512, ge=2)
    probes: int | None = Field(default=None, ge=2)  # Hutchinson probes at most (hessian)
    seed: int = Field(default=0, ge=0)


class TextSettings(StrictModel):
    calibration: str | None = None  # null: the shipped calibration text
    evaluation: str | None = None  # null: the shipped evaluation text


class ComputeSettings(DeviceSettings):
    """Where the stages that run the model (sensitivity, the front's evaluations, quantize, eval) run it, and
    whether they hold one decoder block at a time: the options of `trtq sensitivity`, `quantize` and `eval`."""

    sequential: bool = setting(
        False,
        "one decoder block in memory at a time: sensitivity (weight, fisher, hessian) streams the safetensors, "
        "quantize and the plan evaluations offload the blocks and calibrate layerwise, eval streams the checkpoint",
    )


class QualityGate(StrictModel):
    max_ppl_increase: float = Field(default=5.0, ge=0)  # percent over bf16 on the evaluation text
    seq_len: int = Field(default=512, ge=2)
    windows: int = Field(default=32, ge=1)
    calib_samples: int = Field(default=16, ge=1)
    lm_eval: dict[str, float] = {}  # task -> max relative drop in percent
    lm_eval_limit: int | None = Field(default=None, ge=1)
    seed: int = Field(default=0, ge=0)


class StageSwitch(StrictModel):
    enabled: bool = True


class QuantizeSettings(StageSwitch):
    gpus: list[str] = []  # [] = every GPU with a selected plan


class BuildSettings(StageSwitch):
    backend: Literal["pytorch", "engine"] = "pytorch"
    tp: int | None = Field(default=None, ge=1)
    max_batch_size: int | None = Field(default=None, ge=1)
    max_seq_len: int | None = Field(default=None, ge=1)


class BenchSettings(StageSwitch):
    concurrency: list[int] = Field(default=[1, 8, 32], min_length=1)
    isl: int = Field(default=1024, ge=1)
    osl: int = Field(default=128, ge=1)
    requests: int | None = Field(default=None, ge=1)
    tool: Literal["aiperf", "genai-perf", "trtllm-bench"] = "aiperf"


class Pipeline(StrictModel):
    schema_version: Literal[1]
    model: str
    gpus: list[GpuEntry] = Field(min_length=1)
    runtime: str | None = None
    profile: ProfileSettings = ProfileSettings()
    plan: PlanSettings
    sensitivity: SensitivitySettings = SensitivitySettings()
    texts: TextSettings = TextSettings()
    quality: QualityGate = QualityGate()
    compute: ComputeSettings = ComputeSettings()
    quantize: QuantizeSettings = QuantizeSettings()
    build: BuildSettings = BuildSettings()
    bench: BenchSettings = BenchSettings()
    report: StageSwitch = StageSwitch()
    output: str = "engines/run"

    def gpu_names(self) -> list[str]:
        return [g.name for g in self.gpus]

    def section_hash(self, *names: str) -> str:
        """A stable hash of some top-level sections: what a stage's cache key depends on."""
        data = {name: _jsonable(getattr(self, name)) for name in names}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _jsonable(value):
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


REQUEST_SECTIONS = ("plan", "compute")


def load_pipeline(path: str | Path) -> Pipeline:
    """Parse, validate and check a pipeline file against the registries; every failure is one line."""
    p = Path(path)
    data = read_structured(p, "pipeline file")
    if not isinstance(data, dict):
        raise InputError(f"{p}: a pipeline file is a mapping (see examples/smollm2.yaml)")
    version = data.get("schema_version")
    if version != PIPELINE_SCHEMA_VERSION:
        raise InputError(
            f"{p}: pipeline schema_version {version!r} is not supported "
            f"(this trtq reads version {PIPELINE_SCHEMA_VERSION})"
        )
    # The sections that are a command's own request (`trtq plan`'s, the device options) check themselves and
    # name the option; checked one by one first, so the error names its section.
    for name in REQUEST_SECTIONS:
        section = data.get(name)
        if isinstance(section, dict):
            try:
                Pipeline.model_fields[name].annotation(**section)
            except InputError as exc:
                raise InputError(f"pipeline file {p}: {name}: {exc}") from None
    pipeline = validate_model(Pipeline, data, f"pipeline file {p}")
    check_pipeline(pipeline, p)
    return pipeline


def check_pipeline(pipeline: Pipeline, where: Path | str = "pipeline") -> None:
    """What the schema cannot see: names the registries must know, budgets that parse, texts that exist."""
    from trtq.eval.lm_eval import parse_task_spec
    from trtq.model.zoo import resolve_model
    from trtq.plan.budgets import parse_budgets
    from trtq.registry import get_gpu
    from trtq.registry.runtimes import get_runtime

    def one_line(what: str, exc: Exception) -> InputError:
        return InputError(f"{where}: {what}: {exc}")

    names = []
    for i, entry in enumerate(pipeline.gpus):
        try:
            names.append(get_gpu(entry.name).name)
        except InputError as exc:
            raise one_line(f"gpus[{i}]", exc) from None
    if len(set(names)) != len(names):
        raise InputError(f"{where}: gpus: a GPU is named twice ({', '.join(names)})")
    for entry, name in zip(pipeline.gpus, names):
        entry.name = name  # the registry's spelling, so artifact names are stable
    for name in pipeline.quantize.gpus:
        try:
            gpu = get_gpu(name).name
        except InputError as exc:
            raise one_line("quantize.gpus", exc) from None
        if gpu not in names:
            raise InputError(f"{where}: quantize.gpus: {gpu} is not one of the pipeline's gpus")
    try:
        get_runtime(pipeline.runtime)
    except InputError as exc:
        raise one_line("plan", exc) from None
    budget_tokens = {b.tokens for b in parse_budgets(pipeline.plan.budgets)}
    missing = sorted(budget_tokens - set(pipeline.profile.tokens))
    if missing:
        raise InputError(f"{where}: profile.tokens has no {', '.join(map(str, missing))}: the budgets need them")
    if pipeline.quality.lm_eval:
        parse_task_spec(",".join(f"{k}={v}" for k, v in pipeline.quality.lm_eval.items()))
    # compute.device is checked against the machine where a stage runs it (a Ray worker may hold the GPU).
    compute = pipeline.compute
    if compute.sequential and pipeline.quality.lm_eval:
        raise InputError(f"{where}: quality.lm_eval runs the whole model loaded: not with compute.sequential")
    if compute.sequential and pipeline.sensitivity.method == "autoquantize":
        raise InputError(
            f"{where}: sensitivity.method autoquantize (ModelOpt's search) loads the whole model: not with "
            "compute.sequential"
        )
    for what, text in (
        ("texts.calibration", pipeline.texts.calibration),
        ("texts.evaluation", pipeline.texts.evaluation),
    ):
        if text is not None and not Path(text).is_file():
            raise InputError(f"{where}: {what}: no such file {text}")
    try:
        resolve_model(pipeline.model)
    except InputError as exc:
        raise one_line("model", exc) from None
