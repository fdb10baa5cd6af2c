"""Bad command-line values for every command (issue 5): one line on stderr naming the value and
what to do, exit 2, no traceback, nothing written.

tests/test_generator_cli.py holds the generator's cases (counts, shapes, presets, layouts, --out,
locks), test_bench_cli.py and test_plan.py some of bench's, test_verify.py some of verify's; this
module adds the rest, one table per command, run in this process (fast), and then each entry
point once as a real process (no traceback from the interpreter either).
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from generator.build import generate
from generator.cli import run_main
from generator.spec import Spec

REPO = Path(__file__).resolve().parents[1]


def commands():
    from bench.cli import mpi, plan
    from bench.__main__ import main as bench_main
    from generator.__main__ import main as generator_main
    from loaders.__main__ import main as loaders_main

    return {
        "python -m generator": lambda argv: run_main("python -m generator", generator_main, argv),
        "python -m loaders": lambda argv: run_main("python -m loaders", loaders_main, argv),
        "python -m bench": lambda argv: run_main("python -m bench", bench_main, argv),
        "python -m bench plan": lambda argv: run_main("python -m bench plan", plan.main, argv),
        "python -m bench.cli.mpi": lambda argv: mpi.run_ranked("python -m bench.cli.mpi", mpi.main, argv),
    }


@pytest.fixture(scope="module")
def places(tmp_path_factory, corpus):
    """What the bad values point at: a sound corpus, one holding only hdf5, results files that are
    not ours, a plain file, and an empty directory for outputs."""
    base = tmp_path_factory.mktemp("cli-places")
    only_hdf5 = base / "only-hdf5"
    generate(only_hdf5, Spec(height=4, width=4, channels=1, count=5), ["hdf5"], workers=1, progress=False)
    a_file = base / "a-file.txt"
    a_file.write_text("not a directory\n")
    bad = {
        "list.json": "[1, 2]", "other.json": json.dumps({"format": "something-else", "version": 1}),
        "empty.json": "", "deep.json": "[" * 100_000 + "]" * 100_000,
        "types.json": json.dumps({"format": "layoutbench-results", "version": 1, "created": "x", "metadata": {},
                                  "corpus": {}, "floors": {}, "runs": [{"layout": 5}]}),
    }
    for name, text in bad.items():
        (base / name).write_text(text)
    (base / "pickle.json").write_bytes(pickle.dumps({"runs": []}))
    return {"corpus": corpus("gray8"), "only_hdf5": only_hdf5, "file": a_file, "base": base,
            "out": base / "out" / "r.json"}


def fill(argv, places) -> list[str]:
    return [str(a).format(**{k: str(v) for k, v in places.items()}) for a in argv]


RUN = ["run", "--corpus", "{corpus}", "--output", "{out}"]
PLAN = ["--images", "1000", "--preset", "mnist", "--epochs", "3"]
# (command, argv, what the line must hold); argv may name the places above as {corpus}, {file}, ...
CASES = [
    # generator: the rest is in test_generator_cli.py
    ("python -m generator", ["--shape", "8x8x3", "--dtype", "float32", "--out", "{base}/g"], "invalid choice: 'float32'"),
    ("python -m generator", ["--preset", "mnist", "--content", "stripes", "--out", "{base}/g"], "invalid choice: 'stripes'"),
    ("python -m generator", ["--preset", "mnist", "--compression", "lzma", "--out", "{base}/g"], "invalid choice: 'lzma'"),
    ("python -m generator", ["--preset", "mnist", "--classes", "0", "--out", "{base}/g"], "--classes"),
    ("python -m generator", ["--preset", "mnist", "--workers", "-2", "--out", "{base}/g"], "--workers"),
    # loaders verify
    ("python -m loaders", ["verify", "{base}/no-such-corpus"], "no such corpus directory"),
    ("python -m loaders", ["verify", "{file}"], "no such corpus directory"),
    ("python -m loaders", ["verify", "{corpus}", "--layouts", ""], "no layouts given"),
    ("python -m loaders", ["verify", "{corpus}", "--layouts", "files,nope"], "unknown layout 'nope'"),
    ("python -m loaders", ["verify", "{only_hdf5}", "--layouts", "lmdb"], "layout 'lmdb' is not complete"),
    ("python -m loaders", ["verify", "{corpus}", "--workers", "2"], "unrecognized arguments: --workers"),
    # bench run
    ("python -m bench", [*RUN, "--batch-size", "0"], "--batch-size"),
    ("python -m bench", [*RUN, "--batch-size", "-32"], "--batch-size"),
    ("python -m bench", [*RUN, "--epochs", "-1"], "--epochs"),
    ("python -m bench", [*RUN, "--repeats", "0"], "--repeats"),
    ("python -m bench", [*RUN, "--prefetch", "0"], "--prefetch"),
    ("python -m bench", [*RUN, "--seed", "-1"], "--seed"),
    ("python -m bench", [*RUN, "--shuffle", "random"], "invalid choice: 'random'"),
    ("python -m bench", [*RUN, "--workers", "1,x"], "--workers"),
    ("python -m bench", [*RUN, "--layouts", ","], "--layouts"),
    ("python -m bench", ["run", "--corpus", "{only_hdf5}", "--output", "{out}", "--layouts", "lmdb"],
     "layout 'lmdb' is not in the corpus"),
    ("python -m bench", ["run", "--corpus", "{file}", "--output", "{out}"], "no such directory"),
    ("python -m bench", [*RUN, "--checkpoint-mb", "0", "--checkpoint-every", "1"], "--checkpoint-mb"),
    ("python -m bench", [*RUN, "--checkpoint-mb", "nan", "--checkpoint-every", "1"], "--checkpoint-mb"),
    ("python -m bench", [*RUN, "--checkpoint-mb", "inf", "--checkpoint-every", "1"], "--checkpoint-mb"),
    ("python -m bench", [*RUN, "--checkpoint-mb", "5", "--checkpoint-every", "0"], "--checkpoint-every"),
    ("python -m bench", [*RUN, "--evict", "now"], "invalid choice: 'now'"),
    ("python -m bench", [*RUN, "--comm", "pigeon"], "invalid choice: 'pigeon'"),
    ("python -m bench", [*RUN, "--shard-shift", "-1"], "--shard-shift"),
    ("python -m bench", ["run", "--corpus", "{corpus}", "--output", "{base}"], "is a directory; give a file name"),
    ("python -m bench", ["run", "--corpus", "{corpus}", "--output", "{file}/r.json"], "--output: cannot write in"),
    ("python -m bench", ["run", "--corpus", "{corpus}", "--output", "{corpus}/files/r.json"], "inside the corpus"),
    # bench report / compare: results files that are not ours
    ("python -m bench", ["report"], "the following arguments are required"),
    ("python -m bench", ["report", "{base}/list.json", "--out", "{base}/rep"], "is not a layoutbench results file"),
    ("python -m bench", ["report", "{base}/other.json", "--out", "{base}/rep"], "is not a layoutbench results file"),
    ("python -m bench", ["report", "{base}/empty.json", "--out", "{base}/rep"], "cannot be read as JSON"),
    ("python -m bench", ["report", "{base}/deep.json", "--out", "{base}/rep"], "cannot be read as JSON"),
    ("python -m bench", ["report", "{base}/pickle.json", "--out", "{base}/rep"], "cannot be read as JSON"),
    ("python -m bench", ["report", "{base}/types.json", "--out", "{base}/rep"], "the file is damaged or not ours"),
    ("python -m bench", ["report", "{base}", "--out", "{base}/rep"], "is a directory, not a regular file"),
    ("python -m bench", ["report", "{base}/missing.json"], "no such results file"),
    ("python -m bench", ["compare", "{base}/list.json", "{base}/other.json"], "is not a layoutbench results file"),
    ("python -m bench", ["compare", "{base}/pickle.json", "{base}/list.json"], "cannot be read as JSON"),
    ("python -m bench", ["compare", "{base}/list.json"], "the following arguments are required: B.json"),
    # bench suite (refused before generating or measuring anything)
    ("python -m bench", ["suite", "--quick", "--out", "{file}/results"], "--out: cannot write in"),
    ("python -m bench", ["suite", "--data", "{file}", "--out", "{base}/suite"], "--data {file} is not a directory"),
    ("python -m bench", ["suite", "--fast"], "unrecognized arguments: --fast"),
    # bench plan (also as python -m bench.cli.plan; test_plan.py has more)
    ("python -m bench", ["plan", "--images", "-5", "--preset", "mnist", "--epochs", "3"], "--images"),
    ("python -m bench plan", ["--images", "0", "--preset", "mnist", "--epochs", "3"], "--images"),
    ("python -m bench plan", ["--images", "many", "--preset", "mnist", "--epochs", "3"], "--images"),
    ("python -m bench plan", ["--images", "1000", "--preset", "mnist", "--epochs", "0"], "--epochs"),
    ("python -m bench plan", [*PLAN, "--batch-size", "0"], "--batch-size"),
    ("python -m bench plan", ["--images", "1000", "--preset", "8k", "--epochs", "3"], "invalid choice: '8k'"),
    ("python -m bench plan", ["--images", "1000", "--image-mb", "-4", "--epochs", "3"], "--image-mb"),
    ("python -m bench plan", ["--images", "1000", "--image-mb", "nan", "--epochs", "3"], "--image-mb"),
    ("python -m bench plan", [*PLAN, "--target-epoch-hours", "0"], "--target-epoch-hours"),
    ("python -m bench plan", [*PLAN, "--from", "{base}/other.json"], "is not a layoutbench results file"),
    ("python -m bench plan", [*PLAN, "--from", "{base}/deep.json"], "cannot be read as JSON"),
    ("python -m bench plan", [*PLAN, "--from", "{base}/missing.json"], "no such results file"),
    # bench.cli.mpi (without an MPI launcher: one process)
    ("python -m bench.cli.mpi", [], "usage: mpirun -n R python -m bench.cli.mpi generate"),
    ("python -m bench.cli.mpi", ["scatter"], "usage: mpirun -n R python -m bench.cli.mpi generate"),
    ("python -m bench.cli.mpi", ["generate", "--preset", "mnist", "--count", "-1", "--out", "{base}/m"], "--count"),
    ("python -m bench.cli.mpi", ["generate", "--preset", "mnist", "--layouts", "zip", "--out", "{base}/m"],
     "unknown layout 'zip'"),
    ("python -m bench.cli.mpi", ["generate", "--list-presets"], "use python -m generator --list-presets"),
]


@pytest.mark.parametrize("command, argv, says", CASES, ids=[f"{c[0].split()[-1]} {' '.join(c[1][:1] + c[1][-2:])}"
                                                            for c in CASES])
def test_a_bad_value_is_one_line_and_exit_2(places, capsys, command, argv, says):
    before = sorted(p.name for p in places["base"].iterdir())
    try:
        code = commands()[command](fill(argv, places))
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and "Traceback" not in err, err
    progs = (command, "mpirun -n R python -m bench.cli.mpi generate")  # bench.cli.mpi's argparse names the mpirun line
    assert lines[0].startswith(progs if command == "python -m bench.cli.mpi" else command), lines[0]
    assert ": error: " in lines[0], lines[0]
    assert fill([says], places)[0] in lines[0], (says, lines[0])
    assert sorted(p.name for p in places["base"].iterdir()) == before  # nothing made on the way to the error


# One bad value per entry point, as a real process: the interpreter prints no traceback either.
PROCESSES = [
    (["-m", "loaders", "verify", "{base}/no-such-corpus"], "no such corpus directory"),
    (["-m", "bench", "run", "--corpus", "{corpus}", "--output", "{out}", "--shuffle", "random"], "invalid choice"),
    (["-m", "bench", "report", "{base}/types.json", "--out", "{base}/rep"], "the file is damaged or not ours"),
    (["-m", "bench", "compare", "{base}/pickle.json", "{base}/list.json"], "cannot be read as JSON"),
    (["-m", "bench.cli.plan", *PLAN, "--from", "{base}/list.json"], "is not a layoutbench results file"),
    (["-m", "bench.cli.mpi", "generate", "--preset", "mnist", "--count", "0", "--out", "{base}/m"], "--count"),
]


@pytest.mark.parametrize("argv, says", PROCESSES, ids=[" ".join(p[0][1:3]) for p in PROCESSES])
def test_the_entry_points_print_one_line_and_exit_2(places, argv, says):
    p = subprocess.run([sys.executable, *fill(argv, places)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == "", (p.returncode, p.stdout, p.stderr)
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr and says in p.stderr, p.stderr
