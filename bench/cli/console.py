"""`layoutbench COMMAND ...`: one console script for every command, beside the `python -m`
entry points it calls (which keep working, with the same options and exit codes).

    layoutbench generate ...   = python -m generator ...
    layoutbench ingest ...     = python -m generator ingest ...
    layoutbench verify ...     = python -m loaders verify ...
    layoutbench run|report|compare|suite|plan ...  = python -m bench run|report|compare|suite|plan ...
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass

from generator.cli import RESUME, run_main

PROG = "layoutbench"


@dataclass(frozen=True)
class Command:
    """One subcommand: the module whose `attr` runs it, the words put before the user's arguments,
    the `python -m` line it stands for, and what an interruption leaves (a string, or the name of
    the module's function that says it)."""

    module: str
    attr: str
    head: tuple[str, ...]
    equivalent: str
    summary: str
    interrupted: str = RESUME

    def interrupted_by(self, argv: list[str]):
        if self.interrupted.startswith("attr:"):
            return getattr(importlib.import_module(self.module), self.interrupted[5:])
        return self.interrupted


def _bench(name: str, summary: str) -> Command:
    return Command("bench.cli.commands", "main", (name,), f"python -m bench {name}", summary, "attr:interrupted")


COMMANDS = {
    "generate": Command("generator.__main__", "main", (), "python -m generator",
                        "write a synthetic corpus in every layout (resumes when rerun)"),
    "ingest": Command("generator.__main__", "dispatch", ("ingest",), "python -m generator ingest",
                      "make a corpus of an image folder, each file's bytes unchanged"),
    "verify": Command("loaders.__main__", "main", ("verify",), "python -m loaders verify",
                      "check every sample of every layout against the reference",
                      "verify does not resume: rerun it to check the corpus from the start"),
    "run": _bench("run", "measure layouts x loaders x cache regimes next to the floors"),
    "report": _bench("report", "report.md, results.csv and plots from results files"),
    "compare": _bench("compare", "two results files side by side"),
    "suite": _bench("suite", "what `make bench` runs: corpora, runs, report"),
    "plan": _bench("plan", "the storage demands of a training run"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} COMMAND [options]  ({PROG} COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:{width}}  {c.summary}  [{c.equivalent}]" for name, c in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    command = COMMANDS.get(name)
    if command is None:
        print(f"{usage()}\n\n{PROG}: error: unknown command {name!r}; choose from {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    module = importlib.import_module(command.module)
    args = [*command.head, *rest]
    return run_main(command.equivalent, getattr(module, command.attr), args,
                    interrupted=command.interrupted_by(args))


if __name__ == "__main__":
    sys.exit(main())
