"""The aiconfigurator backend: GEMM latencies NVIDIA measured on real GPUs, from PyPI `aiconfigurator-core`.

The package ships parquet tables under `aiconfigurator_core/systems/data/<system>/gemm/<framework>/<version>/`
(latency by m, n, k and GEMM dtype, in ms). This backend reads them, as `trtq predict` does, through
trtq/profile/aiconfigurator_tables.py: the package's compiled estimator bound to the tables (its
interpolation; the package removed its per-call `query_gemm` in 0.12), the systems directory located by
`importlib`: nothing is copied into this repository.

Every row says where its number comes from (`ProfileRow.provenance`, the rule of aiconfigurator_tables.py):

- `measured`: (m, n, k) is a grid point of the table for that dtype; the latency is the table's own value.
- `interpolated`: inside the table's m, n and k ranges, between grid points: the package's estimator.
- `extrapolated`: outside those ranges (e.g. an lm_head with n = 128256 > 65536): the package's estimator,
  flagged because no measurement brackets it.
- `modelled`: the package's estimator answered from its own models rather than the tables; or the tables
  hold no such format on that GPU (INT4-AWQ, W4A8 on H100 ...): the roofline,
  calibrated (trtq/profile/calibrate.py, with the activation-quantize pass) on the GPU's measured grid
  points, fills the row. An unmeasured format takes the fitted fractions (and, if it quantizes its
  activations, the activation pass) of the measured format with the same tensor-core rate (INT4-AWQ:
  bf16; W4A8: per-tensor fp8) and the shared launch cost. benchmarks/roofline_vs_measured.py measures
  how far this model is from held-out measurements.

Formats the GPU cannot run (the format registry's gating) and block sizes that do not divide a layer's
input width stay `unsupported` rows with the reason, as in the other backends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trtq.artifacts.profile import ProfileRow
from trtq.errors import InputError, UnknownNameError
from trtq.profile.aiconfigurator_tables import (  # noqa: F401 - the backend's vocabulary, re-exported
    DEFAULT_FRAMEWORK,
    FRAMEWORKS,
    MS_TO_NS,
    PACKAGE,
    PINNED_VERSION,
    AicTables,
    default_systems_root,
    package_version,
    resolve_version,
    system_for,
    table_dtype,
    table_dtypes,
    unmapped_reasons,
)
from trtq.profile.harness import GemmCase
from trtq.registry.formats import get_format
from trtq.registry.gpus import GpuSpec

# ---- the modelled rows: the roofline calibrated on the measured grid points ------------------------------

FIT_SIDES = (1024, 4096, 16384)  # n and k of the grid points the calibration fits (kept small: seconds)
FIT_TOKENS = (1, 16, 128, 1024, 4096, 16384)


def fit_rows(tables: AicTables, gpu: GpuSpec) -> list[ProfileRow]:
    """Measured grid points of every mapped format the GPU runs, as profile rows for the calibration."""
    rows = []
    for fmt_name, dtype in table_dtypes().items():
        if dtype is None or dtype not in tables.grid:
            continue
        try:
            fmt = get_format(fmt_name)
        except UnknownNameError:
            continue
        if not gpu.supports(fmt):
            continue
        for (m, n, k), ms in tables.grid[dtype].items():
            if n in FIT_SIDES and k in FIT_SIDES and m in FIT_TOKENS and fmt.available_for(k):
                rows.append(
                    ProfileRow(
                        out_features=n,
                        in_features=k,
                        tokens=m,
                        format=fmt_name,
                        status="ok",
                        latency_ns=ms * MS_TO_NS,
                        method="aiconfigurator grid point",
                        provenance="measured",
                    )
                )
    return rows


def modelled_params(gpu: GpuSpec, rows: list[ProfileRow]):
    """RooflineParams fitted to the measured rows; unmeasured formats borrow the same-compute-rate fit."""
    from trtq.profile.calibrate import fit_roofline
    from trtq.profile.roofline import RooflineParams
    from trtq.registry.formats import FORMATS

    start = RooflineParams.for_gpu(gpu)
    result = fit_roofline(gpu, rows, start, activation_pass=True)
    compute = {f: fit.compute_fraction for f, fit in result.formats.items()}
    bandwidth = {f: fit.bandwidth_fraction for f, fit in result.formats.items()}
    activation = {f: fit.activation_pass for f, fit in result.formats.items()}
    borrowed = {}
    for fmt in FORMATS.values():
        if fmt.name in compute:
            continue
        # Same tensor-core rate, else same activation width (INT8-SQ on Hopper: per-tensor FP8); a block-scaled
        # donor last (its kernels differ most).
        measured = sorted(result.formats, key=lambda f: get_format(f).act_block_size is not None)
        donors = [f for f in measured if get_format(f).compute == fmt.compute]
        donors = donors or [f for f in measured if get_format(f).act_bits == fmt.act_bits]
        if donors:
            compute[fmt.name], bandwidth[fmt.name] = compute[donors[0]], bandwidth[donors[0]]
            activation[fmt.name] = activation[donors[0]] if fmt.act_dtype != "bf16" else 0.0
            borrowed[fmt.name] = donors[0]
    params = start.model_copy(
        update={
            "compute_fraction": compute,
            "bandwidth_fraction": bandwidth,
            "launch_cost_ns": result.launch_cost_ns,
            "activation_pass": activation,
            "source": (
                f"roofline fitted to {result.after.rows} measured {PACKAGE} grid points: median |error| "
                f"{result.before.median_abs_rel_error:.1%} -> {result.after.median_abs_rel_error:.1%} "
                "(in-sample); unmeasured formats borrow the fit of the format with their compute rate"
            ),
        }
    )
    summary = {
        "rows": result.after.rows,
        "launch_cost_ns": result.launch_cost_ns,
        "before": result.before.model_dump(),
        "after": result.after.model_dump(),
        "fractions": {
            f: {"compute": compute[f], "bandwidth": bandwidth[f], "activation_pass": activation[f]} for f in compute
        },
        "borrowed_from": borrowed,
    }
    return params, summary


class AiconfiguratorBackend:
    name = "aiconfigurator"
    measures = True  # the table values are GPU measurements; no launch cost is added
    launch_cost_ns = 0.0
    # MoE grouped GEMMs: the calibrated roofline's grouped-GEMM model (rows "modelled"); the package's
    # MoE tables are not read yet.
    moe_grouped_gemm = True

    def __init__(
        self, gpu: GpuSpec, framework: str | None = None, version: str | None = None, systems_root: Path | None = None
    ):
        self.gpu = gpu
        self.tables = AicTables.for_gpu(gpu, framework, version, systems_root)
        self.systems_root: Path = self.tables.systems_root
        self.framework, self.system, self.version = self.tables.framework, self.tables.system, self.tables.version
        self._modelled = None

    def _model(self):
        if self._modelled is None:
            rows = fit_rows(self.tables, self.gpu)
            if not rows:
                raise InputError(
                    f"{PACKAGE}: the {self.framework} {self.version} tables of {self.system} hold no "
                    f"format {self.gpu.name} runs: nothing to calibrate the modelled rows on"
                )
            self._modelled = modelled_params(self.gpu, rows)
        return self._modelled

    def device_info(self) -> dict:
        return {
            "gpu": self.gpu.name,
            "sm": self.gpu.sm,
            "system": self.system,
            "source": f"{PACKAGE} {package_version()} tables ({self.framework} {self.version})",
        }

    def settings(self) -> dict:
        settings = {
            "package": PACKAGE,
            "package_version": package_version(),
            "system": self.system,
            "framework": self.framework,
            "framework_version": self.version,
            "table_files": self.tables.table_files(),
            "table_dtypes": self.tables.dtypes,
            "format_dtypes": table_dtypes(),
            "interpolation": "the package's compiled estimator (AicEngine.evaluate_ops_json, SILICON view)",
        }
        if self._modelled is not None:
            settings["modelled"] = self._modelled[1]
        return settings

    def row(self, case: GemmCase) -> ProfileRow:
        fmt = get_format(case.format)
        if case.experts is not None:
            return self._modelled_row(
                case,
                f"trtq reads no MoE grouped-GEMM tables of {PACKAGE} yet: the "
                "roofline calibrated on its measured dense GEMMs models the experts",
            )
        base: dict[str, Any] = dict(
            out_features=case.out_features, in_features=case.in_features, tokens=case.tokens, format=case.format
        )
        if not self.gpu.supports(fmt):
            return ProfileRow(
                **base,
                status="unsupported",
                latency_ns=None,
                method="none",
                reason=f"{self.gpu.name} (sm{self.gpu.sm}) does not run {fmt.name} (needs sm{fmt.min_sm}+)",
            )
        if not fmt.available_for(case.in_features):
            return ProfileRow(
                **base,
                status="unsupported",
                latency_ns=None,
                method="none",
                reason=fmt.unavailable_reason(case.in_features),
            )
        dtype = table_dtype(fmt.name, self.tables)
        if dtype is not None:
            answer = self.tables.gemm(dtype, case.tokens, case.out_features, case.in_features)
            return ProfileRow(
                **base,
                status="ok",
                latency_ns=answer.ms * MS_TO_NS,
                provenance=answer.provenance,
                method=f"{PACKAGE} {self.framework} {self.version} {dtype}",
                details={"table_dtype": dtype},
            )
        return self._modelled_row(
            case, unmapped_reasons().get(fmt.name) or f"the {self.system} tables hold no {fmt.aiconfigurator_dtype}"
        )

    def _modelled_row(self, case: GemmCase, why: str) -> ProfileRow:
        from trtq.profile.roofline import roofline_row

        params, _ = self._model()
        modelled = roofline_row(self.gpu, case, params)
        if modelled.latency_ns is None:  # the GPU or the shape cannot run the format: the roofline says why
            return modelled
        return modelled.model_copy(
            update={
                "provenance": "modelled",
                "method": "roofline calibrated on the measured formats",
                "details": {**modelled.details, "why_modelled": why},
            }
        )

    def profile(self, cases, on_row=None) -> list[ProfileRow]:
        rows = []
        for case in cases:
            row = self.row(case)
            rows.append(row)
            if on_row:
                on_row(row)
        return rows
