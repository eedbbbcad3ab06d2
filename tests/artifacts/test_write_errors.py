"""A write the machine refuses (disk full, I/O error, read-only, permission): one line naming the path
and the errno's text, exit 2, the temporary file removed and the previous file untouched.

The real cases run on a 64 KiB tmpfs mounted for the test (root, or a user namespace that allows
mounts); where the machine allows no mount they skip and say why. The errors a small file system
cannot produce on demand (EIO, EACCES as root) are raised at the lowest layer the writers call
(os.fsync, os.replace) by monkeypatching.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trtq.artifacts import load_artifact, make_metadata, save_artifact
from trtq.artifacts.sensitivity import Sensitivity, SensitivityRow
from trtq.cli import main
from trtq.errors import WriteError

SMALL_FS_BYTES = 64 * 1024


def _table(rows: int) -> Sensitivity:
    """A valid artifact of roughly rows x 150 bytes."""
    return Sensitivity(
        artifact=Sensitivity.KIND, schema_version=Sensitivity.SCHEMA_VERSION, metadata=make_metadata(),
        model="smollm2-135m", method="weight", formats=["bf16"],
        rows=[SensitivityRow(layer=f"model.layers.{i}.mlp.down_proj", format="bf16", group_size=None,
                             weight_error=0.0, omega=0.0) for i in range(rows)])


def _fill(directory: Path) -> Path:
    """Fill the file system holding `directory` to the last byte."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def _mount(directory: Path, *options: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join((f"size={SMALL_FS_BYTES}", *options)), "tmpfs",
                    str(directory)], check=True, capture_output=True, text=True)


@pytest.fixture
def small_fs(tmp_path):
    """A 64 KiB tmpfs at tmp_path/small, unmounted afterwards."""
    directory = tmp_path / "small"
    directory.mkdir()
    try:
        _mount(directory)
    except FileNotFoundError:
        pytest.skip("no `mount` command here: a real small file system cannot be made")
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {exc.stderr.strip()}")
    try:
        yield directory
    finally:
        # Lazy: a library that failed mid-write may still hold a descriptor on it (pyarrow does).
        subprocess.run(["umount", "-l", str(directory)], check=False, capture_output=True)


def _listing(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


# ---------------------------------------------------------------------------- a real full disk


def test_disk_full_keeps_the_previous_artifact_and_removes_the_temporary(small_fs):
    target = small_fs / "sens.json"
    save_artifact(_table(2), target)
    before = target.read_bytes()
    _fill(small_fs)
    with pytest.raises(WriteError) as err:
        save_artifact(_table(2000), target)    # ~300 KB: more than the whole file system
    assert str(err.value) == f"cannot write {target}: No space left on device"
    assert target.read_bytes() == before and load_artifact(target, Sensitivity).rows == _table(2).rows
    assert _listing(small_fs) == ["filler", "sens.json"], "the temporary was left behind"


def test_disk_full_through_the_cli_is_one_line_and_exit_2(small_fs, capsys):
    target = small_fs / "layers.json"
    target.write_text('{"old": true}')
    (small_fs / "filler").write_bytes(b"\0" * (SMALL_FS_BYTES - 8 * 4096))  # room for far less than the graph
    code = main(["layers", "smollm2-135m", "-o", str(target)])
    err = capsys.readouterr().err
    assert code == 2 and err == f"trtq: error: cannot write {target}: No space left on device\n"
    assert json.loads(target.read_text()) == {"old": True}
    assert _listing(small_fs) == ["filler", "layers.json"]


def test_disk_full_leaves_the_report_pair_as_it_was(small_fs, tmp_path):
    import tests.helpers.synthetic_reports as synthetic
    from trtq.report.model import build_plan_report
    from trtq.report.render import render_plan_report

    (tmp_path / "in").mkdir()
    plan_path = synthetic.write_plans(tmp_path / "in", gpus=("H100-SXM",))[0]
    html = small_fs / "r.html"
    html.write_text("old html")
    html.with_suffix(".json").write_text("old json")
    _fill(small_fs)
    with pytest.raises(WriteError) as err:
        render_plan_report(build_plan_report(plan_path), html)
    assert str(err.value).startswith("cannot write ") and str(err.value).endswith(": No space left on device")
    assert str(html.with_suffix(".json")) in str(err.value)
    assert html.read_text() == "old html" and html.with_suffix(".json").read_text() == "old json"
    assert _listing(small_fs) == ["filler", "r.html", "r.json"]


def test_disk_full_during_the_bench_table_export(small_fs):
    import pandas as pd

    from trtq.bench.ingest import write_table

    parquet, csv = small_fs / "t.parquet", small_fs / "t.csv"
    parquet.write_bytes(b"old parquet")
    csv.write_text("old csv")
    _fill(small_fs)
    frame = pd.DataFrame({"metric": ["ttft"] * 20_000, "value": [float(i) for i in range(20_000)]})
    with pytest.raises(WriteError) as err:
        write_table(frame, parquet, csv)
    assert str(err.value) == f"cannot write {parquet}: No space left on device"
    assert parquet.read_bytes() == b"old parquet" and csv.read_text() == "old csv"
    assert _listing(small_fs) == ["filler", "t.csv", "t.parquet"]


def test_read_only_file_system_keeps_the_previous_artifact(small_fs):
    target = small_fs / "sens.json"
    save_artifact(_table(2), target)
    before = target.read_bytes()
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True, capture_output=True)
    with pytest.raises(WriteError) as err:
        save_artifact(_table(3), target)
    assert str(err.value) == f"cannot write {target}: Read-only file system"
    assert target.read_bytes() == before and _listing(small_fs) == ["sens.json"]


# ---------------------------------------------------------------------------- errors at the lowest layer


@pytest.mark.parametrize("call, code", [("fsync", errno.EIO), ("fsync", errno.ENOSPC), ("replace", errno.EACCES),
                                        ("replace", errno.EROFS)])
def test_refused_write_at_the_lowest_layer(tmp_path, monkeypatch, call, code):
    target = tmp_path / "sens.yaml"
    save_artifact(_table(2), target)
    before = target.read_bytes()
    real = getattr(os, call)

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, call, refuse)
    with pytest.raises(WriteError) as err:
        save_artifact(_table(3), target)
    monkeypatch.setattr(os, call, real)
    assert str(err.value) == f"cannot write {target}: {os.strerror(code)}"
    assert target.read_bytes() == before and _listing(tmp_path) == ["sens.yaml"]


def test_an_io_error_through_the_cli(tmp_path, monkeypatch, capsys):
    target = tmp_path / "layers.json"

    def refuse(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", refuse)
    code = main(["layers", "smollm2-135m", "-o", str(target)])
    assert code == 2
    assert capsys.readouterr().err == f"trtq: error: cannot write {target}: Input/output error\n"
    assert _listing(tmp_path) == []


def test_a_library_writer_refused_by_the_disk_is_one_line(tmp_path, capsys, monkeypatch):
    """A writer outside trtq.artifacts (a log, a library) raising a plain OSError: the CLI's one line."""
    import trtq.model.commands as commands

    def full(args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "server.log"))

    monkeypatch.setattr(commands, "run_layers", full)   # register() binds the handler when main() parses
    assert main(["layers", "smollm2-135m"]) == 2
    assert capsys.readouterr().err == f"trtq: error: cannot write {tmp_path / 'server.log'}: No space left on device\n"

    def bug(args):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "internal.json")

    monkeypatch.setattr(commands, "run_layers", bug)
    with pytest.raises(FileNotFoundError):  # not a refused write: a bug keeps its traceback
        main(["layers", "smollm2-135m"])


def test_safetensors_style_errors_are_recognised():
    from trtq.errors import storage_errno, write_error

    wrapped = RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                           "message: \"No space left on device\" }) (os error 28)")
    assert storage_errno(wrapped) == errno.ENOSPC
    assert str(write_error("/x/model.safetensors", wrapped)) == "cannot write /x/model.safetensors: No space left on device"
    assert storage_errno(ValueError("partial blocks are not supported")) is None
    assert storage_errno(OSError(errno.ENOENT, "No such file or directory")) is None


def test_export_refused_by_the_disk_is_a_write_error_not_an_unsupported_model(tmp_path, monkeypatch):
    """ModelOpt's exporter failing on a full disk: not 'ModelOpt could not export', and no TensorRT-LLM
    checkpoint silently dropped; the previous engines/NAME/ stays and no temporary directory is left."""
    import modelopt.torch.export as mte

    from trtq.quantize import apply

    out = tmp_path / "engines" / "NAME"
    out.mkdir(parents=True)
    (out / "marker").write_text("old")

    def full(*args, **kwargs):
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(mte, "export_hf_checkpoint", full)
    monkeypatch.setattr(apply, "_bf16_copy", lambda model: model)
    monkeypatch.setattr(apply, "layer_summary", lambda model, plan: [])  # read before the export
    monkeypatch.setattr(apply, "is_offloaded", lambda model: False)

    class Config:
        architectures = ["LlamaForCausalLM"]
        model_type = "llama"

    class Model:
        config = Config()

    with pytest.raises(WriteError) as err:
        apply.export_checkpoint(Model(), None, {"model.layers.0.mlp.down_proj": ("fp8", None)}, out)
    assert "No space left on device" in str(err.value) and str(out.parent) in str(err.value)
    assert (out / "marker").read_text() == "old" and _listing(out.parent) == ["NAME"]

    monkeypatch.setattr(mte, "export_tensorrt_llm_checkpoint", full)
    with pytest.raises(WriteError):
        apply._export_trtllm(Model(), tmp_path / "trtllm")


def test_a_directory_that_cannot_hold_files_is_one_line_naming_the_output(tmp_path):
    """/proc exists but takes no new files (mkstemp: ENOENT): refused like a full disk, no traceback."""
    result = subprocess.run([sys.executable, "-m", "trtq", "profile", "llama-3.1-8b", "--gpu", "h100",
                             "-o", "/proc/trtq-profile.json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip() == "trtq: error: cannot write /proc/trtq-profile.json: No such file or directory"
