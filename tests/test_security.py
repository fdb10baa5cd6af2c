"""Security (issue 5): nothing stored or loaded is pickle, marshal, eval'd or exec'd, and a hostile
corpus or results file can fail, but never runs code nor writes outside the output paths.

The source scan covers the product (generator/, loaders/, bench/). multiprocessing pickles our
own reader and messages between our own processes (worker start-up, task queues); nothing that
is stored or read from disk goes through it, so it is not flagged (the README says so).
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import shutil
from pathlib import Path

import h5py
import lmdb
import numpy as np
import pytest

from generator.cli import run_main
from generator.errors import CorpusError, LayoutbenchError
from generator.manifest import MANIFEST

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("generator", "loaders", "bench")
UNSAFE_MODULES = {"pickle", "_pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle", "jsonpickle", "yaml",
                  "joblib"}
UNSAFE_CALLS = {"eval", "exec", "compile", "__import__"}


def _name(node) -> str:
    """Dotted name of a call's target: np.load -> 'np.load'."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return ""


def unsafe(source: str, where: str) -> list[str]:
    """Every construct that can run code from data: unpickling modules, eval/exec, np.load with
    allow_pickle, yaml, torch.load / read_pickle, os.system and shell=True."""
    found = []
    for node in ast.walk(ast.parse(source, where)):
        line = f"{where}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{line}: import {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            found.append(f"{line}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            name = _name(node.func)
            keywords = {k.arg: k.value for k in node.keywords}
            if name in UNSAFE_CALLS or name.split(".")[-1] in ("read_pickle", "unsafe_load") or name == "torch.load":
                found.append(f"{line}: {name}()")
            elif name.split(".")[-1] == "load" and name.split(".")[0] in ("np", "numpy") and "allow_pickle" in keywords \
                    and not (isinstance(keywords["allow_pickle"], ast.Constant) and keywords["allow_pickle"].value is False):
                found.append(f"{line}: {name}(allow_pickle=...)")
            elif name in ("os.system", "os.popen") or (
                    isinstance(keywords.get("shell"), ast.Constant) and keywords["shell"].value is True):
                found.append(f"{line}: {name}() runs a shell")
    return found


def test_the_scan_finds_what_it_looks_for():
    """A positive control: each forbidden construct in a snippet is reported (the scan can fail)."""
    snippet = """
import pickle
import yaml, json
from marshal import loads
import shelve
eval("1")
exec("x = 1")
compile("1", "f", "eval")
np.load("a.npy", allow_pickle=True)
numpy.load(f, allow_pickle=flag)
np.load("b.npy")
np.load("c.npy", allow_pickle=False)
pd.read_pickle("x")
torch.load("m.pt")
os.system("ls")
subprocess.run("ls", shell=True)
subprocess.run(["ls"])
"""
    found = unsafe(snippet, "snippet.py")
    assert [f.split(": ", 1)[1] for f in found] == [
        "import pickle", "import yaml", "from marshal import ...", "import shelve", "eval()", "exec()", "compile()",
        "np.load(allow_pickle=...)", "numpy.load(allow_pickle=...)", "pd.read_pickle()", "torch.load()",
        "os.system() runs a shell", "subprocess.run() runs a shell"]


def test_no_pickle_marshal_eval_or_shell_in_the_product():
    files = sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))
    assert len(files) > 20  # the scan sees the packages
    found = [f for p in files for f in unsafe(p.read_text(), str(p.relative_to(REPO)))]
    assert found == []


# --- hostile corpora ------------------------------------------------------------------------------

class Canary:
    """Unpickling this creates the canary file: proof that something ran code from the data."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def snapshot(root: Path, skip: Path | None = None) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        if skip is not None and (p == skip or skip in p.parents):
            continue
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def sandbox(corpus, tmp_path, monkeypatch):
    """sandbox/corpus (a copy of a small corpus, to be made hostile), sandbox/out (the only place
    anything may be written), an empty working directory, and where a canary would appear."""
    box = tmp_path / "sandbox"
    shutil.copytree(corpus("gray8"), box / "corpus")
    (box / "out").mkdir()
    (box / "cwd").mkdir()
    monkeypatch.chdir(box / "cwd")
    return box, box / "corpus", box / "out", box / "canary"


def plant_pickles(root: Path, canary: Path) -> bytes:
    """Pickles that would create `canary` if loaded, where the layouts keep their own metadata."""
    bomb = pickle.dumps(Canary(canary))
    env = lmdb.open(str(root / "lmdb"), max_dbs=2, subdir=True)
    try:
        with env.begin(write=True, db=env.open_db(b"meta")) as txn:
            txn.put(b"spec", bomb)
            txn.put(b"labels", bomb)
    finally:
        env.close()
    with h5py.File(root / "corpus.h5", "r+") as f:
        f.attrs["layoutbench_spec"] = np.void(bomb)
    return bomb


def everything_reads(root: Path, out: Path, capsys) -> dict:
    """Every way this project loads a corpus, each allowed to fail with one clear line: the readers,
    `python -m loaders verify`, `python -m bench run` (results to out/) and `python -m bench report`.
    Returns what each said: {layout or command: error text, or "ok" / "exit N: line"}."""
    from bench.__main__ import main as bench_main
    from loaders import open_corpus
    from loaders.__main__ import main as loaders_main

    said = {}
    for layout in ("files", "hdf5", "lmdb"):
        try:
            reader = open_corpus(root, layout, verify=True)
            reader.read_batch(range(len(reader)))
            reader.stored_labels()
            reader.close()
            said[layout] = "ok"
        except LayoutbenchError as exc:
            said[layout] = str(exc)
    for name, main, prog, argv in (
            ("verify", loaders_main, "python -m loaders", ["verify", str(root), "--quiet"]),
            ("run", bench_main, "python -m bench", ["run", "--corpus", str(root), "--output", str(out / "r.json"),
                                                    "--cache", "warm", "--epochs", "1", "--batch-size", "8", "--quiet"]),
            ("report", bench_main, "python -m bench", ["report", str(out / "r.json"), "--out", str(out / "report")])):
        try:
            code = run_main(prog, main, argv)
        except SystemExit as exc:
            code = exc.code
        _, err = capsys.readouterr()
        assert "Traceback" not in err and len(err.splitlines()) <= 1, err
        said[name] = f"exit {code}: {err.strip()}"
    return said


def test_pickles_planted_in_the_layouts_metadata_are_never_loaded(sandbox, capsys):
    """LMDB's meta keys and the HDF5 spec attribute replaced by pickles that would create a file:
    the LMDB layout is refused (its spec is not JSON), verify says so, bench run reads what is
    sound; the canary never appears and nothing is written outside out/."""
    box, root, out, canary = sandbox
    plant_pickles(root, canary)
    before = snapshot(box, skip=out)
    said = everything_reads(root, out, capsys)
    assert not canary.exists()
    assert snapshot(box, skip=out) == before
    assert "lmdb (meta key spec) stores an unreadable spec" in said["lmdb"], said
    assert "corpus.h5 (attribute layoutbench_spec) stores an unreadable spec" in said["hdf5"], said
    assert said["files"] == "ok" and said["run"] == "exit 1: " + "python -m bench: error: " + said["hdf5"], said


# Hostile manifests: odd types, huge numbers, code in strings, deep nesting, binary, paths outside.
HOSTILE = {
    "code in every string": lambda d, c: d["spec"].update(preset=f"__import__('os').system('touch {c}')",
                                                         content=f"eval(open('{c}', 'w'))"),
    "a count of 10**30": lambda d, c: d["spec"].update(count=10**30),
    "a height of 2**62": lambda d, c: d["spec"].update(height=2**62),
    "a count that is text": lambda d, c: d["spec"].update(count="37"),
    "a count that is a float": lambda d, c: d["spec"].update(count=37.0),
    "a seed of -1": lambda d, c: d["spec"].update(seed=-1),
    "a spec that is a list": lambda d, c: d.update(spec=[1, 2, 3]),
    "a spec with a __class__ field": lambda d, c: d["spec"].update(__class__="os.system"),
    "sizes of 2**70": lambda d, c: d["samples"].update(size=[2**70] * 37),
    "checksums that are objects": lambda d, c: d["samples"].update(crc32=[{"__reduce__": "os.system"}] * 37),
    "labels nested": lambda d, c: d["samples"].update(label=[[0]] * 37),
    "labels of NaN": lambda d, c: d["samples"].update(label=[float("nan")] * 37),
    "a layout path outside": lambda d, c: d["layouts"]["hdf5"].update(path=str(c)),
    "a layout path with ..": lambda d, c: d["layouts"]["lmdb"].update(path="../../etc"),
    "layouts that are a list": lambda d, c: d.update(layouts=[["files", "/"]]),
    "a header size that is text": lambda d, c: d["codec"].update(header_bytes="x"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_manifest_fails_cleanly(sandbox, capsys, name):
    box, root, out, canary = sandbox
    data = json.loads((root / MANIFEST).read_text())
    HOSTILE[name](data, canary)
    (root / MANIFEST).write_text(json.dumps(data))
    before = snapshot(box, skip=out)
    said = everything_reads(root, out, capsys)
    assert not canary.exists()
    assert snapshot(box, skip=out) == before and list((box / "cwd").iterdir()) == []
    for layout in ("files", "hdf5", "lmdb"):
        assert f"{root}/manifest.json" in said[layout], said
    assert said["verify"].startswith(f"exit 3: python -m loaders: error: {root}/manifest.json"), said
    assert said["run"].startswith("exit 1: python -m bench: error: ") and not (out / "r.json").exists(), said


@pytest.mark.parametrize("content", ["deep nesting", "a pickle", "binary junk", "empty", "null", "a string", "1e999"])
def test_a_manifest_that_is_not_json_of_ours_fails_cleanly(sandbox, capsys, content):
    box, root, out, canary = sandbox
    (root / MANIFEST).write_bytes({
        "deep nesting": b"[" * 100_000 + b"]" * 100_000, "a pickle": pickle.dumps(Canary(canary)),
        "binary junk": b"\xff\xfe\x00junk", "empty": b"", "null": b"null", "a string": b'"a string"', "1e999": b"1e999",
    }[content])
    before = snapshot(box, skip=out)
    said = everything_reads(root, out, capsys)
    assert not canary.exists() and snapshot(box, skip=out) == before
    assert all("manifest.json" in said[layout] for layout in ("files", "hdf5", "lmdb")), said
    assert said["verify"].startswith("exit 3: python -m loaders: error: "), said


def test_hostile_hdf5_offsets_are_named_errors_without_huge_allocations(corpus, corpus_copy):
    """Offsets that point past the file, run backwards or span 2**62 bytes: each sample is a named
    error (never a 4 EiB buffer, a crash or bytes from elsewhere)."""
    from generator.errors import SampleError
    from loaders import open_corpus

    for kind in ("gray8", "deflate"):  # mapped contiguous payload; h5py chunked fallback
        root = corpus_copy(kind)
        with h5py.File(root / "corpus.h5", "r+") as f:
            offsets = f["offsets"][()]
            offsets[3], offsets[4], offsets[5] = 2**62, 10, 2**63 + 5
            f["offsets"][...] = offsets
        reader = open_corpus(root, "hdf5")
        for i in (2, 3, 4):
            with pytest.raises(SampleError) as e:
                reader.read(i)
            assert (e.value.layout, e.value.index) == ("hdf5", i) and "corpus.h5" in e.value.where
        assert bytes(reader.read(10)) == bytes(open_corpus(corpus(kind), "hdf5").read(10))  # the rest is sound
        reader.close()


def test_a_fifo_in_place_of_a_sample_does_not_hang_the_reader(corpus_copy):
    """A named pipe where a sample file should be: opening it must not wait for a writer."""
    from generator.errors import SampleError
    from loaders import open_corpus

    root = corpus_copy("gray8")
    reader = open_corpus(root, "files")
    path = reader.path(4)
    os.remove(path)
    os.mkfifo(path)
    for read in (lambda: reader.read(4), lambda: reader.read_batch([3, 4])):
        with pytest.raises(SampleError, match="truncated: 0 bytes|unreadable: Illegal seek") as e:
            read()  # (read() reads a pipe as empty; the batch path's pread cannot seek it)
        assert e.value.index == 4
    os.remove(path)
    os.mkfifo(root / "corpus.h5.fifo")
    (root / "corpus.h5").unlink()
    (root / "corpus.h5.fifo").rename(root / "corpus.h5")
    with pytest.raises(CorpusError, match="not a regular file or directory"):
        open_corpus(root, "hdf5")


def test_the_generator_never_writes_through_a_planted_symlink(tmp_path, capsys):
    """A .lock or a layout path in --out that is a symlink (say, to a file of the user's) would have
    the generator truncate or fill whatever it points at: refused, one line, the target untouched."""
    from generator.__main__ import main

    precious = tmp_path / "precious.txt"
    precious.write_text("do not truncate me\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    args = ["--shape", "4x4x1", "--count", "6", "--quiet", "--workers", "1"]
    for name, target in ((".lock", precious), ("files", elsewhere), ("corpus.h5", precious), ("lmdb.partial", elsewhere)):
        out = tmp_path / f"out-{name.strip('.')}"
        out.mkdir()
        (out / name).symlink_to(target)
        code = run_main("python -m generator", main, [*args, "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and len(err.splitlines()) == 1 and f"{out / name}" in err and "symbolic link" in err, err
    out = tmp_path / "out-class-dir"  # a class directory planted in a resumable tree
    assert run_main("python -m generator", main, [*args, "--out", str(out), "--layouts", "hdf5"]) == 0
    (out / "files").mkdir()
    for label in range(10):  # every class directory the samples could go to
        (out / "files" / str(label)).symlink_to(elsewhere)
    assert run_main("python -m generator", main, [*args, "--out", str(out), "--layouts", "files"]) == 1
    assert "writing the files layout" in capsys.readouterr().err
    assert precious.read_text() == "do not truncate me\n" and list(elsewhere.iterdir()) == []
