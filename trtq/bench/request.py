"""The bench stage's settings, declared once: `trtq bench`'s options and `run_sweep`'s request."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import field_validator, model_validator

from trtq.options import MAX_CONCURRENCY, MAX_COUNT, MAX_SECONDS, MAX_TOKENS, int_list
from trtq.settings import Request, setting


def parse_concurrencies(spec: str) -> list[int]:
    return int_list(spec, "--concurrency", maximum=MAX_CONCURRENCY)


class SweepRequest(Request):
    engine: Path | None = setting(
        None, "trtq build output (build_record.json): trtq serves it (or trtllm-bench runs it)", metavar="DIR"
    )
    url: str | None = setting(None, "a running OpenAI-compatible server, e.g. http://127.0.0.1:8000")
    model: str | None = setting(None, "model name sent in requests (and recorded)")
    concurrencies: list[int] = setting(
        [1, 4, 16, 64], "comma-separated sweep (default 1,4,16,64)", flag="--concurrency", metavar="N,N,..."
    )
    isl: int = setting(128, "input sequence length, tokens", ge=1, le=MAX_TOKENS)
    osl: int = setting(128, "output sequence length, tokens", ge=1, le=MAX_TOKENS)
    requests: int | None = setting(
        None, "requests per concurrency (default max(16, 4 x concurrency))", ge=1, le=MAX_COUNT
    )
    warmup: int | None = setting(
        None, "warm-up requests per concurrency (default: the concurrency)", ge=0, le=MAX_COUNT
    )
    tool: Literal["aiperf", "trtllm-bench", "genai-perf"] = setting(
        "aiperf",
        "aiperf (default): serving sweep; trtllm-bench: offline throughput/latency, needs --engine; "
        "genai-perf: deprecated upstream for AIPerf, kept for old setups (needs perf_analyzer)",
    )
    bench_mode: Literal["throughput", "latency"] = setting(
        "throughput", "with --tool trtllm-bench: `throughput` per concurrency, or one `latency` run"
    )
    tokenizer: str | None = setting(None, "tokenizer name or local directory (default: the engine's, else --model)")
    endpoint_type: Literal["chat", "completions"] = setting("chat", "the OpenAI endpoint the load generator calls")
    gpu: str | None = setting(None, "GPU the server runs on, recorded in the table (default: the build's)")
    plan: Path | None = setting(None, "plan.yaml to record the hash of (default: the build's)", metavar="PLAN_YAML")
    startup_timeout_s: float = setting(
        1800.0,
        "seconds to wait for trtllm-serve /health",
        flag="--startup-timeout",
        gt=0,
        le=MAX_SECONDS,
        metavar="SECONDS",
    )
    output: Path | None = setting(None, "results directory, e.g. results/NAME/", metavar="DIR")

    @field_validator("concurrencies", mode="before")
    @classmethod
    def _concurrencies(cls, value: object) -> object:
        return parse_concurrencies(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _what_to_measure(self) -> SweepRequest:
        if not self.model:
            raise ValueError("trtq bench needs --model (the name requests carry)")
        if self.output is None:
            raise ValueError("trtq bench needs -o DIR (results directory)")
        if (self.engine is None) == (self.url is None):
            raise ValueError("give --engine DIR (trtq serves it) or --url URL (a running server), not both")
        return self
