"""The roofline calibration: recovers known fractions from a synthetic table, and flows to profile and plan."""

from __future__ import annotations

import numpy as np
import pytest

from trtq.artifacts import load_artifact, make_metadata, save_artifact, sha256_file
from trtq.artifacts.profile import Profile
from trtq.errors import ArtifactError, InputError
from trtq.artifacts.calibration import RooflineCalibration
from trtq.profile.calibrate import calibrate_from_file, fit_roofline, fitted_params
from trtq.profile.harness import GemmCase
from trtq.profile.roofline import RooflineParams, roofline_row
from trtq.registry import get_gpu

H100 = get_gpu("H100-SXM")
LLAMA_8B_SHAPES = [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336)]
TRUE = RooflineParams(
    compute_fraction={"bf16": 0.62, "fp8": 0.48, "int8_sq": 0.41, "int4_awq": 0.33, "w4a8_awq": 0.27},
    bandwidth_fraction={"bf16": 0.81, "fp8": 0.77, "int8_sq": 0.70, "int4_awq": 0.52, "w4a8_awq": 0.45},
    default_compute_fraction=0.75, default_bandwidth_fraction=0.85, launch_cost_ns=4200.0, source="synthetic truth",
)


def synthetic_rows(params=TRUE, shapes=LLAMA_8B_SHAPES, tokens=(1, 16, 128, 512, 2048, 8192), noise=0.03, seed=0):
    """The roofline's own predictions with known fractions, times log-normal noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for n, k in shapes:
        for fmt in params.compute_fraction:
            for m in tokens:
                row = roofline_row(H100, GemmCase(n, k, m, fmt), params)
                factor = float(np.exp(rng.normal(0.0, noise))) if noise else 1.0
                rows.append(row.model_copy(update={"latency_ns": row.latency_ns * factor, "method": "synthetic"}))
    return rows


def synthetic_measured_profile(rows, model="llama-3.1-8b") -> Profile:
    return Profile.create(metadata=make_metadata(notes=["synthetic: roofline with known fractions plus noise"]),
                   model=model, gpu=H100.name, backend="cuda", launch_cost_ns=0.0,
                   tokens=sorted({r.tokens for r in rows}), formats=list(TRUE.compute_fraction), rows=rows)


def test_fit_recovers_known_fractions_and_launch_cost_from_noisy_table():
    result = fit_roofline(H100, synthetic_rows())
    assert abs(result.launch_cost_ns / TRUE.launch_cost_ns - 1) < 0.05
    for fmt, fit in result.formats.items():
        assert fit.compute_identified and fit.bandwidth_identified
        assert abs(fit.compute_fraction / TRUE.compute(fmt) - 1) < 0.04, (fmt, fit)
        assert abs(fit.bandwidth_fraction / TRUE.bandwidth(fmt) - 1) < 0.04, (fmt, fit)
        assert fit.after.median_abs_rel_error < 0.04 < fit.before.median_abs_rel_error
    # 3% noise: the calibrated error is the noise, the datasheet roofline's is the model's.
    assert result.after.median_abs_rel_error < 0.035 and result.before.median_abs_rel_error > 0.2
    assert result.after.rows == 120 and result.skipped_rows == 0


def test_fit_of_an_exact_table_is_exact():
    result = fit_roofline(H100, synthetic_rows(noise=0.0))
    # Exact up to the weak prior's pull toward the datasheet (a few parts in ten thousand).
    assert result.after.max_abs_rel_error < 2e-3
    assert all(abs(fit.compute_fraction - TRUE.compute(f)) < 2e-3 for f, fit in result.formats.items())


def test_fraction_no_row_binds_keeps_the_datasheet_value():
    # Decode only: every row is memory-bound, so the compute fractions are not identified.
    result = fit_roofline(H100, synthetic_rows(tokens=(1, 4, 16)))
    for fmt, fit in result.formats.items():
        assert not fit.compute_identified and fit.compute_bound_rows == 0
        assert fit.compute_fraction == 0.75  # H100's datasheet assumption, untouched
        assert fit.bandwidth_identified and abs(fit.bandwidth_fraction / TRUE.bandwidth(fmt) - 1) < 0.05


def test_unsupported_rows_are_skipped_and_an_empty_table_refused():
    rows = synthetic_rows(tokens=(16, 2048))
    rows[0] = rows[0].model_copy(update={"status": "unsupported", "latency_ns": None, "reason": "x"})
    assert fit_roofline(H100, rows).skipped_rows == 1
    with pytest.raises(InputError, match="nothing to calibrate"):
        fit_roofline(H100, [rows[0]])


@pytest.fixture(scope="module")
def measured_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("measured") / "h100-llama8b.json"
    save_artifact(synthetic_measured_profile(synthetic_rows()), path)
    return path


def test_calibration_artifact_records_source_and_errors(measured_path, tmp_path):
    calibration = calibrate_from_file(measured_path)
    assert calibration.gpu == "H100-SXM" and calibration.source_backend == "cuda"
    assert calibration.source_profile.sha256 == sha256_file(measured_path)
    assert calibration.after.median_abs_rel_error < calibration.before.median_abs_rel_error
    save_artifact(calibration, tmp_path / "fit.yaml")
    assert load_artifact(tmp_path / "fit.yaml", RooflineCalibration) == calibration
    params = fitted_params(calibration)
    assert params.compute("fp8") == calibration.formats["fp8"].compute_fraction
    assert params.compute("nvfp4") == calibration.datasheet_compute_fraction  # not measured: datasheet


def test_calibrated_roofline_profiles_another_model_and_the_plan_says_so(measured_path, tmp_path):
    from trtq.cli import main
    from trtq.plan.api import PlanRequest, make_plan

    fit, first, second = tmp_path / "fit.json", tmp_path / "mistral.json", tmp_path / "mistral2.json"
    assert main(["profile", "mistral-7b", "--backend", "roofline", "--gpu", "H100-SXM", "--tokens", "1,16,2048",
                 "--calibrate-from", str(measured_path), "--fit-out", str(fit), "-o", str(first)]) == 0
    profile = load_artifact(first, Profile)
    calibration = load_artifact(fit, RooflineCalibration)
    assert profile.backend == "roofline-calibrated" and profile.gpu == "H100-SXM"
    assert profile.settings["calibration"]["source_profile"]["sha256"] == sha256_file(measured_path)
    assert profile.metadata.inputs["measured_profile"].sha256 == sha256_file(measured_path)
    assert profile.launch_cost_ns == pytest.approx(calibration.launch_cost_ns)
    # The table is the roofline with the fitted fractions, row for row.
    params = fitted_params(calibration)
    for row in profile.rows:
        expected = roofline_row(H100, GemmCase(row.out_features, row.in_features, row.tokens, row.format), params)
        assert row.latency_ns == pytest.approx(expected.latency_ns)
    # A stored fit gives the same table; its GPU is the default --gpu.
    assert main(["profile", "mistral-7b", "--backend", "roofline", "--tokens", "1,16,2048",
                 "--calibrate", str(fit), "-o", str(second)]) == 0
    assert load_artifact(second, Profile).rows == profile.rows
    assert load_artifact(second, Profile).metadata.inputs["calibration"].sha256 == sha256_file(fit)

    sensitivity = _uniform_sensitivity("mistral-7b", tmp_path / "sens.json")
    plan = make_plan("mistral-7b", first, sensitivity, "H100-SXM", PlanRequest(budgets=["decode@16=0.7"]))
    assert plan.profile_backend == "roofline-calibrated"
    assert plan.metadata.inputs["profile"].sha256 == sha256_file(first)


def _uniform_sensitivity(model, path):
    """A sensitivity table costing each format by its bit width (the plan needs one; its values don't matter here)."""
    from trtq.artifacts.sensitivity import Sensitivity, SensitivityRow
    from trtq.model.layers import build_layer_graph
    from trtq.model.zoo import resolve_model
    from trtq.registry.formats import FORMATS

    graph = build_layer_graph(resolve_model(model))
    formats = [f for f in FORMATS.values() if H100.supports(f)]
    rows = [SensitivityRow(layer=layer.name, format=f.name, group_size=f.group_size_for(layer.in_features),
                           weight_error=16.0 - f.weight_bits, omega=16.0 - f.weight_bits)
            for layer in graph.layers for f in formats]
    save_artifact(Sensitivity.create(metadata=make_metadata(), model=graph.model, method="weight",
                              formats=[f.name for f in formats], rows=rows), path)
    return path


@pytest.mark.parametrize("argv, message", [
    (["--gpu", "L40S", "--calibrate", "{fit}"], "the calibration was fitted on H100-SXM, not L40S"),
    (["--backend", "cpu", "--calibrate", "{fit}"], "apply to the roofline backend, not cpu"),
    (["--fit-out", "{tmp}/f.json"], "--fit-out needs --calibrate-from MEASURED"),
    (["--calibrate", "{fit}", "--calibrate-from", "{measured}"], "not both"),
    (["--calibrate", "{measured}"], "expected a roofline_calibration artifact, found 'profile'"),
    (["--calibrate-from", "{roofline}"], "a roofline table is not a GPU measurement"),
])
def test_calibration_errors_are_one_line(argv, message, measured_path, tmp_path, capsys):
    from trtq.cli import main

    fit = tmp_path / "fit.json"
    save_artifact(calibrate_from_file(measured_path), fit)
    roofline = tmp_path / "roofline.json"
    save_artifact(synthetic_measured_profile(synthetic_rows(tokens=(1,))).model_copy(update={"backend": "roofline"}),
                  roofline)
    argv = [a.format(fit=fit, measured=measured_path, roofline=roofline, tmp=tmp_path) for a in argv]
    if "--backend" not in argv:
        argv = ["--backend", "roofline", *argv]
    if "--gpu" not in argv:
        argv = [*argv, "--gpu", "H100-SXM"]
    assert main(["profile", "mistral-7b", *argv, "-o", str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trtq: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out.json").exists()


def test_broken_fit_file_is_an_artifact_error(tmp_path):
    from trtq.profile.calibrate import load_calibration

    bad = tmp_path / "fit.json"
    bad.write_text('{"artifact": "roofline_calibration", "schema_version": 1, "gpu": 3}')
    with pytest.raises(ArtifactError, match="invalid roofline_calibration artifact"):
        load_calibration(bad)


def test_plan_takes_a_measured_table_directly(measured_path, tmp_path):
    from trtq.plan.api import PlanRequest, make_plan

    sensitivity = _uniform_sensitivity("llama-3.1-8b", tmp_path / "sens.json")
    plan = make_plan("llama-3.1-8b", measured_path, sensitivity, "H100-SXM",
                     PlanRequest(budgets=["decode@16=0.7", "prefill@2048=0.8"]))
    assert plan.profile_backend == "cuda" and plan.launch_cost_ns == 0.0
    measured = load_artifact(measured_path, Profile).latency_map()
    for group in plan.groups:
        chosen = group.costs[group.format].latency_ns
        assert chosen["decode@16"] == measured[(group.out_features, group.in_features, 16, group.format)]


def test_activation_quantize_pass_is_fitted_when_asked_and_only_for_quantized_activations():
    """A serial activation-quantize pass (1.5 bf16 reads of the input for fp8) that the plain roofline cannot
    represent: fitted back to within a few percent, bf16 and int4_awq (bf16 activations) keep none."""
    truth = TRUE.model_copy(update={"activation_pass": {"fp8": 1.5, "int8_sq": 0.8}})
    rows = synthetic_rows(truth, noise=0.01)
    with_pass = fit_roofline(H100, rows, activation_pass=True)
    plain = fit_roofline(H100, rows)
    assert with_pass.formats["fp8"].activation_pass == pytest.approx(1.5, rel=0.1)
    assert with_pass.formats["int8_sq"].activation_pass == pytest.approx(0.8, rel=0.25)  # SmoothQuant: weaker
    assert with_pass.formats["bf16"].activation_pass == 0 == with_pass.formats["int4_awq"].activation_pass
    assert all(fit.activation_pass == 0 for fit in plain.formats.values())
    # the plain roofline bends its fractions around the missing term: its worst fp8 rows show it
    assert with_pass.formats["fp8"].after.max_abs_rel_error < 0.5 * plain.formats["fp8"].after.max_abs_rel_error
    # the fitted pass reaches the predictions through RooflineParams
    case = GemmCase(4096, 14336, 8192, "fp8")
    assert roofline_row(H100, case, truth).details["activation_quantize_ns"] == pytest.approx(
        1.5 * 8192 * 14336 * 2 / H100.hbm_bandwidth_bytes_per_s * 1e9)
