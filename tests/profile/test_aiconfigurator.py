"""The aiconfigurator backend on small tables cut from the installed package's own files.

Each test tree is a real slice of aiconfigurator-core's H100 TensorRT-LLM GEMM table (rows copied
verbatim, some grid points left out on purpose), laid out as the package lays out its systems
directory, so the package's own loader and estimator read it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("aiconfigurator_core")

from trtq.artifacts import load_artifact, save_artifact  # noqa: E402
from trtq.artifacts.profile import Profile  # noqa: E402
from trtq.errors import UnknownNameError  # noqa: E402
from trtq.profile.aiconfigurator import (  # noqa: E402
    AiconfiguratorBackend,
    default_systems_root,
    table_dtypes,
)
from trtq.profile.harness import GemmCase  # noqa: E402
from trtq.registry import get_gpu  # noqa: E402
from trtq.registry.formats import FORMATS  # noqa: E402

SYSTEM, VERSION = "h100_sxm", "1.3.0rc20"
TABLE = Path("data") / SYSTEM / "gemm" / "trtllm" / VERSION
SIDES = (1024, 2048, 4096, 8192, 16384)
HELD_OUT_M = 2048          # every m = 2048 row is left out of the slice
HELD_OUT_N = 8192          # and n = 8192 for k = 4096
KEPT_M = (1, 16, 64, 128, 512, 1024, 4096, 8192, 16384)


@pytest.fixture(scope="module")
def full_table() -> "pd.DataFrame":
    return pd.read_parquet(default_systems_root() / TABLE / "gemm_perf.parquet")


def _slice_tree(root: Path, frame: "pd.DataFrame") -> Path:
    systems = root / "systems"
    (systems / TABLE).mkdir(parents=True)
    shutil.copy(default_systems_root() / f"{SYSTEM}.yaml", systems)
    shutil.copy(default_systems_root() / TABLE / "collection_meta.yaml", systems / TABLE)
    frame.to_parquet(systems / TABLE / "gemm_perf.parquet")
    return systems


@pytest.fixture(scope="module")
def sliced(tmp_path_factory, full_table) -> Path:
    t = full_table
    keep = t.m.isin(KEPT_M) & t.n.isin(SIDES) & t.k.isin(SIDES) & t.gemm_dtype.isin(["bfloat16", "fp8"])
    keep &= ~((t.n == HELD_OUT_N) & (t.k == 4096))
    return _slice_tree(tmp_path_factory.mktemp("aic"), t[keep])


@pytest.fixture(scope="module")
def backend(sliced) -> AiconfiguratorBackend:
    return AiconfiguratorBackend(get_gpu("H100-SXM"), systems_root=sliced)


def _raw_ns(table, dtype, m, n, k) -> float:
    hit = table[(table.gemm_dtype == dtype) & (table.m == m) & (table.n == n) & (table.k == k)]
    assert len(hit) == 1
    return float(hit.latency.iloc[0]) * 1e6


def test_every_mapped_format_is_registered_and_every_dtype_is_the_packages():
    from aiconfigurator_core.sdk.common import GEMMQuantMode

    TABLE_DTYPES = table_dtypes()
    assert set(TABLE_DTYPES) <= set(FORMATS)
    assert {d for d in TABLE_DTYPES.values() if d} <= {q.name for q in GEMMQuantMode}


@pytest.mark.parametrize("fmt,dtype", [("bf16", "bfloat16"), ("fp8", "fp8")])
@pytest.mark.parametrize("m", [1, 16, 1024, 8192])
def test_exact_grid_points_to_the_nanosecond(backend, full_table, fmt, dtype, m):
    row = backend.row(GemmCase(4096, 4096, m, fmt))
    assert row.status == "ok" and row.provenance == "measured"
    assert row.latency_ns == pytest.approx(_raw_ns(full_table, dtype, m, 4096, 4096), abs=0.5)


def test_h100_4096_squared_decode_fp8_per_tensor_is_slower_than_bf16(backend):
    """What the tables say and a roofline cannot: per-tensor FP8 does not pay at m = 16 on H100."""
    bf16 = backend.row(GemmCase(4096, 4096, 16, "bf16")).latency_ns
    fp8 = backend.row(GemmCase(4096, 4096, 16, "fp8")).latency_ns
    assert 16_000 < bf16 < 17_000 and 19_000 < fp8 < 20_000


@pytest.mark.parametrize("fmt,dtype", [("bf16", "bfloat16"), ("fp8", "fp8")])
@pytest.mark.parametrize("n,k,m", [(4096, 4096, HELD_OUT_M), (16384, 8192, HELD_OUT_M), (HELD_OUT_N, 4096, 128),
                                   (HELD_OUT_N, 4096, 4096)])
def test_interpolation_against_held_out_grid_points(backend, full_table, fmt, dtype, n, k, m):
    row = backend.row(GemmCase(n, k, m, fmt))
    assert row.provenance == "interpolated"
    truth = _raw_ns(full_table, dtype, m, n, k)
    assert abs(row.latency_ns / truth - 1) < 0.10, (row.latency_ns, truth)


def test_beyond_the_grid_is_extrapolated_not_measured(backend):
    row = backend.row(GemmCase(32768, 4096, 128, "bf16"))    # n above the slice's 16384
    assert row.status == "ok" and row.provenance == "extrapolated" and row.latency_ns > 0


def test_formats_the_tables_lack_are_modelled_and_gated(backend):
    awq = backend.row(GemmCase(4096, 4096, 16, "int4_awq"))
    assert awq.status == "ok" and awq.provenance == "modelled"
    assert "per-channel weight-only" in awq.details["why_modelled"]
    bf16 = backend.row(GemmCase(4096, 4096, 2048, "bf16")).latency_ns
    awq_prefill = backend.row(GemmCase(4096, 4096, 2048, "int4_awq")).latency_ns
    # INT4-AWQ borrows bf16's fitted fractions: compute-bound prefill within the roofline's reach of bf16
    assert 0.5 < awq_prefill / bf16 < 2.0
    fit = backend.settings()["modelled"]
    assert fit["borrowed_from"]["int4_awq"] == "bf16" and fit["rows"] > 100
    assert fit["borrowed_from"]["int8_sq"] == "fp8"          # no int8 table on H100: the 8-bit activation donor
    # the slice holds bf16 and fp8 only: H100's fp8_block is then modelled, borrowing per-tensor fp8's fit
    block = backend.row(GemmCase(4096, 4096, 16, "fp8_block"))
    assert block.status == "ok" and block.provenance == "modelled" and fit["borrowed_from"]["fp8_block"] == "fp8"
    nvfp4 = backend.row(GemmCase(4096, 4096, 16, "nvfp4"))
    assert nvfp4.status == "unsupported" and "sm100" in nvfp4.reason
    odd = backend.row(GemmCase(4096, 100, 16, "int4_awq"))
    assert odd.status == "unsupported" and "divides input width 100" in odd.reason


def test_moe_experts_are_modelled_grouped_gemms_not_left_out(backend):
    """Mixtral's experts (8, top-2) get a latency from the calibrated roofline's grouped-GEMM model."""
    from trtq.profile.roofline import RooflineBackend

    case = GemmCase(28672, 4096, 16, "fp8", 8, 2)
    row = backend.row(case)
    assert row.status == "ok" and row.provenance == "modelled" and row.experts == 8
    assert "MoE grouped-GEMM" in row.details["why_modelled"] and row.details["active_experts"] > 1
    dense = backend.row(GemmCase(28672, 4096, 16, "fp8"))
    assert row.latency_ns > dense.latency_ns      # several experts' weights read against one dense GEMM's
    assert backend.moe_grouped_gemm and RooflineBackend.moe_grouped_gemm
    assert backend.row(GemmCase(28672, 4096, 16, "nvfp4", 8, 2)).status == "unsupported"


def test_settings_record_package_framework_and_table_files(backend, sliced):
    s = backend.settings()
    assert s["package"] == "aiconfigurator-core" and s["package_version"] == "0.12.0"
    assert (s["framework"], s["framework_version"], s["system"]) == ("trtllm", VERSION, SYSTEM)
    (table,) = s["table_files"]
    assert table["path"].endswith("h100_sxm/gemm/trtllm/1.3.0rc20/gemm_perf.parquet") and len(table["sha256"]) == 64
    assert s["table_dtypes"] == ["bfloat16", "fp8"]


def test_refusals_name_what_the_package_has(sliced):
    with pytest.raises(UnknownNameError, match="versions it has: 1.3.0rc20"):
        AiconfiguratorBackend(get_gpu("H100-SXM"), version="0.9.0", systems_root=sliced)
    with pytest.raises(UnknownNameError, match="frameworks it has there: trtllm"):
        AiconfiguratorBackend(get_gpu("H100-SXM"), framework="vllm", systems_root=sliced)
    with pytest.raises(UnknownNameError, match="GPUs with tables: H100-SXM"):
        AiconfiguratorBackend(get_gpu("B200"), systems_root=sliced)
    with pytest.raises(UnknownNameError, match="unknown --framework"):
        AiconfiguratorBackend(get_gpu("H100-SXM"), framework="tgi", systems_root=sliced)


def test_profile_artifact_round_trip_and_schema_1_still_reads(sliced, tmp_path):
    from trtq.model.layers import build_layer_graph
    from trtq.model.zoo import resolve_model
    from trtq.profile.api import build_profile

    graph = build_layer_graph(resolve_model("smollm2-135m"))
    profile = build_profile(graph, "aiconfigurator", "H100-SXM", [16, 128], formats="fp8,int4_awq",
                            options={"systems_root": sliced})
    path = save_artifact(profile, tmp_path / "p.json")
    back = load_artifact(path, Profile)
    assert back == profile and back.schema_version == Profile.SCHEMA_VERSION == 3
    assert set(back.provenance_counts()) <= {"measured", "interpolated", "extrapolated", "modelled"}
    assert back.provenance_counts()["modelled"] == 8      # 4 shapes x 2 token counts of int4_awq
    assert any("no launch cost added" in n for n in back.metadata.notes)
    data = json.loads(path.read_text())          # the same table as trtq wrote it before provenance
    data["schema_version"] = 1
    for row in data["rows"]:
        del row["provenance"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    assert load_artifact(old, Profile).provenance_counts() == {"unknown": len(profile.rows)}


def test_cli_refuses_a_version_the_package_lacks_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "trtq", "profile", "smollm2-135m", "--gpu", "h100",
                             "--backend", "aiconfigurator", "--framework-version", "0.0.1", "-o",
                             str(tmp_path / "p.json")], capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "versions it has: " in lines[0] and "1.3.0rc20" in lines[0]
    assert not (tmp_path / "p.json").exists()


def test_cli_framework_options_belong_to_the_aiconfigurator_backend(tmp_path):
    result = subprocess.run([sys.executable, "-m", "trtq", "profile", "smollm2-135m", "--gpu", "h100",
                             "--backend", "roofline", "--framework", "vllm", "-o", str(tmp_path / "p.json")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "--framework / --framework-version apply to the aiconfigurator backend" in result.stderr
