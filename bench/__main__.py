"""python -m bench: run | report | compare | suite | plan (the commands: bench/cli/commands.py)."""

import sys

from generator.cli import run_main

from bench.cli.commands import PROG, interrupted, main

if __name__ == "__main__":
    sys.exit(run_main(PROG, main, interrupted=interrupted))
