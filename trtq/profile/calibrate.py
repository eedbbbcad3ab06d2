"""Calibrate the roofline from a measured table of the same GPU.

The roofline predicts   t = max(F / (P_c * c_f), B / (W * b_f)) + L
with F the GEMM's flops, B its bytes, P_c the datasheet peak of the format's compute
rate, W the HBM bandwidth. The fit chooses, per format f, the achievable compute
fraction c_f and bandwidth fraction b_f, and one launch cost L shared by every
format, minimising the sum of squared log errors log(t_pred / t_measured) over the
measured rows (a relative error: a 2 us decode GEMM counts as much as a 2 ms prefill
one), plus a weak prior (weight 0.01 on the squared log distance) toward the datasheet
fractions, so a fraction the rows barely constrain does not chase their noise.
Projected Levenberg-Marquardt in numpy, from several starting points; fractions are
kept in [0.005, 1], L >= 0.

A fraction no measured row is bound by (every row of a format memory-bound leaves its
compute fraction free) is not identified: the data only bounds it from below, so the
calibration keeps the datasheet value (or that bound, if higher) and says so.

The fit is an artifact (kind "roofline_calibration"): the GPU, the measured table it
came from (path and sha256), the fractions, the launch cost and the error per format
before (datasheet fractions) and after. `trtq profile --backend roofline --calibrate
FIT` uses it for any model on that GPU; `--calibrate-from MEASURED` fits and uses it
in one step (`--fit-out FIT` keeps the fit).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from trtq.artifacts.calibration import FitError, FormatFit, RooflineCalibration
from trtq.artifacts.io import InputRef, input_ref, load_artifact, make_metadata
from trtq.artifacts.profile import Profile, ProfileRow
from trtq.errors import InputError, UnknownNameError
from trtq.profile.harness import GemmCase
from trtq.profile.roofline import RooflineBackend, RooflineParams, activation_pass_ns, gemm_bytes, gemm_flops
from trtq.registry.formats import get_format
from trtq.registry.gpus import GpuSpec, get_gpu

FRACTION_BOUNDS = (0.005, 1.0)
PRIOR_WEIGHT = 0.01
ACTIVATION_PRIOR_SCALE = 0.01
METHOD = (
    "least squares on log(predicted / measured) latency, weak prior (0.01) toward the datasheet "
    "fractions; per-format compute and bandwidth fractions, one launch cost; projected "
    "Levenberg-Marquardt, multi-start"
)
# Backends whose tables are measurements of a GPU (the roofline is a model; cpu measured a CPU).
# An aiconfigurator table's modelled rows are not measurements: calibrate_profile leaves them out.
MEASURED_GPU_BACKENDS = ("cuda", "aiconfigurator")


def fitted_params(calibration: RooflineCalibration) -> RooflineParams:
    """The roofline parameters a calibration fitted (datasheet fractions where it measured no format)."""
    c = calibration
    return RooflineParams(
        compute_fraction={f: fit.compute_fraction for f, fit in c.formats.items()},
        bandwidth_fraction={f: fit.bandwidth_fraction for f, fit in c.formats.items()},
        activation_pass={f: fit.activation_pass for f, fit in c.formats.items() if fit.activation_pass},
        default_compute_fraction=c.datasheet_compute_fraction,
        default_bandwidth_fraction=c.datasheet_bandwidth_fraction,
        launch_cost_ns=c.launch_cost_ns,
        source=(
            f"calibrated on {c.source_profile.path} (sha256 {c.source_profile.sha256}, "
            f"{c.source_backend} backend, {c.source_model}); median |error| "
            f"{c.before.median_abs_rel_error:.1%} -> {c.after.median_abs_rel_error:.1%}"
        ),
    )


# ---- the fit ------------------------------------------------------------------------------


@dataclass
class _Rows:
    """The measured rows as arrays: per row its format index, compute and memory time at fraction 1."""

    formats: list[str]
    fmt_index: np.ndarray
    compute_ns: np.ndarray  # flops / peak, at compute fraction 1
    memory_ns: np.ndarray  # bytes / bandwidth, at bandwidth fraction 1
    measured_ns: np.ndarray
    act_ns: np.ndarray  # one bf16 read of the m x k input at nominal bandwidth
    prior: np.ndarray | None = None  # log datasheet fractions (compute..., bandwidth...)


def _arrays(gpu: GpuSpec, rows: list[ProfileRow]) -> tuple[_Rows, int]:
    formats: list[str] = []
    idx, comp, mem, meas, act = [], [], [], [], []
    skipped = 0
    for row in rows:
        fmt = get_format(row.format)
        if (
            row.latency_ns is None
            or row.latency_ns <= 0
            or not gpu.supports(fmt)
            or not fmt.available_for(row.in_features)
        ):
            skipped += 1
            continue
        case = GemmCase(row.out_features, row.in_features, row.tokens, fmt.name)
        if fmt.name not in formats:
            formats.append(fmt.name)
        idx.append(formats.index(fmt.name))
        comp.append(gemm_flops(case) / gpu.peak_flops[fmt.compute] * 1e9)
        mem.append(gemm_bytes(case, fmt.group_size_for(row.in_features)) / gpu.hbm_bandwidth_bytes_per_s * 1e9)
        meas.append(row.latency_ns)
        act.append(activation_pass_ns(gpu, case))
    return _Rows(
        formats, np.array(idx, dtype=int), np.array(comp), np.array(mem), np.array(meas), np.array(act)
    ), skipped


def _terms(data: _Rows, c: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return data.compute_ns / c[data.fmt_index], data.memory_ns / b[data.fmt_index]


def predict(data: _Rows, c: np.ndarray, b: np.ndarray, launch_ns: float, q: np.ndarray | None = None) -> np.ndarray:
    compute, memory = _terms(data, c, b)
    extra = 0.0 if q is None else q[data.fmt_index] * data.act_ns
    return np.maximum(compute, memory) + launch_ns + extra


def _residual_and_jacobian(data: _Rows, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    nf = len(data.formats)
    c, b, launch_us, q = np.exp(theta[:nf]), np.exp(theta[nf : 2 * nf]), theta[2 * nf], theta[2 * nf + 1 :]
    compute, memory = _terms(data, c, b)
    pred = np.maximum(compute, memory) + launch_us * 1e3 + q[data.fmt_index] * data.act_ns
    residual = np.log(pred) - np.log(data.measured_ns)
    jac = np.zeros((len(pred), 3 * nf + 1))
    rows = np.arange(len(pred))
    compute_bound = compute >= memory
    # d log(pred) / d log(c) = -compute / pred where the compute term binds; likewise for b.
    jac[rows[compute_bound], data.fmt_index[compute_bound]] = -(compute / pred)[compute_bound]
    jac[rows[~compute_bound], nf + data.fmt_index[~compute_bound]] = -(memory / pred)[~compute_bound]
    jac[:, 2 * nf] = 1e3 / pred
    jac[rows, 2 * nf + 1 + data.fmt_index] = data.act_ns / pred
    if data.prior is not None:
        weight = math.sqrt(PRIOR_WEIGHT)
        # The activation pass's prior (toward none) only breaks ties: its data term must win.
        q_weight = math.sqrt(PRIOR_WEIGHT * ACTIVATION_PRIOR_SCALE)
        residual = np.concatenate([residual, weight * (theta[: 2 * nf] - data.prior), q_weight * q])
        prior_jac = np.zeros((3 * nf, 3 * nf + 1))
        prior_jac[: 2 * nf, : 2 * nf] = weight * np.eye(2 * nf)
        prior_jac[2 * nf :, 2 * nf + 1 :] = q_weight * np.eye(nf)
        jac = np.vstack([jac, prior_jac])
    return residual, jac


def _levenberg_marquardt(
    data: _Rows, theta: np.ndarray, lower: np.ndarray, upper: np.ndarray, iterations: int = 400
) -> tuple[np.ndarray, float]:
    theta = np.clip(theta, lower, upper)
    residual, jac = _residual_and_jacobian(data, theta)
    cost = float(residual @ residual)
    damping = 1e-3
    for _ in range(iterations):
        gradient = jac.T @ residual
        hessian = jac.T @ jac
        improved = False
        while damping < 1e10:
            system = hessian + damping * (np.diag(np.diag(hessian)) + 1e-12 * np.eye(len(theta)))
            try:
                step = np.linalg.solve(system, -gradient)
            except np.linalg.LinAlgError:
                damping *= 10
                continue
            candidate = np.clip(theta + step, lower, upper)
            new_residual, new_jac = _residual_and_jacobian(data, candidate)
            new_cost = float(new_residual @ new_residual)
            if new_cost < cost:
                converged = cost - new_cost <= 1e-14 * max(cost, 1e-30)
                theta, residual, jac, cost = candidate, new_residual, new_jac, new_cost
                damping = max(damping / 3, 1e-9)
                improved = not converged
                break
            damping *= 4
        if not improved:
            break
    return theta, cost


def _fit_error(predicted: np.ndarray, measured: np.ndarray) -> FitError:
    rel = predicted / measured - 1.0
    return FitError(
        rows=int(len(rel)),
        median_abs_rel_error=float(np.median(np.abs(rel))),
        max_abs_rel_error=float(np.max(np.abs(rel))),
        median_rel_error=float(np.median(rel)),
    )


@dataclass(frozen=True)
class FitResult:
    formats: dict[str, FormatFit]
    launch_cost_ns: float
    before: FitError
    after: FitError
    skipped_rows: int


# Upper bound of a fitted activation pass, in bf16 reads of the input (a quantize kernel reads it once and
# writes it once more; dynamic scaling reads it twice).
ACTIVATION_PASS_MAX = 8.0


def fit_roofline(
    gpu: GpuSpec, rows: list[ProfileRow], start: RooflineParams | None = None, activation_pass: bool = False
) -> FitResult:
    """Fit per-format fractions and one launch cost to measured rows of `gpu`.

    `activation_pass`: also fit, per format whose activations are quantized (not bf16), the serial
    activation-quantize pass (RooflineParams.activation_pass); otherwise it stays 0."""
    start = start or RooflineParams.for_gpu(gpu)
    data, skipped = _arrays(gpu, rows)
    if len(data.measured_ns) == 0:
        raise InputError(f"no measured rows with a latency for a format {gpu.name} runs: nothing to calibrate")
    nf = len(data.formats)
    lo_f, hi_f = (math.log(v) for v in FRACTION_BOUNDS)
    quantizes = [activation_pass and get_format(f).act_dtype != "bf16" for f in data.formats]
    lower = np.array([lo_f] * (2 * nf) + [0.0] + [0.0] * nf)
    upper = np.array(
        [hi_f] * (2 * nf)
        + [float(data.measured_ns.min()) / 1e3]
        + [ACTIVATION_PASS_MAX if qz else 0.0 for qz in quantizes]
    )
    default_c = np.array([start.compute(f) for f in data.formats])
    default_b = np.array([start.bandwidth(f) for f in data.formats])
    before = predict(data, default_c, default_b, start.launch_cost_ns)
    data.prior = np.log(np.concatenate([default_c, default_b]))

    starts = [(default_c, default_b, start.launch_cost_ns)]
    for c0, b0 in ((0.2, 0.4), (0.5, 0.7), (0.9, 0.9), (0.1, 0.9), (0.9, 0.3)):
        for l0 in (0.0, 0.5 * float(data.measured_ns.min())):
            starts.append((np.full(nf, c0), np.full(nf, b0), l0))
    best_theta, best_cost = None, math.inf
    for c_start, b_start, l_start in starts:
        for q0 in (0.0, 1.0) if any(quantizes) else (0.0,):
            theta0 = np.concatenate([np.log(c_start), np.log(b_start), [l_start / 1e3], np.full(nf, q0)])
            theta, cost = _levenberg_marquardt(data, theta0, lower, upper)
            if cost < best_cost:
                best_theta, best_cost = theta, cost
    c, b, launch_ns = np.exp(best_theta[:nf]), np.exp(best_theta[nf : 2 * nf]), float(best_theta[2 * nf] * 1e3)
    q = np.array(best_theta[2 * nf + 1 :])

    # A fraction no row binds is free above a lower bound: keep the datasheet value (or the bound).
    compute, memory = _terms(data, c, b)
    compute_bound = compute >= memory
    identified_c, identified_b = [], []
    for i in range(nf):
        mine = data.fmt_index == i
        identified_c.append(bool((compute_bound & mine).any()))
        identified_b.append(bool((~compute_bound & mine).any()))
        if not identified_c[i]:
            bound = float(np.max(data.compute_ns[mine] * b[i] / data.memory_ns[mine]))
            c[i] = min(max(default_c[i], bound), FRACTION_BOUNDS[1])
        if not identified_b[i]:
            bound = float(np.max(data.memory_ns[mine] * c[i] / data.compute_ns[mine]))
            b[i] = min(max(default_b[i], bound), FRACTION_BOUNDS[1])
    after = predict(data, c, b, launch_ns, q)
    compute, memory = _terms(data, c, b)
    compute_bound = compute >= memory

    fits = {}
    for i, name in enumerate(data.formats):
        mine = data.fmt_index == i
        fits[name] = FormatFit(
            compute_fraction=float(c[i]),
            bandwidth_fraction=float(b[i]),
            compute_identified=identified_c[i],
            bandwidth_identified=identified_b[i],
            compute_bound_rows=int((compute_bound & mine).sum()),
            memory_bound_rows=int((~compute_bound & mine).sum()),
            before=_fit_error(before[mine], data.measured_ns[mine]),
            after=_fit_error(after[mine], data.measured_ns[mine]),
            activation_pass=float(q[i]),
        )
    return FitResult(
        fits, launch_ns, _fit_error(before, data.measured_ns), _fit_error(after, data.measured_ns), skipped
    )


# ---- artifacts and the CLI's entry points -------------------------------------------------


def calibrate_profile(profile: Profile, source: InputRef, gpu: GpuSpec | None = None) -> RooflineCalibration:
    if gpu is None:
        try:
            gpu = get_gpu(profile.gpu)
        except UnknownNameError:
            raise InputError(
                f"{source.path}: measured on {profile.gpu!r}, which is not in the GPU registry: "
                "cannot calibrate its roofline"
            ) from None
    start = RooflineParams.for_gpu(gpu)
    rows = [r for r in profile.rows if not (profile.backend == "aiconfigurator" and r.provenance == "modelled")]
    result = fit_roofline(gpu, rows, start)
    return RooflineCalibration.create(
        metadata=make_metadata(
            inputs={"measured_profile": source},
            notes=[
                f"fit to {result.after.rows} measured rows of {profile.model} on {gpu.name} "
                f"({result.skipped_rows} rows without a latency skipped)",
                f"median |relative error| {result.before.median_abs_rel_error:.1%} with datasheet fractions, "
                f"{result.after.median_abs_rel_error:.1%} calibrated (in-sample)",
            ],
        ),
        gpu=gpu.name,
        source_profile=source,
        source_backend=profile.backend,
        source_model=profile.model,
        method=METHOD,
        launch_cost_ns=result.launch_cost_ns,
        datasheet_launch_cost_ns=start.launch_cost_ns,
        datasheet_compute_fraction=start.default_compute_fraction,
        datasheet_bandwidth_fraction=start.default_bandwidth_fraction,
        formats=result.formats,
        before=result.before,
        after=result.after,
        skipped_rows=result.skipped_rows,
    )


def calibrate_from_file(path: str | os.PathLike[str]) -> RooflineCalibration:
    """Fit the roofline to a measured GPU table (`trtq profile --backend cuda` output)."""
    profile = load_artifact(path, Profile)
    if profile.backend not in MEASURED_GPU_BACKENDS:
        raise InputError(
            f"{path}: a {profile.backend} table is not a GPU measurement; calibrate from a "
            f"table of the {' / '.join(MEASURED_GPU_BACKENDS)} backend"
        )
    return calibrate_profile(profile, input_ref(path))


def load_calibration(path: str | os.PathLike[str]) -> RooflineCalibration:
    return load_artifact(path, RooflineCalibration)


def calibrated_params(
    calibration: RooflineCalibration, gpu: GpuSpec, launch_cost_ns: float | None = None
) -> RooflineParams:
    if calibration.gpu != gpu.name:
        raise InputError(
            f"the calibration was fitted on {calibration.gpu}, not {gpu.name}: "
            f"calibrate from a measured {gpu.name} table"
        )
    params = fitted_params(calibration)
    if launch_cost_ns is not None:
        params = params.model_copy(update={"launch_cost_ns": launch_cost_ns})
    return params


class CalibratedRooflineBackend(RooflineBackend):
    """The roofline with fitted fractions; its tables say so (backend "roofline-calibrated")."""

    name = "roofline-calibrated"

    def __init__(self, gpu: GpuSpec, calibration: RooflineCalibration, launch_cost_ns: float | None = None):
        super().__init__(gpu, calibrated_params(calibration, gpu, launch_cost_ns))
        self.calibration = calibration

    def settings(self) -> dict:
        settings = super().settings()
        settings["calibration"] = self.calibration.summary()
        return settings
