"""Shared command-line plumbing: one clear line and exit 2 for bad input, never a traceback."""

from __future__ import annotations

import argparse
import sys

from .errors import LayoutbenchError
from .lifetime import Terminated, sigterm_as_interrupt

RESUME = "rerun the same command to resume"  # the generator's: it does resume


class Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own: usage + message; ours: one line
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    try:
        value = int(float(text)) if "e" in text.lower() else int(text)
    except (ValueError, OverflowError):  # OverflowError: 1e999 is inf
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def run_main(prog: str, main, argv=None, interrupted=RESUME) -> int:
    """Run main(argv); turn our errors into one line on stderr and their exit code. Ctrl-C (exit
    130) and SIGTERM (exit 143) unwind alike (every cleanup runs) and end in one line that says
    what to do: `interrupted`, a string or a function of argv giving the command's own advice."""
    try:
        with sigterm_as_interrupt():
            return main(argv) or 0
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
