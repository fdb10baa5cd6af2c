"""The `layoutbench` console script: each command is its `python -m` entry point."""

import subprocess
import sys

import pytest

from bench.cli import console


def run(*args):
    return subprocess.run([sys.executable, "-m", "bench.cli.console", *args], capture_output=True, text=True,
                          timeout=120)


def test_usage_lists_every_command():
    p = run("--help")
    assert p.returncode == 0
    for name, command in console.COMMANDS.items():
        assert name in p.stdout and command.equivalent in p.stdout


def test_no_command_is_a_usage_error():
    p = run()
    assert p.returncode == 2 and "usage: layoutbench COMMAND" in p.stdout


def test_unknown_command_names_the_choices():
    p = run("benchmark")
    assert p.returncode == 2
    assert "unknown command 'benchmark'" in p.stderr and "generate, ingest, verify, run" in p.stderr


@pytest.mark.parametrize("name", list(console.COMMANDS))
def test_each_command_has_the_entry_points_help(name):
    p = run(name, "--help")
    assert p.returncode == 0, p.stderr
    assert "usage:" in p.stdout


def test_generate_and_verify_through_the_script(tmp_path):
    out = tmp_path / "c"
    p = run("generate", "--shape", "4x4x1", "--count", "5", "--layouts", "files,npy", "--out", str(out))
    assert p.returncode == 0, p.stderr
    assert (out / "manifest.json").is_file()
    p = run("verify", str(out))
    assert p.returncode == 0, p.stderr


def test_errors_are_one_line_with_the_equivalent_command(tmp_path):
    p = run("verify", str(tmp_path / "nothing"))
    assert p.returncode == 2 and "no such corpus directory" in p.stderr
    assert p.stderr.startswith("python -m loaders verify: error:") and len(p.stderr.strip().splitlines()) == 1


def test_the_console_script_is_installed():
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == "layoutbench"]
    assert ep.value == "bench.cli.console:main"
