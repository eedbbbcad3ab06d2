"""Load-generator command lines: GenAI-Perf (needs perf_analyzer) or AIPerf, one run per concurrency.

Both talk to an OpenAI-compatible endpoint (`trtllm-serve`), stream (so TTFT and ITL exist),
send synthetic prompts of a fixed input length and ask for a fixed output length with
`ignore_eos` (TensorRT-LLM honours it), seeded. Flags verified against `aiperf profile --help`
(0.13.0) and `genai-perf profile --help` (0.0.16).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from trtq.errors import InputError, MissingToolError

TOOLS = ("genai-perf", "aiperf")
EXPORT_FILES = {"aiperf": "profile_export_aiperf.json", "genai-perf": "profile_export_genai_perf.json"}


@dataclass(frozen=True)
class LoadSpec:
    url: str
    model: str
    tokenizer: str
    concurrency: int
    requests: int
    isl: int
    osl: int
    artifact_dir: Path
    warmup_requests: int = 0
    endpoint_type: str = "chat"
    seed: int = 0


def _find_executable(name: str) -> str | None:
    # Prefer the one installed beside this interpreter (the venv trtq runs from).
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def choose_tool(requested: str = "auto") -> tuple[str, str]:
    """(tool, executable). auto: GenAI-Perf where perf_analyzer is on PATH, AIPerf otherwise."""
    if requested not in ("auto", *TOOLS):
        raise InputError(f"unknown load generator {requested!r}; choose genai-perf, aiperf or auto")
    if requested == "auto":
        requested = "genai-perf" if shutil.which("perf_analyzer") and _find_executable("genai-perf") else "aiperf"
    executable = _find_executable(requested)
    if executable is None:
        raise MissingToolError(f"{requested} is not installed here: pip install 'trtq[bench]'")
    if requested == "genai-perf" and shutil.which("perf_analyzer") is None:
        raise MissingToolError("genai-perf needs the perf_analyzer binary (Triton SDK container); use --tool aiperf")
    return requested, executable


def tool_version(tool: str, executable: str) -> str:
    try:
        return importlib.metadata.version(tool)
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        result = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    words = (result.stdout or result.stderr).strip().split()
    return words[-1] if words else "unknown"


# Each tool's flag for each setting of a LoadSpec (the two spell the same run differently).
_FLAGS = {
    "aiperf": {
        "model": "--model",
        "url": "--url",
        "isl": "--isl",
        "isl_stddev": "--isl-stddev",
        "osl": "--osl",
        "osl_stddev": "--osl-stddev",
    },
    "genai-perf": {
        "model": "-m",
        "url": "-u",
        "isl": "--synthetic-input-tokens-mean",
        "isl_stddev": "--synthetic-input-tokens-stddev",
        "osl": "--output-tokens-mean",
        "osl_stddev": "--output-tokens-stddev",
    },
}
# Flags one tool has and the other lacks: AIPerf's live dashboard would write to a pipe.
_TOOL_ONLY = {"aiperf": ["--ui-type", "none"], "genai-perf": []}


def loadgen_command(tool: str, executable: str, spec: LoadSpec) -> list[str]:
    """`tool profile ...` for one concurrency: streamed, fixed input and output lengths, ignore_eos, seeded."""
    flag = _FLAGS[tool]
    command = [
        executable,
        "profile",
        flag["model"],
        spec.model,
        flag["url"],
        spec.url,
        "--endpoint-type",
        spec.endpoint_type,
        "--streaming",
        "--concurrency",
        str(spec.concurrency),
        "--request-count",
        str(spec.requests),
        flag["isl"],
        str(spec.isl),
        flag["isl_stddev"],
        "0",
        flag["osl"],
        str(spec.osl),
        flag["osl_stddev"],
        "0",
        "--extra-inputs",
        "ignore_eos:true",
        "--tokenizer",
        spec.tokenizer,
        "--random-seed",
        str(spec.seed),
        "--artifact-dir",
        str(spec.artifact_dir),
        *_TOOL_ONLY[tool],
    ]
    if spec.warmup_requests:
        command += ["--warmup-request-count", str(spec.warmup_requests)]
    return command


def loadgen_env(tool: str, tokenizer: str) -> dict[str, str]:
    """The environment for the load generator.

    AIPerf 0.13 resolves every tokenizer name through the Hub cache when HF_HUB_OFFLINE is set,
    which rejects a local directory (HFValidationError); a local directory loads without the Hub,
    so offline flags are dropped for it.
    """
    env = dict(os.environ)
    if tool == "aiperf" and Path(tokenizer).is_dir():
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            env.pop(name, None)
    return env
