"""Per-layer, per-format quality cost Omega, the planner's objective."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from trtq.artifacts.io import Artifact, StrictModel


class SensitivityRow(StrictModel):
    layer: str
    format: str
    group_size: int | None
    weight_error: float  # ||W_f - W||_F^2, W_f the format's weight in the layer's space
    omega: float  # the cost the planner minimises
    hessian_trace: float | None = None  # method=hessian: tr(H_W) / numel(W)
    input_error: float | None = None  # method=hessian: ||X_f - X||_F^2, mean over calibration batches
    input_hessian_trace: float | None = None  # method=hessian: tr(H_X) / numel(X)
    raw_score: float | None = None  # method=autoquantize: the layer's own score, before the group sum


class TraceEstimate(StrictModel):
    """Hutchinson estimate of tr(H) for one layer's weight or input (method=hessian)."""

    layer: str
    operand: Literal["weight", "input"]
    trace: float  # tr(H), averaged over the calibration batches
    numel: int  # elements of the tensor (of one batch's input)
    iterations: int
    relative_change: float
    converged: bool


class Sensitivity(Artifact):
    KIND: ClassVar[str] = "sensitivity"
    SCHEMA_VERSION: ClassVar[int] = 2

    model: str
    method: Literal["weight", "hessian", "fisher", "autoquantize", "output"]
    formats: list[str]
    settings: dict[str, Any] = {}
    rows: list[SensitivityRow]
    traces: list[TraceEstimate] = []
    # KV-cache format -> Omega of quantizing the whole model's KV cache to it (bf16: 0), on the same
    # scale as the rows' Omega; empty when not measured (the planner then keeps the KV cache bf16).
    kv_cache: dict[str, float] = {}
    kv_cache_method: str | None = None

    def omega_map(self) -> dict[tuple[str, str], float]:
        return {(r.layer, r.format): r.omega for r in self.rows}

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([r.model_dump() for r in self.rows])
