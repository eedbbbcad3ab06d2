"""The report stage's settings, declared once: `trtq report`'s options and `write_report`'s request."""

from __future__ import annotations

from pathlib import Path

from pydantic import field_validator, model_validator

from trtq.settings import Request, checked_workload, setting


class ReportRequest(Request):
    plans: list[Path] = setting(..., "a plan file, or with compare: plan files and/or directories of plans")
    compare: bool = setting(False, "the hardware comparison of one model across GPUs (trtq report compare)")
    profile: Path | None = setting(None, "PLAN only: the latency profile the plan was made from")
    sensitivity: Path | None = setting(None, "PLAN only: the sensitivity artifact (per-layer heatmap)")
    eval_result: Path | None = setting(None, "PLAN only: eval result (perplexity, pass/fail)", flag="--eval")
    bench: list[Path] = setting(
        [], "tidy bench table (.parquet or .csv) from `trtq bench`; compare takes it more than once", metavar="TABLE"
    )
    quality_bound: float | None = setting(
        None,
        "compare only: pick each GPU's fastest plan with Σ sensitivity <= OMEGA (default: the smallest Σ "
        "among the chosen plans)",
        ge=0,
        metavar="OMEGA",
    )
    fraction: float | None = setting(
        None, "compare only: pick each GPU's plan at budget fraction F of all-bf16 instead", gt=0, le=1e6, metavar="F"
    )

    workload: str | None = setting(
        None,
        "compare only: predict each GPU's plan served at this workload (trtq predict: TTFT, TPOT, output tokens/s "
        "per GPU, the largest concurrency whose KV cache fits)",
        metavar="isl=N,osl=N[,concurrency=N] | FILE",
    )

    _workload = field_validator("workload")(checked_workload)

    @model_validator(mode="after")
    def _mode_options(self) -> ReportRequest:
        """Options of the other mode are refused, before any file is read."""
        if self.compare:
            if not self.plans:
                raise ValueError("report compare needs at least one plan file or directory")
            given = [
                flag
                for flag, value in (
                    ("--profile", self.profile),
                    ("--sensitivity", self.sensitivity),
                    ("--eval", self.eval_result),
                )
                if value is not None
            ]
            if given:
                raise ValueError(f"{', '.join(given)} apply to a single-plan report, not to report compare")
            if self.quality_bound is not None and self.fraction is not None:
                raise ValueError("give either --quality-bound or --fraction, not both")
        else:
            if len(self.plans) != 1:
                raise ValueError(
                    f"report takes one plan (got {len(self.plans)}); to compare plans use `trtq report compare ...`"
                )
            if self.quality_bound is not None or self.fraction is not None or self.workload is not None:
                raise ValueError("--quality-bound, --fraction and --workload apply to report compare only")
            if len(self.bench) > 1:
                raise ValueError("a single-plan report takes one --bench table")
        return self
