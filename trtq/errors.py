"""The errors users see. The CLI turns every TrtqError into one line on stderr and exit 2."""

import errno as _errno
import os as _os
import re as _re


class TrtqError(Exception):
    """A known failure with a message fit for one line on stderr."""

    exit_code = 2


class InputError(TrtqError):
    """A file, model or argument the user gave is missing or malformed."""


class ArtifactError(InputError):
    """An artifact file is missing, malformed, of the wrong kind or schema version."""


class UnknownNameError(InputError):
    """A GPU, format, model alias or backend name that no registry knows."""


class UnsupportedError(TrtqError):
    """A format the target GPU (or this machine) cannot run, refused up front."""


class InfeasibleError(TrtqError):
    """No assignment meets the budgets; the message names the binding one."""


class MissingToolError(TrtqError):
    """An external tool (TensorRT-LLM, perf_analyzer, chromium ...) is not installed here."""


class ExternalToolError(TrtqError):
    """An external tool ran and failed; the message says which and where its log is."""


class SolverStoppedError(TrtqError):
    """The solver stopped (a limit, its tolerance) before it could answer: nothing is proven."""


class WriteError(TrtqError):
    """The file system refused to store an output (disk full, I/O error, read-only, no permission).

    Raised by the writers in trtq.artifacts.io after they removed their temporary file: the
    previous file at the path, if any, is untouched.
    """


# errno values that are the machine refusing to store a file, not a defect of trtq: the CLI turns
# any OSError carrying one of them into one line, wherever the write happened.
WRITE_ERRNOS = frozenset(
    getattr(_errno, name)
    for name in ("ENOSPC", "EDQUOT", "EIO", "EROFS", "EACCES", "EPERM", "EFBIG", "ETXTBSY")
    if hasattr(_errno, name)
)


def storage_errno(exc: BaseException) -> int | None:
    """The errno of a refused write in `exc`, also where a library wrapped it in its own type.

    safetensors reports `... (os error 28)`, pyarrow an OSError whose message holds the text.
    """
    code = getattr(exc, "errno", None)
    if isinstance(exc, OSError) and code in WRITE_ERRNOS:
        return code
    text = str(exc)
    match = _re.search(r"os error (\d+)", text)
    if match and int(match.group(1)) in WRITE_ERRNOS:
        return int(match.group(1))
    for candidate in sorted(WRITE_ERRNOS):
        if _os.strerror(candidate) in text:
            return candidate
    return None


def write_error(path, exc: BaseException) -> WriteError:
    """One line naming the path and the errno's text: `cannot write PATH: No space left on device`."""
    code = storage_errno(exc)
    if code is None and isinstance(exc, OSError) and exc.errno:
        code = exc.errno  # the errno's text, not the message naming a temporary file
    reason = _os.strerror(code) if code is not None else (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return WriteError(f"cannot write {_os.fspath(path)}: {reason}")
