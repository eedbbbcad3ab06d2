"""The eval stage's settings, declared once: `trtq eval`'s options and `evaluate`'s request."""

from __future__ import annotations

from trtq.model.device import DeviceSettings
from trtq.options import MAX_COUNT, MAX_TOKENS
from trtq.quantize.request import CalibrationSettings
from trtq.settings import setting


class EvalRequest(CalibrationSettings, DeviceSettings):
    """The calibration settings (inherited) apply to `--plan` only: a checkpoint was calibrated when exported."""

    model: str = setting(..., "a model with weights: smollm2-135m or a local directory with safetensors")
    plan: str | None = setting(None, "plan.yaml from `trtq plan`")
    checkpoint: str | None = setting(
        None, "a checkpoint written by `trtq quantize` (engines/NAME, or its hf/ directory)", metavar="DIR"
    )
    sequential: bool = setting(
        False,
        "one decoder block in memory at a time: --checkpoint streams the reference and the checkpoint from their "
        "safetensors block by block; --plan offloads the blocks (host RAM on a GPU, disk beside -o on a CPU) and "
        "calibrates layerwise, as quantize --sequential; no --lm-eval",
    )
    text: str | None = setting(None, "UTF-8 evaluation text (default: the shipped evaluation text)", metavar="FILE")
    seq_len: int = setting(512, "tokens per window", ge=2, le=MAX_TOKENS)
    windows: int = setting(32, "windows scored, spread evenly over the text (0 = all)", ge=0, le=MAX_COUNT)
    max_ppl_increase: float = setting(
        5.0, "largest relative perplexity increase that passes, percent", ge=0, le=1e6, metavar="PERCENT"
    )
    lm_eval: str | None = setting(
        None,
        "comma-separated lm-eval tasks, each optionally =THRESHOLD percent (defaults: mmlu 3, hellaswag 2, "
        "gsm8k 5, others 5); trtq_devil_definitions runs offline",
        metavar="TASKS",
    )
    lm_eval_limit: int | None = setting(None, "score only the first N documents of each task", ge=1, le=MAX_COUNT)

    @property
    def max_windows(self) -> int | None:
        """The windows to score; None = all."""
        return None if self.windows == 0 else self.windows
