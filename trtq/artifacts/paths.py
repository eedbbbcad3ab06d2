"""Output paths: checked before any work, and the temporary names the atomic writers use.

`check_output_path` is called when the command line is parsed (it is the argparse `type` of
every `-o`), so a path that cannot be written is refused in one line before a model loads or a
solver runs. The writers in `trtq.artifacts.io` write beside the target under a temporary name
that fits the file system's name limit and carries the writer's pid, so the temporaries a killed
writer leaves are recognised and removed by the next write to the same target.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
import tempfile
from pathlib import Path

from trtq.errors import InputError

_NAME_MAX_DEFAULT = 255
_TEMP_SUFFIX = ".tmp"
# "." + name + "." + pid (at most 7 digits on Linux) + "-" + 8 random characters + ".tmp"
_TEMP_OVERHEAD = 1 + 1 + 7 + 1 + 8 + len(_TEMP_SUFFIX)

ARTIFACT_SUFFIXES = (".json", ".yaml", ".yml")


def name_max(directory: Path) -> int:
    """The longest file name, in bytes, the file system holding `directory` takes."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return int(os.pathconf(directory, "PC_NAME_MAX"))
    return _NAME_MAX_DEFAULT


def _existing_ancestor(path: Path) -> Path:
    """The nearest ancestor of `path` that exists (the current directory for a bare name)."""
    current = path.parent if str(path.parent) else Path(".")
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def check_output_path(
    path: str | os.PathLike[str],
    *,
    directory: bool = False,
    suffixes: tuple[str, ...] | None = None,
    what: str = "output",
) -> Path:
    """Refuse, in one line, an output path this process cannot create; return it as a Path.

    `directory`: the output is a directory (created or replaced). `suffixes`: the file suffixes the
    writer honours (a suffix it would ignore, such as `.parquet` for a JSON writer, is refused).
    Missing parent directories are fine when the nearest existing one is a writable directory.
    """
    text = os.fspath(path)
    if not text.strip():
        raise InputError(f"{what} path is empty")
    p = Path(text).expanduser()
    try:
        _check_output_path(p, text, directory, suffixes, what)
    except OSError as exc:  # ENAMETOOLONG for the whole path, ELOOP, EACCES on a parent ...
        raise InputError(
            f"{what} {text[:80]}{'...' if len(text) > 80 else ''}: {os.strerror(exc.errno) if exc.errno else exc}"
        ) from None
    return p


def _check_output_path(p: Path, text: str, directory: bool, suffixes: tuple[str, ...] | None, what: str) -> None:
    ancestor = _existing_ancestor(p)
    if not ancestor.is_dir():
        raise InputError(f"{what} {p}: {ancestor} is a file, not a directory")
    # Names first: stat() of a name over NAME_MAX fails with ENAMETOOLONG.
    limit = name_max(ancestor)
    below = p.relative_to(ancestor).parts if p.is_relative_to(ancestor) else (p.name,)
    for part in below:
        size = len(part.encode("utf-8", "surrogateescape"))
        if size > limit:
            raise InputError(
                f"{what}: the name {part[:24]}... is {size} bytes, over this file system's limit of {limit}"
            )
    if p.exists():
        if directory and not p.is_dir():
            raise InputError(f"{what} {p} exists and is not a directory")
        if not directory and p.is_dir():
            raise InputError(f"{what} {p} is a directory: give a file name")
    if not directory and text.endswith(("/", os.sep)):
        raise InputError(f"{what} {text} names a directory: give a file name")
    if not directory and suffixes and p.suffix.lower() not in suffixes:
        raise InputError(
            f"{what} {p}: this command writes {' or '.join(suffixes)} files, "
            f"not {p.suffix or 'a name without a suffix'}"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"{what} {p}: cannot write into {ancestor} (permission denied)")
    with contextlib.suppress(AttributeError):
        if os.statvfs(ancestor).f_flag & os.ST_RDONLY:
            raise InputError(f"{what} {p}: {ancestor} is on a read-only file system")


def output_file(*suffixes: str):
    """argparse `type` for a file output: `type=output_file(".json", ".yaml", ".yml")`."""
    import argparse

    def parse(value: str) -> Path:
        try:
            return check_output_path(value, suffixes=suffixes or None)
        except InputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def output_dir(value: str) -> Path:
    """argparse `type` for a directory output (created, or replaced as a whole)."""
    import argparse

    try:
        return check_output_path(value, directory=True)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# ---------------------------------------------------------------------------- temporary names


def _temp_prefix(target: Path) -> str:
    """'.' + the target's name, cut (on a UTF-8 boundary) so the whole temp name fits NAME_MAX."""
    room = name_max(target.parent if str(target.parent) else Path(".")) - _TEMP_OVERHEAD
    raw = target.name.encode("utf-8", "surrogateescape")
    if len(raw) > room:
        raw = raw[: max(room, 1)]
        name = raw.decode("utf-8", "ignore")
    else:
        name = target.name
    return f".{name}."


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def stale_temps(target: Path) -> list[Path]:
    """Temporaries beside `target` left by writers of it that are no longer running."""
    prefix = _temp_prefix(target)
    stale = []
    for candidate in target.parent.glob(glob.escape(prefix) + "*" + _TEMP_SUFFIX):
        pid_text = candidate.name[len(prefix) :].split("-", 1)[0]
        if pid_text.isdigit() and not _alive(int(pid_text)):
            stale.append(candidate)
    return stale


def remove_stale_temps(target: Path) -> None:
    for path in stale_temps(target):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()


def make_temp_beside(target: Path, directory: bool = False) -> Path:
    """Create a temporary file (or directory) beside `target`, named for it and for this process.

    A directory that cannot hold it (a pseudo file system such as /proc, a file where a directory
    should be, a vanished mount) is a refused write of `target`, whatever errno says it: WriteError."""
    from trtq.errors import write_error

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(target)
        prefix = f"{_temp_prefix(target)}{os.getpid()}-"
        if directory:
            return Path(tempfile.mkdtemp(prefix=prefix, suffix=_TEMP_SUFFIX, dir=target.parent))
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=_TEMP_SUFFIX, dir=target.parent)
    except OSError as exc:
        raise write_error(target, exc) from None
    os.close(fd)
    return Path(name)


# ---------------------------------------------------------------------------- replacing a directory

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange_paths(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux renameat2 RENAME_EXCHANGE).

    Returns False where the call is unavailable (another OS, an old C library, a file system
    that refuses it); the caller then falls back to two renames.
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(a))


def replace_directory(new: Path, target: Path) -> str:
    """Put directory `new` at `target`, replacing what is there, with something at `target` throughout.

    An existing target is swapped with `new` atomically (RENAME_EXCHANGE), then the old tree,
    now at `new`'s temporary name, is deleted: at every moment `target` holds the old tree or the
    new one. Where the swap is unavailable, the old tree is renamed aside and the new one renamed
    in: two renames a few microseconds apart (the only window with nothing at `target`).
    Returns how it was done: "exchange", "rename" or "two renames".
    """
    if not target.exists():
        os.replace(new, target)
        return "rename"
    if exchange_paths(new, target):
        shutil.rmtree(new, ignore_errors=True)
        return "exchange"
    aside = make_temp_beside(target, directory=True)
    os.rmdir(aside)
    os.replace(target, aside)
    os.replace(new, target)
    shutil.rmtree(aside, ignore_errors=True)
    return "two renames"
