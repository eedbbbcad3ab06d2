"""The trtq command line: parse and dispatch only.

Each stage contributes its subcommands through a `commands` module that imports
nothing heavy at module level; torch, modelopt and tensorrt_llm are imported
inside the handler that needs them, so `trtq --help` stays instant. Known errors
(TrtqError) become one line on stderr and exit code 2, here and nowhere else.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from trtq import __version__
from trtq.errors import TrtqError, storage_errno, write_error

# Every subcommand module, in the order `trtq --help` lists them: one visible place.
COMMAND_MODULES = (
    "trtq.registry.commands",
    "trtq.model.commands",
    "trtq.profile.commands",
    "trtq.sensitivity.commands",
    "trtq.plan.commands",
    "trtq.predict.commands",
    "trtq.plan.compare_commands",
    "trtq.quantize.commands",
    "trtq.eval.commands",
    "trtq.build.commands",
    "trtq.bench.commands",
    "trtq.report.commands",
    "trtq.run.commands",
    "trtq.demo",
)


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are bad input too: one line on stderr, exit 2."""

    def error(self, message: str):
        self.exit(2, f"trtq: error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="trtq",
        description=("Per-layer mixed precision for TensorRT-LLM, planned against measured latency on the target GPU."),
    )
    parser.add_argument("--version", action="version", version=f"trtq {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # a usage error (one line already printed), --help or --version
        return exc.code if isinstance(exc.code, int) else 0
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except TrtqError as exc:
        print(f"trtq: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        # A write the machine refused (disk full, I/O error, read-only, permission) in a writer that
        # did not say so itself (a library's, a log): one line naming the file. Anything else is a bug.
        if storage_errno(exc) is None:
            raise
        error = write_error(exc.filename or "a file", exc)
        print(f"trtq: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("trtq: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
