"""roofline_calibration: the roofline's fractions and launch cost fitted to a measured table of one GPU.

Written by `trtq profile --calibrate-from MEASURED --fit-out FIT` (trtq.profile.calibrate, which
also says how the fit is made), read by `--calibrate FIT`.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from trtq.artifacts.io import Artifact, InputRef, StrictModel


class FitError(StrictModel):
    rows: int
    median_abs_rel_error: float  # median |predicted / measured - 1|
    max_abs_rel_error: float
    median_rel_error: float  # signed: > 0 means the roofline predicts slower than measured


class FormatFit(StrictModel):
    compute_fraction: float
    bandwidth_fraction: float
    compute_identified: bool  # some measured row is compute-bound under the fit
    bandwidth_identified: bool  # some measured row is memory-bound under the fit
    compute_bound_rows: int
    memory_bound_rows: int
    before: FitError  # datasheet fractions and launch cost
    after: FitError
    # The activation-quantize pass in bf16 input reads (0 unless fitted with activation_pass=True).
    activation_pass: float = 0.0


class RooflineCalibration(Artifact):
    KIND: ClassVar[str] = "roofline_calibration"
    SCHEMA_VERSION: ClassVar[int] = 2
    # Schema 1 lacks the formats' activation_pass (0 by default): still readable.
    READS_SCHEMA_VERSIONS: ClassVar[tuple[int, ...]] = (1, 2)

    gpu: str  # registry name; the calibration applies to this GPU only
    source_profile: InputRef  # the measured table (path, sha256)
    source_backend: str
    source_model: str
    method: str
    launch_cost_ns: float = Field(ge=0)
    datasheet_launch_cost_ns: float
    datasheet_compute_fraction: float
    datasheet_bandwidth_fraction: float
    formats: dict[str, FormatFit]
    before: FitError  # all fitted rows, datasheet roofline
    after: FitError  # all fitted rows, calibrated roofline
    skipped_rows: int  # rows without a latency (unsupported) or of formats the GPU lacks

    def summary(self) -> dict:
        """What a calibrated profile records in its settings."""
        return {
            "gpu": self.gpu,
            "source_profile": self.source_profile.model_dump(),
            "source_backend": self.source_backend,
            "source_model": self.source_model,
            "launch_cost_ns": self.launch_cost_ns,
            "fractions": {
                f: {
                    "compute": fit.compute_fraction,
                    "bandwidth": fit.bandwidth_fraction,
                    "compute_identified": fit.compute_identified,
                    "bandwidth_identified": fit.bandwidth_identified,
                }
                for f, fit in self.formats.items()
            },
            "before": self.before.model_dump(),
            "after": self.after.model_dump(),
        }
