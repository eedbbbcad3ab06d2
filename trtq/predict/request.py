"""The predict stage's settings, declared once: `trtq predict`'s options and `predict`'s request."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import field_validator

from trtq.options import MAX_CONCURRENCY, MAX_PARALLEL
from trtq.settings import Request, checked_workload, setting

if TYPE_CHECKING:
    from trtq.predict.step import Workload

# The runtime's default max batch size (TensorRT-LLM's, as aiconfigurator models it; trtq.predict.step).
DEFAULT_MAX_BATCH_SIZE = 512


class PredictRequest(Request):
    target: str = setting(..., "plan file (plan.yaml), or a model (alias, HF id, directory) with --uniform")
    uniform: str | None = setting(None, "every GEMM group in FORMAT (for a model)", metavar="FORMAT")
    gpu: str | None = setting(None, "target GPU from `trtq gpus` (default: the plan's)")
    workload: str = setting(
        ...,
        "prompt and answer lengths in tokens, and requests in flight (default 1; ignored with "
        "--max-throughput), or a YAML/JSON file with isl, osl, concurrency",
        metavar="isl=N,osl=N[,concurrency=N]",
    )
    tp: int = setting(1, "tensor-parallel size", ge=1, le=MAX_PARALLEL)
    kv_format: str | None = setting(None, "KV-cache format: bf16 (default) or fp8")
    max_throughput: bool = setting(False, "steady state at an infinite request rate (best batch and context chunk)")
    max_batch_size: int = setting(DEFAULT_MAX_BATCH_SIZE, "runtime max batch size", ge=1, le=MAX_CONCURRENCY)
    profile: str | None = setting(
        None, "GEMM latencies from this trtq profile instead of aiconfigurator's tables", metavar="FILE"
    )

    _workload = field_validator("workload")(checked_workload)

    @field_validator("kv_format")
    @classmethod
    def _kv_format(cls, kv_format: str | None) -> str | None:
        return kv_format.strip().lower() if kv_format else None

    @property
    def parsed_workload(self) -> Workload:
        from trtq.predict.step import parse_workload

        return parse_workload(self.workload)
