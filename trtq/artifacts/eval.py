"""eval.json: perplexity of a quantized plan against bf16 on one text (minimal schema).

Defined by the report stage so it can read evaluations; the eval stage owns it and may extend it.
"""

from __future__ import annotations

from typing import ClassVar

from trtq.artifacts.io import Artifact


class EvalResult(Artifact):
    KIND: ClassVar[str] = "eval"
    SCHEMA_VERSION: ClassVar[int] = 1

    model: str
    plan_sha256: str | None = None    # sha256 of the plan file that was evaluated
    text: str                         # which text perplexity was measured on
    seq_len: int
    ppl_bf16: float
    ppl_quant: float
    relative_increase: float          # ppl_quant / ppl_bf16 - 1
    threshold: float                  # the largest relative increase that passes
    passed: bool
