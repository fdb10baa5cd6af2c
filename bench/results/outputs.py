"""Writing the bench's outputs (results files, report.md, results.csv, the PNGs) without ever
destroying what someone else put there.

The rule: an output may replace only a file this tool wrote, recognised by its kind's mark (a
results file's format line, the report's first-line comment, the CSV's header, the PNG's
Software text). A regular file without the mark is refused in one line (UsageError, exit 2)
unless the user passes --overwrite; anything that is not a regular file (a device such as
/dev/null, a FIFO, a directory, a symbolic link) is never replaced. Writes are atomic: a
temporary file beside the output, renamed over it; a full disk or an interrupt leaves the old
file as it was and no temporary behind.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from generator.errors import LayoutbenchError, UsageError
from generator.lifetime import owned_name
from generator.safeio import kind_of

HEAD = 4096  # bytes of an existing file read to find its mark

REPORT_MARK = "<!-- layoutbench report (python -m bench report); rerunning it replaces this file -->"
PNG_SOFTWARE = "layoutbench"  # the PNG's Software text (matplotlib's savefig metadata)


@dataclass(frozen=True)
class Kind:
    """What an output is, and how a file of ours of that kind is recognised from its first bytes."""

    name: str  # "the results file", "report.md"...
    marks: tuple[bytes, ...]  # one of these in the head (at `at`, or anywhere when at is None)
    at: int | None = None

    def ours(self, head: bytes) -> bool:
        if self.at is not None:
            return any(head[self.at:].startswith(m) for m in self.marks)
        return any(m in head for m in self.marks)


RESULTS = Kind("the results file", (b'"format": "layoutbench-results"',))
REPORT = Kind("report.md", (REPORT_MARK.encode(), b"# layoutbench report\n"), at=0)  # the second: before the mark
PNG = Kind("the plot", (b"Software\x00" + PNG_SOFTWARE.encode(),))


def csv_kind(header: str) -> Kind:
    return Kind("results.csv", (header.encode() + b"\r\n", header.encode() + b"\n"), at=0)


def refusal(path: Path, kind: Kind, overwrite: bool) -> str | None:
    """Why `path` may not be written as `kind` (None: it may): missing, or a regular file of ours,
    or (`overwrite`) any regular file, may be."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):  # nothing there (a parent that is not a directory:
        return None                                  # the write itself is refused, naming it)
    except OSError as exc:
        return f"it cannot be examined ({exc.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link, which is never replaced; give the path it points to, or another"
    if not stat.S_ISREG(st.st_mode):
        return f"it is {kind_of(st.st_mode)}, which is never replaced; give a file path"
    if overwrite:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            head = os.read(fd, HEAD)
        finally:
            os.close(fd)
    except OSError as exc:
        return f"it cannot be read to check that layoutbench wrote it ({exc.strerror}); pass --overwrite to replace it"
    if kind.ours(head):
        return None
    return "it exists and layoutbench did not write it; pass --overwrite to replace it, or choose another path"


def check_output(path: Path, kind: Kind, overwrite: bool = False, option: str | None = None) -> None:
    """UsageError, one line, when `path` may not be written as `kind` (see refusal)."""
    try:
        why = refusal(Path(os.path.abspath(path)), kind, overwrite)
    except FileNotFoundError:  # os.path.abspath of a relative path, from a deleted working directory
        raise UsageError(f"{option or kind.name} {path}: the working directory no longer exists; cd to a directory "
                         f"that does, or give an absolute path") from None
    if why is not None:
        raise UsageError(f"{option or kind.name} {path}: {why}; nothing was written")


def write_output(path: Path, data: bytes | str, kind: Kind, overwrite: bool = False) -> Path:
    """Write `data` to `path` atomically (a temporary beside it, then renamed over it), after
    check_output; a failure (a full disk, Ctrl-C) leaves no temporary and the old file untouched."""
    path = Path(os.path.abspath(path)) if not Path(path).is_absolute() else Path(path)
    check_output(path, kind, overwrite)
    if isinstance(data, str):
        data = data.encode()
    tmp = path.with_name(owned_name(f".{path.name}.tmp-"))  # a killed run's is swept by the next (sweep_dead)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if not isinstance(exc, OSError):
            raise
        hint = "free space, or choose another place, and rerun" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else \
            "choose another place and rerun"
        raise LayoutbenchError(f"cannot write {kind.name} {path} ({exc.strerror}); nothing was replaced: {hint}") from None
    return path


STAGE_PREFIX = ".layoutbench-stage-"


class Staging:
    """Outputs rendered first into a directory of their own beside them (`dir`, named after this
    process), then published together: every one checked (check_output) before any is moved, then
    each renamed over its final path. Nothing of a failed or refused attempt is left: the directory
    is removed on exit, and a killed process's is removed by the next Staging in that place."""

    def __init__(self, out: Path, kinds, overwrite: bool = False, option: str = "--out"):
        self.out, self.kinds, self.overwrite, self.option = Path(out), kinds, overwrite, option
        sweep_stages(self.out)
        self.dir = self.out / owned_name(STAGE_PREFIX)
        self.dir.mkdir()

    def publish(self) -> list[Path]:
        """Move every staged file to `out`, after checking them all; returns the final paths."""
        staged = sorted(p for p in self.dir.iterdir() if p.is_file())
        for p in staged:
            check_output(self.out / p.name, self.kinds(p.name), self.overwrite, self.option)
        done = []
        for p in staged:
            os.replace(p, self.out / p.name)
            done.append(self.out / p.name)
        return done

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def sweep_stages(out: Path) -> None:
    """Remove the staging directories in `out` of processes on this host that are dead."""
    import re
    import shutil
    import socket

    from generator.lifetime import pid_alive

    pattern = re.compile(re.escape(STAGE_PREFIX) + r"(?P<host>.+)-(?P<pid>\d+)$")
    try:
        entries = list(Path(out).iterdir())
    except OSError:
        return
    for p in entries:
        m = pattern.match(p.name)
        if m and m["host"] == socket.gethostname() and not pid_alive(int(m["pid"])) and p.is_dir() \
                and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
