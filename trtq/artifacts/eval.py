"""eval.json: perplexity of a quantized plan against bf16 on one text (minimal schema).

Defined by the report stage so it can read evaluations; the eval stage owns it and may extend it.
The fields after `passed` are the eval stage's extensions; all have defaults, so the
minimal schema the report reads and writes in its tests stays valid.
Ratios are fractions (0.05 = 5%), as the report expects.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from trtq.artifacts.io import Artifact, StrictModel


class TaskResult(StrictModel):
    """One lm-evaluation-harness task, reference model against quantized model."""

    task: str
    metric: str  # e.g. "acc"
    reference: float
    quantized: float
    degradation: float  # relative drop: (reference - quantized) / reference
    threshold: float  # the task passes when degradation <= threshold
    passed: bool
    samples: int


class EvalResult(Artifact):
    KIND: ClassVar[str] = "eval"
    SCHEMA_VERSION: ClassVar[int] = 1

    model: str
    plan_sha256: str | None = None  # sha256 of the plan file that was evaluated
    text: str  # which text perplexity was measured on (its path)
    seq_len: int
    ppl_bf16: float  # the unquantized reference model
    ppl_quant: float
    relative_increase: float  # ppl_quant / ppl_bf16 - 1
    threshold: float  # the largest relative increase that passes
    passed: bool  # perplexity gate and every lm-eval task
    # --- eval-stage extensions ---
    source: Literal["plan", "checkpoint"] = "plan"  # what the quantized model came from
    plan: str | None = None  # path of the plan
    checkpoint: str | None = None  # directory of an exported checkpoint
    text_sha256: str | None = None  # of the text as read (UTF-8)
    windows: int | None = None  # seq_len-token windows scored
    tokens: int | None = None  # tokens predicted per model: windows * (seq_len - 1)
    lm_eval: list[TaskResult] = []
    layer_formats: dict[str, int] = {}  # format -> number of layers in it
