"""Shared command-line plumbing: one clear line and exit 2 for bad input, never a traceback."""

from __future__ import annotations

import argparse
import sys

from .errors import LayoutbenchError, UsageError, quote, raise_if_out_of_handles, raise_if_out_of_memory
from .limits import raise_open_files
from .lifetime import Terminated, sigterm_as_interrupt

RESUME = "rerun the same command to resume"  # the generator's: it does resume


class Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own: usage + message; ours: one line
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


INT_MAX = 2**63 - 1  # what a results or manifest field may hold (JSON read back as int64)


def int_in(lo: int, hi: int = INT_MAX):
    """An argparse type: an integer in [lo, hi] (1e6 notation allowed), else one line saying the range."""
    want = "a positive integer" if lo == 1 else f">= {lo}"

    def parse(text: str) -> int:
        try:
            value = int(float(text)) if "e" in text.lower() else int(text)
        except (ValueError, OverflowError):  # OverflowError: 1e999 is inf
            raise argparse.ArgumentTypeError(f"expected {want if lo == 1 else 'an integer ' + want}, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be {want}, got {text}")
        if value > hi:
            raise argparse.ArgumentTypeError(f"must be at most {hi:,}, got {text}")
        return value

    return parse


positive_int = int_in(1)
nonneg_int = int_in(0)


def positive_number(text: str) -> float:
    """A finite number > 0 (e.g. a size in MiB)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def run_main(prog: str, main, argv=None, interrupted=RESUME) -> int:
    """Run main(argv); turn our errors into one line on stderr and their exit code. Ctrl-C (exit
    130) and SIGTERM (exit 143) unwind alike (every cleanup runs) and end in one line that says
    what to do: `interrupted`, a string or a function of argv giving the command's own advice.
    First the soft limit of open files is raised to the hard limit (generator.limits); a limit
    that runs out anyway (EMFILE, ENFILE, ENOMEM, MemoryError) is one line naming it (exit 1)."""
    raise_open_files()
    try:
        with sigterm_as_interrupt():
            try:
                return main(argv) or 0
            except (OSError, MemoryError) as exc:
                raise_if_out_of_handles(exc, getattr(exc, "filename", None))
                raise_if_out_of_memory(exc, getattr(exc, "filename", None))
                raise
            except ImportError as exc:  # a library's shared object the address space cannot map (`ulimit -v`)
                if "failed to map segment" not in str(exc) and "Cannot allocate memory" not in str(exc):
                    raise
                raise_if_out_of_memory(MemoryError(), getattr(exc, "path", None) or getattr(exc, "name", None))
                raise
            except UnicodeEncodeError as exc:
                if not _undecoded_name(exc):
                    raise
                raise UsageError(f"a file name here is not valid in this locale's encoding "
                                 f"({sys.getfilesystemencoding()}), and a library needs it encoded: "
                                 f"{quote(exc.object)}; run under a UTF-8 locale (LANG=C.UTF-8, or "
                                 f"PYTHONUTF8=1), or rename it to UTF-8") from None
    except LayoutbenchError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        what = interrupted(sys.argv[1:] if argv is None else list(argv)) if callable(interrupted) else interrupted
        if isinstance(exc, Terminated):
            print(f"{prog}: terminated (SIGTERM); {what}", file=sys.stderr)
            return 143
        print(f"{prog}: interrupted; {what}", file=sys.stderr)
        return 130


def _undecoded_name(exc: UnicodeEncodeError) -> bool:
    """Whether exc is a library's failure to encode a name Python decoded with surrogateescape (the
    bytes of a file name not valid in the locale's encoding), not a fault of ours."""
    text = exc.object if isinstance(exc.object, str) else ""
    return any("\udc80" <= c <= "\udcff" for c in text[exc.start:exc.end])
