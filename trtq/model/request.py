"""The layers stage's settings, declared once: `trtq layers`' options and `layers_of`'s request."""

from __future__ import annotations

from trtq.settings import Request, setting


class LayersRequest(Request):
    model: str = setting(..., "built-in alias (smollm2-135m, llama-3.1-8b ...), HF id or local path")
    include_lm_head: bool = setting(False, "treat lm_head as quantizable")
