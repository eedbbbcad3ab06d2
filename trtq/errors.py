"""The errors users see. The CLI turns every TrtqError into one line on stderr and exit 2."""


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
