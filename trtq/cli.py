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

# Every subcommand and the module that registers it, in the order `trtq --help` lists them: one
# visible place. A known command builds its own module's parser only (the other modules' request
# models are not imported: ~0.05 s of every `trtq plan`); help, --version and unknown input the full one.
COMMANDS = {
    "gpus": "trtq.registry.commands",
    "formats": "trtq.registry.commands",
    "layers": "trtq.model.commands",
    "profile": "trtq.profile.commands",
    "sensitivity": "trtq.sensitivity.commands",
    "plan": "trtq.plan.commands",
    "predict": "trtq.predict.commands",
    "compare": "trtq.plan.compare_commands",
    "quantize": "trtq.quantize.commands",
    "eval": "trtq.eval.commands",
    "build": "trtq.build.commands",
    "bench": "trtq.bench.commands",
    "report": "trtq.report.commands",
    "run": "trtq.run.commands",
    "demo": "trtq.demo",
}
COMMAND_MODULES = tuple(dict.fromkeys(COMMANDS.values()))


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are bad input too: one line on stderr, exit 2."""

    def error(self, message: str):
        self.exit(2, f"trtq: error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of `command`'s module alone."""
    parser = _Parser(
        prog="trtq",
        description=("Per-layer mixed precision for TensorRT-LLM, planned against measured latency on the target GPU."),
    )
    parser.add_argument("--version", action="version", version=f"trtq {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in (COMMANDS[command],) if command in COMMANDS else COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv else None)
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
