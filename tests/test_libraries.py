"""Optional libraries are detected for real (generator.libraries): a folder named after a library is
not the library, a broken install is not an install, and a missing one is one line naming what
installs it, in the generator, verify, bench run and report, which leave a corpus's unreadable
layouts out with that line instead of crashing on them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from generator import libraries
from generator.layouts import get_layout, layout_ids

ROOT = Path(__file__).resolve().parents[1]
# the optional libraries and the names of layouts users keep data folders under
SHADOWS = ("zarr", "tfrecord", "pyarrow", "crc32c", "webdataset", "imagecodecs", "simplejpeg", "pyspng", "torch",
           "mpi4py", "lmdb_data", "hdf5")


def run(args, cwd, prelude: str = "", timeout: float = 180) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` as a user runs it from `cwd` (sys.path[0] is cwd), with the repository
    importable; `prelude`: Python run first (e.g. making a library unimportable)."""
    module, *rest = map(str, args)
    code = (f"{prelude}\nimport runpy, sys\nsys.argv = [{module!r}, *sys.argv[1:]]\n"
            f"sys.path.insert(0, '')\nrunpy.run_module({module!r}, run_name='__main__', alter_sys=True)")
    return subprocess.run([sys.executable, "-c", code, *rest], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=_env())


def _env():
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def test_a_folder_named_after_a_library_is_not_the_library(tmp_path, monkeypatch):
    (tmp_path / "lb_shadow_lib").mkdir()
    (tmp_path / "lb_shadow_lib" / "storage").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    why = libraries.problem("lb_shadow_lib")
    assert why == f"lb_shadow_lib is not installed (the folder {tmp_path / 'lb_shadow_lib'} has its name but is not the library)"
    assert not libraries.present("lb_shadow_lib") and "lb_shadow_lib" not in sys.modules
    line = libraries.missing("the shadow layout", ("lb_shadow_lib",), "layouts")
    assert line == (f"the shadow layout needs lb_shadow_lib, which is not installed (the folder {tmp_path / 'lb_shadow_lib'} "
                    f"has its name but is not the library): pip install -e '.[layouts]' (or make install-extras)")


def test_an_installed_library_that_fails_to_import_is_named_with_why(tmp_path, monkeypatch):
    (tmp_path / "lb_broken_lib").mkdir()
    (tmp_path / "lb_broken_lib" / "__init__.py").write_text("raise RuntimeError('operator x::nms does not exist')\n")
    (tmp_path / "lb_needy_lib.py").write_text("import lb_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert libraries.problem("lb_broken_lib") == (
        "lb_broken_lib is installed but does not import (RuntimeError: operator x::nms does not exist)")
    assert libraries.problem("lb_needy_lib") == (
        "lb_needy_lib does not import (it needs lb_no_such_dependency, which is not installed)")
    assert libraries.missing("--loader torch", ("lb_broken_lib",), "torch") == (
        "--loader torch needs lb_broken_lib, which is installed but does not import (RuntimeError: operator x::nms "
        "does not exist): pip install -e '.[torch]' (or make install-torch)")


def test_a_real_library_is_present_and_the_answer_is_kept():
    assert libraries.present("numpy") and libraries.problem("numpy") is None
    assert libraries.problem.cache_info().currsize >= 1


def test_every_optional_library_names_an_extra_that_pyproject_declares():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(libraries.EXTRAS.values()) <= set(extras)
    for layout in map(get_layout, layout_ids()):
        assert layout.extra is None or layout.extra in extras, layout.id


def test_commands_run_from_a_folder_holding_folders_named_after_the_libraries(tmp_path):
    """The README's path from a user's folder: the generator writes every layout this install has
    (not the shadowed ones), verify checks them, bench run measures them, nothing crashes."""
    work = tmp_path / "work"
    for name in SHADOWS:
        (work / name / "storage").mkdir(parents=True)
    here = layout_ids(available=True)
    g = run(["generator", "--preset", "mnist", "--count", 12, "--out", "c", "--workers", 1], work)
    assert g.returncode == 0 and "Traceback" not in g.stderr, g.stderr
    manifest = json.loads((work / "c" / "manifest.json").read_text())
    assert list(manifest["layouts"]) == list(here)
    for name in layout_ids():
        if name not in here:
            assert f"left out {name}: the {name} layout needs " in g.stdout, g.stdout
    v = run(["loaders", "verify", "c", "--quiet"], work)
    assert v.returncode == 0 and "Traceback" not in v.stderr, v.stdout + v.stderr
    b = run(["bench", "run", "--corpus", "c", "--output", "r.json", "--cache", "warm", "--epochs", 1,
             "--no-sample-latency", "--no-naive", "--quiet"], work)
    assert b.returncode == 0 and "Traceback" not in b.stderr, b.stderr
    runs = json.loads((work / "r.json").read_text())["runs"]
    assert sorted({r["layout"] for r in runs}) == sorted(here)
    listed = run(["generator", "--list-layouts"], work)
    for name in layout_ids():
        status = "ready" if name in here else "missing"
        assert any(line.split()[:2] == [name, status] for line in listed.stdout.splitlines()), listed.stdout


BLOCK_H5PY = "import sys; sys.modules['h5py'] = None  # h5py made unimportable in this child"


@pytest.fixture(scope="module")
def two_layout_corpus(tmp_path_factory):
    from generator.build import generate
    from generator.spec import Spec

    root = tmp_path_factory.mktemp("two")
    generate(root, Spec(height=6, width=5, channels=1, count=20, seed=3), ["files", "hdf5"], workers=1, progress=False)
    return root


def test_a_corpus_layout_whose_library_is_missing_is_left_out_with_one_line(two_layout_corpus, tmp_path):
    root = two_layout_corpus
    why = "the hdf5 layout needs h5py, which is not installed: pip install h5py"
    v = run(["loaders", "verify", root, "--quiet"], tmp_path, BLOCK_H5PY)
    assert v.returncode == 0, v.stdout + v.stderr
    assert v.stderr == f"python -m loaders verify: left out hdf5: {why}\n" and "files:" in v.stdout
    out = tmp_path / "r.json"
    b = run(["bench", "run", "--corpus", root, "--output", out, "--cache", "warm", "--epochs", 1,
             "--no-sample-latency", "--quiet"], tmp_path, BLOCK_H5PY)
    assert b.returncode == 0 and f"python -m bench run: left out hdf5: {why}" in b.stderr, b.stderr
    measured = {r["layout"] for r in json.loads(out.read_text())["runs"]}
    assert "files" in measured and not any("hdf5" in name for name in measured), measured
    rep = run(["bench", "report", out, "--out", tmp_path / "rep"], tmp_path, BLOCK_H5PY)
    assert rep.returncode == 0 and (tmp_path / "rep" / "report.md").is_file(), rep.stderr
    for args in (["loaders", "verify", root, "--layouts", "hdf5"],
                 ["bench", "run", "--corpus", root, "--output", tmp_path / "x.json", "--layouts", "hdf5"]):
        named = run(args, tmp_path, BLOCK_H5PY)
        assert named.returncode == 2 and named.stderr.count("\n") == 1 and why in named.stderr, named.stderr
    assert not (tmp_path / "x.json").exists()


def test_generating_a_layout_whose_library_is_missing_is_refused_and_the_default_leaves_it_out(tmp_path):
    named = run(["generator", "--preset", "mnist", "--count", 5, "--layouts", "files,hdf5", "--out", tmp_path / "a"],
                tmp_path, BLOCK_H5PY)
    assert named.returncode == 2 and named.stderr.count("\n") == 1 and "needs h5py" in named.stderr, named.stderr
    assert not (tmp_path / "a").exists()
    default = run(["generator", "--preset", "mnist", "--count", 5, "--out", tmp_path / "b", "--workers", 1],
                  tmp_path, BLOCK_H5PY)
    assert default.returncode == 0, default.stderr
    assert "left out hdf5: the hdf5 layout needs h5py, which is not installed: pip install h5py" in default.stdout
    assert "hdf5" not in json.loads((tmp_path / "b" / "manifest.json").read_text())["layouts"]
    listed = run(["generator", "--list-layouts"], tmp_path, BLOCK_H5PY)
    assert "hdf5       missing" in listed.stdout and "needs h5py, which is not installed" in listed.stdout


BLOCK_PNG16 = "import sys; sys.modules['pyspng'] = None; sys.modules['imagecodecs'] = None"


def test_a_corpus_this_install_cannot_read_back_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "png16"
    r = run(["generator", "--shape", "8x8x3", "--dtype", "uint16", "--payload", "png", "--count", 4, "--out", out],
            tmp_path, BLOCK_PNG16)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "a 16-bit RGB PNG needs pyspng or imagecodecs to decode" in r.stderr and "'.[codecs]'" in r.stderr
    assert not out.exists()
    gray = run(["generator", "--shape", "8x8x1", "--dtype", "uint16", "--payload", "png", "--count", 4, "--out",
                tmp_path / "gray", "--layouts", "files"], tmp_path, BLOCK_PNG16)
    assert gray.returncode == 0, gray.stderr  # 16-bit gray: Pillow decodes it
    codecs = run(["generator", "--list-codecs"], tmp_path, BLOCK_PNG16)
    png = [line for line in codecs.stdout.splitlines() if line.startswith("png ")]
    assert png and png[0].split()[1] == "partly", codecs.stdout  # 8-bit and 16-bit gray still read back
