"""What `trtq bench --engine DIR` runs, rebuilt from a build record's validated fields.

A build_record.json is a file anyone can edit. Its `serve_command` / `bench_commands` lists are for
people to read; trtq never executes a command read from it. The server's argument list is built
here from: the backend (a literal), tp/pp (bounded integers, checked by the record's model),
directories that must exist and hold what trtllm-serve loads (made absolute, so none can pose as a
flag), and the LLM API options (re-validated into the `LlmApiOptions` model and written afresh into
the results directory). The executable is always `trtllm-serve` / `trtllm-bench` from PATH.
"""

from __future__ import annotations

from pathlib import Path

from trtq.artifacts.build import BuildRecord
from trtq.build.llm_api import OPTIONS_FILE, bench_argv, prepare_dataset_argv, serve_argv
from trtq.errors import ArtifactError


def _existing_dir(record_path: Path, field: str, value: str | None, must_hold: str | None) -> Path:
    if not value:
        raise ArtifactError(f"{record_path}: {field} is empty")
    path = Path(value)
    if not path.is_absolute():
        path = record_path.parent / path
    path = path.resolve()
    if not path.is_dir():
        raise ArtifactError(f"{record_path}: {field} {value!r} is not a directory here: re-run trtq build")
    if must_hold and not (path / must_hold).is_file():
        raise ArtifactError(f"{record_path}: {field} {value!r} holds no {must_hold}: not what trtllm-serve loads")
    return path


def write_options(record_path: Path, record: BuildRecord, out_dir: Path) -> Path:
    """The LLM API options from the record's validated model, written into the results directory."""
    from trtq.artifacts.io import atomic_write_text

    if record.llm_api_options is None:
        raise ArtifactError(f"{record_path}: a PyTorch-backend build record without llm_api_options: re-run trtq build")
    out_dir.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(out_dir / OPTIONS_FILE, record.llm_api_options.yaml_text())


def serve_command(record_path: Path, record: BuildRecord, host: str, port: int, out_dir: Path) -> list[str]:
    """trtllm-serve's argument list for this record; never the record's own serve_command."""
    if not (isinstance(port, int) and 0 < port < 65536):
        raise ArtifactError(f"port {port!r} out of range")
    tokenizer = (
        _existing_dir(record_path, "tokenizer_dir", record.tokenizer_dir, None) if record.tokenizer_dir else None
    )
    if record.backend == "pytorch":
        model = _existing_dir(record_path, "model_dir", record.model_dir, "config.json")
        argv = serve_argv(model, record.tp_size, record.pp_size, write_options(record_path, record, out_dir), tokenizer)
    else:
        engine = _existing_dir(record_path, "engine_dir", record.engine_dir, "config.json")
        argv = serve_argv(engine, record.tp_size, record.pp_size, None, tokenizer, backend="tensorrt")
    return argv + ["--host", host, "--port", str(port)]


def trtllm_bench_commands(
    record_path: Path,
    record: BuildRecord,
    model_name: str,
    out_dir: Path,
    requests: int,
    isl: int,
    osl: int,
    seed: int = 0,
) -> tuple[list[str], Path, Path]:
    """(prepare-dataset argv, dataset path, options file) for a PyTorch-backend record."""
    if record.backend != "pytorch":
        raise ArtifactError(
            f"{record_path}: trtllm-bench runs the PyTorch backend; this record is a legacy "
            f"{record.backend} build: rebuild without --backend engine"
        )
    model = _existing_dir(record_path, "model_dir", record.model_dir, "config.json")
    options = write_options(record_path, record, out_dir)
    dataset = out_dir / "dataset.jsonl"
    return prepare_dataset_argv(model_name, model, dataset, requests, isl, osl, seed), dataset, options


def trtllm_bench_run(
    record_path: Path,
    record: BuildRecord,
    model_name: str,
    dataset: Path,
    options: Path,
    report: Path,
    mode: str,
    concurrency: int | None,
    requests: int,
    warmup: int,
) -> list[str]:
    model = _existing_dir(record_path, "model_dir", record.model_dir, "config.json")
    return bench_argv(
        model_name,
        model,
        options,
        record.tp_size,
        record.pp_size,
        dataset,
        report,
        "latency" if mode == "latency" else "throughput",
        concurrency,
        requests,
        warmup,
    )
