"""The one reader of aiconfigurator-core's tables, held against the package's own SDK and files."""

from __future__ import annotations

import json
import logging

import pyarrow.parquet as pq
import pytest

pytest.importorskip("aiconfigurator_core")

from trtq.errors import UnknownNameError  # noqa: E402
from trtq.profile.aiconfigurator_tables import (  # noqa: E402
    FRAMEWORKS,
    AicTables,
    default_systems_root,
    default_version,
    gemm_table_file,
    probe_spec,
    systems_with_tables,
)
from trtq.registry import get_gpu  # noqa: E402

ROOT = default_systems_root()


@pytest.fixture(scope="module")
def h100() -> AicTables:
    return AicTables.for_gpu(get_gpu("H100-SXM"))


@pytest.mark.parametrize("version", ["1.3.0rc20", "1.3.0rc23"])
def test_probe_spec_is_the_sdks_for_its_default_database(version):
    from aiconfigurator_core.sdk.engine import build_database_probe_spec_json
    from aiconfigurator_core.sdk.perf_database import get_database

    logging.getLogger("aiconfigurator_core").setLevel(logging.ERROR)
    database = get_database("h100_sxm", "trtllm", version, systems_paths=[str(ROOT)])
    sdk = json.loads(build_database_probe_spec_json(database, systems_path=str(ROOT)))
    assert probe_spec("h100_sxm", "trtllm", version, ROOT) == sdk


def test_default_version_is_the_sdks_latest_for_every_system_and_framework():
    from aiconfigurator_core.sdk.perf_database import get_latest_database_version

    checked = 0
    for system, frameworks in systems_with_tables(ROOT).items():
        for framework in frameworks:
            sdk = get_latest_database_version(system, FRAMEWORKS[framework], systems_paths=[str(ROOT)])
            ours = default_version(system, framework, ROOT)
            # The SDK's latest may be a version whose GEMM rows are filled from an older collection: the file
            # trtq reads is then that older one, the one the SDK's own loader reads too.
            assert ours == sdk or gemm_table_file(system, framework, sdk, ROOT)[1] == ours, (system, framework)
            checked += 1
    assert checked >= 20


@pytest.mark.parametrize("version, channel", [("1.3.0rc20", "primary"), ("1.3.0rc23", "fallback")])
def test_gemm_table_file_is_the_one_the_sdk_loads(version, channel):
    from aiconfigurator_core.sdk.operations.gemm import GEMM
    from aiconfigurator_core.sdk.perf_database import get_database

    database = get_database("h100_sxm", "trtllm", version, systems_paths=[str(ROOT)])
    GEMM.load_data(database)
    (source,) = [s for s in database.data_provenance["gemm_perf.parquet"] if s.get("exists")]
    path, file_version, ours = gemm_table_file("h100_sxm", "trtllm", version, ROOT)
    assert str(path) == str(source["path"]) and file_version == str(source["version"])
    assert ours == channel == str(source["channel"])


def test_provenance_rule_on_the_real_h100_table(h100):
    table = pq.read_table(gemm_table_file("h100_sxm", "trtllm", h100.version, ROOT)[0]).to_pylist()
    (row,) = [r for r in table if (r["gemm_dtype"], r["m"], r["n"], r["k"]) == ("fp8_block", 16, 4096, 4096)]
    exact = h100.gemm("fp8_block", 16, 4096, 4096)
    assert exact.provenance == "measured" and exact.ms * 1e6 == pytest.approx(row["latency"] * 1e6, abs=0.5)
    between = h100.gemm("fp8_block", 3000, 4096, 4096)
    assert between.provenance == "interpolated"
    assert h100.gemm("fp8_block", 2048, 4096, 4096).ms < between.ms < h100.gemm("fp8_block", 4096, 4096, 4096).ms
    assert h100.gemm("bfloat16", 16, 128256, 4096).provenance == "extrapolated"     # n beyond 65536
    assert h100.gemm_provenance("bfloat16", 16, 4096, 4096, "sol") == "modelled"   # not from the tables


def test_profile_backend_and_predict_read_the_same_numbers(h100):
    from trtq.predict.kernels import AicKernels
    from trtq.profile.aiconfigurator import AiconfiguratorBackend
    from trtq.profile.harness import GemmCase

    backend = AiconfiguratorBackend(get_gpu("H100-SXM"))
    kernels = AicKernels("H100-SXM", cache=False)
    assert (backend.system, backend.version) == (kernels.system, kernels.version)
    for fmt, n, k, m in (("fp8", 4096, 4096, 16), ("bf16", 6144, 4096, 3000), ("fp8_block", 128256, 4096, 1)):
        row = backend.row(GemmCase(n, k, m, fmt))
        answer = kernels.gemm(n, k, fmt, m)
        assert row.latency_ns == pytest.approx(answer.ms * 1e6, rel=1e-12) and row.provenance == answer.provenance


def test_a_gpu_without_tables_is_refused_naming_those_with():
    unlisted = get_gpu("L40S").model_copy(update={"name": "L4", "aiconfigurator_system": "no_such_system"})
    with pytest.raises(UnknownNameError, match=r"no tables for L4; GPUs with tables: A100-SXM-80GB, H100-SXM"):
        AicTables.for_gpu(unlisted)
