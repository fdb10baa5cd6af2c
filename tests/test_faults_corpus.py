"""Damaged, edited, read-only and escaping corpora (issue 5): every fault is one clear error naming
the file, layout and sample (or a mismatch line from verify), never a crash, a traceback or data
served from the wrong place.

The reader API's damage cases (missing, truncated, bit-flipped, bad header; every read path,
worker processes) are in tests/conformance.py and test_{files,hdf5,lmdb,verify}.py; this module
adds what the command lines do with them, the faults those do not cover (a truncated or scribbled
LMDB data.mdb, damaged HDF5 metadata, hand-edited manifests), read-only corpora and symlinks.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import h5py
import numpy as np
import pytest
import test_files
import test_hdf5
import test_lmdb
from conformance import reference

from generator.errors import CorpusError, SampleError
from generator.manifest import MANIFEST
from loaders import open_corpus
from loaders.__main__ import main as loaders_main
from loaders.pipeline import Loader
from loaders.verify import verify

from generator.layouts import get_layout, layout_ids

LAYOUTS = layout_ids(available=True)  # registered and installed: what the generator writes by default
# the layouts that keep their own copy of the spec, and so refuse a manifest whose spec was edited
STORES_SPEC = tuple(n for n in LAYOUTS if get_layout(n).reader_class().stores_spec)
# the record layouts keep each sample's label in its record, and list their samples in shard indexes
RECORDS = tuple(n for n in ("tar", "tfrecord") if n in LAYOUTS)
LABELLED = tuple(n for n in ("tar", "tfrecord", "litdata") if n in LAYOUTS)  # each sample stored with its label
Result = namedtuple("Result", "code out err")


def run_cli(main, prog, argv, capsys) -> Result:
    """A command's main as its console entry runs it (generator.cli.run_main), in this process."""
    from generator.cli import run_main

    try:
        code = run_main(prog, main, [str(a) for a in argv])
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    return Result(code, out, err)


def loaders_verify(root, capsys, *extra) -> Result:
    return run_cli(loaders_main, "python -m loaders", ["verify", root, "--quiet", *extra], capsys)


def bench_run(corpus, output, capsys, *extra) -> Result:
    from bench.__main__ import main

    return run_cli(main, "python -m bench", ["run", "--corpus", corpus, "--output", output, "--cache", "warm",
                                             "--epochs", "1", "--batch-size", "8", "--no-sample-latency",
                                             "--quiet", *extra], capsys)


def one_line(r: Result, prog: str, *fragments: str, code: int = 1) -> str:
    assert r.code == code, r
    lines = r.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: ") and "Traceback" not in r.err, r.err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def mismatch_lines(r: Result) -> list[str]:
    assert r.code == 1 and "Traceback" not in r.err, r
    return [line for line in r.out.splitlines() if line.startswith("MISMATCH ")]


# --- damaged samples: what verify and bench run say ---------------------------------------------------

DAMAGE = {  # name -> (layout, index, how, what verify and bench run must say)
    "files truncated": ("files", 5, lambda root: test_files.TestFiles().make_truncated(root, 5), "truncated"),
    "files deleted": ("files", 5, lambda root: test_files.TestFiles().make_missing(root, 5), "missing"),
    "files header scribbled": ("files", 5, lambda root: test_files.TestFiles().overwrite(root, 5, 0, b"JUNK"),
                               "undecodable"),
    "hdf5 header scribbled": ("hdf5", 5, lambda root: test_hdf5.TestHDF5().overwrite(root, 5, 0, b"JUNK"),
                              "undecodable"),
    "lmdb value truncated": ("lmdb", 5, lambda root: test_lmdb.TestLMDB().make_truncated(root, 5), "truncated"),
    "lmdb key deleted": ("lmdb", 5, lambda root: test_lmdb.TestLMDB().make_missing(root, 5), "missing"),
}


@pytest.mark.parametrize("name", DAMAGE)
def test_a_damaged_sample_is_named_by_verify_and_stops_bench_run(corpus_copy, tmp_path, capsys, name):
    layout, index, damage, problem = DAMAGE[name]
    root = corpus_copy("gray8")
    where = open_corpus(root, layout).where(index)
    damage(root)
    lines = mismatch_lines(loaders_verify(root, capsys))
    assert any(line.startswith(f"MISMATCH {layout} sample {index} at {where}:") and problem in line
               for line in lines), lines
    assert all(f" sample {index} " in line for line in lines if f"MISMATCH {layout} " in line)  # only that one
    r = bench_run(root, tmp_path / "r.json", capsys, "--layouts", layout)
    one_line(r, "python -m bench", f"{layout} sample {index} at {where}: {problem}", "python -m loaders verify")
    assert not (tmp_path / "r.json").exists()  # no results from an epoch that skipped a sample


def test_a_bit_flip_is_caught_by_verify_and_checked_readers(corpus_copy, capsys):
    """A flipped pixel bit leaves sizes and headers intact: verify and readers opened with
    verify=True (crc32) catch it in every layout; the plain read path does not look (its cost is one
    size check per sample), which the README says."""
    root = corpus_copy("gray8")
    _, _, payloads = reference(root)
    for layout, damage in (("files", test_files.TestFiles()), ("hdf5", test_hdf5.TestHDF5()),
                           ("lmdb", test_lmdb.TestLMDB())):
        damage.overwrite(root, 7, 500, bytes([payloads[7][500] ^ 0x04]))
        with pytest.raises(SampleError, match="corrupt: crc32") as e:
            open_corpus(root, layout, verify=True).read_batch(range(37))
        assert (e.value.layout, e.value.index) == (layout, 7)
    lines = mismatch_lines(loaders_verify(root, capsys))
    assert sorted(line.split(" at ")[0] for line in lines) == [
        "MISMATCH files sample 7", "MISMATCH hdf5 sample 7", "MISMATCH lmdb sample 7"]
    assert all("payload differs from the reference from byte 500" in line for line in lines)


def test_a_truncated_hdf5_file_is_one_line_everywhere(corpus_copy, tmp_path, capsys):
    root = corpus_copy("gray8")
    path = root / "corpus.h5"
    os.truncate(path, path.stat().st_size - 4096)
    lines = mismatch_lines(loaders_verify(root, capsys, "--layouts", "hdf5"))
    assert lines and all(line.startswith("MISMATCH hdf5 ") and str(path) in line for line in lines)
    one_line(bench_run(root, tmp_path / "r.json", capsys, "--layouts", "hdf5"), "python -m bench", str(path))


def test_damaged_hdf5_metadata_is_a_named_error_not_a_library_traceback(corpus_copy, capsys):
    """Junk over the HDF5 metadata between the superblock and the payload: h5py raises RuntimeError,
    KeyError or OSError depending on what it meets; each is the layout's named error."""
    root = corpus_copy("gray8")
    with h5py.File(root / "corpus.h5", "r") as f:
        start = f["payload"].id.get_offset()
    with open(root / "corpus.h5", "r+b") as f:
        f.seek(64)
        f.write(random.Random(5).randbytes(start - 64))
    with pytest.raises(SampleError) as e:
        open_corpus(root, "hdf5").read(3)
    assert e.value.layout == "hdf5" and "corpus.h5" in e.value.where
    r = loaders_verify(root, capsys)
    assert r.code == 1 and "Traceback" not in r.err and any("MISMATCH hdf5 " in line for line in r.out.splitlines())
    assert "files: all 37 samples match" in r.out and "lmdb: all 37 samples match" in r.out  # the others still checked


def verify_in_a_process(root) -> subprocess.CompletedProcess:
    """`python -m loaders verify` in its own process: a crash (SIGBUS, SIGSEGV) shows as a negative
    exit code instead of taking the test run down."""
    return subprocess.run([sys.executable, "-m", "loaders", "verify", str(root), "--quiet"], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("cut", ["half", "one page", "to the meta pages"])
def test_a_truncated_lmdb_data_file_is_an_error_not_sigbus(corpus_copy, cut):
    """LMDB reads through a memory map: a page past the end of a truncated data.mdb used to kill the
    reader with SIGBUS (exit -7, no message). Now: the environment is refused, naming data.mdb."""
    root = corpus_copy("gray8")
    data = root / "lmdb" / "data.mdb"
    size = data.stat().st_size
    os.truncate(data, {"half": size // 2, "one page": size - 4096, "to the meta pages": 8192}[cut])
    p = verify_in_a_process(root)
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr
    assert f"MISMATCH lmdb sample 0 at {root / 'lmdb'} key 0000000000000000: cannot open the environment: " \
           f"data.mdb is truncated" in p.stdout
    assert "files: all 37 samples match" in p.stdout and "hdf5: all 37 samples match" in p.stdout
    with pytest.raises(SampleError, match="data.mdb is truncated"):
        open_corpus(root, "lmdb").read(0)


def test_scribbled_lmdb_pages_are_mismatches_not_a_crash(corpus_copy):
    """LMDB keeps no checksums: junk over its B-tree pages may read as errors, as missing keys or as
    wrong bytes; verify reports each as a mismatch, and never crashes."""
    root = corpus_copy("gray8")
    data = root / "lmdb" / "data.mdb"
    rng = random.Random(11)
    with open(data, "r+b") as f:
        for page in range(2, data.stat().st_size // 4096):  # every page but the two meta pages
            f.seek(page * 4096)
            f.write(rng.randbytes(4096))
    p = verify_in_a_process(root)
    assert p.returncode == 1 and "Traceback" not in p.stderr, (p.returncode, p.stderr)
    assert "MISMATCH lmdb " in p.stdout and "lmdb: " in p.stdout


# --- hand-edited manifests ----------------------------------------------------------------------------

def edit_manifest(root: Path, fn) -> None:
    data = json.loads((root / MANIFEST).read_text())
    fn(data)
    (root / MANIFEST).write_text(json.dumps(data))


def _samples(data, **lists):
    for key, change in lists.items():
        data["samples"][key] = change(data["samples"][key])


def _spec(data, **fields):
    data["spec"].update(fields)


# name -> (corpus kind, edit, what verify's one-line error or mismatch lines must hold,
#          readers that must refuse the corpus, at open or on reading it all)
EDITS = {
    "checksum changed": ("gray8", lambda d: d["samples"]["crc32"].__setitem__(3, d["samples"]["crc32"][3] ^ 1),
                         "MISMATCH manifest sample 3", LAYOUTS),  # readers opened with verify=True
    "size changed": ("gray8", lambda d: d["samples"]["size"].__setitem__(3, 977), "payload sizes other than", LAYOUTS),
    "size changed (variable sizes)": ("deflate", lambda d: d["samples"]["size"].__setitem__(3, d["samples"]["size"][3] - 1),
                                      "MISMATCH manifest sample 3", LAYOUTS),
    "label changed": ("gray8", lambda d: d["samples"]["label"].__setitem__(3, (d["samples"]["label"][3] + 1) % 5),
                      "MISMATCH manifest sample 3", ("files", *LABELLED)),
    "count lowered": ("gray8", lambda d: (_spec(d, count=36), _samples(d, crc32=lambda v: v[:-1], size=lambda v: v[:-1],
                                                                       label=lambda v: v[:-1])),
                      "not a sample of this corpus (the manifest lists 36 samples)", (*STORES_SPEC, *RECORDS)),
    "count raised": ("gray8", lambda d: (_spec(d, count=38), _samples(d, crc32=lambda v: v + [0], size=lambda v: v + [976],
                                                                      label=lambda v: v + [0])),
                     "MISMATCH manifest sample 37", LAYOUTS),
    "seed changed": ("gray8", lambda d: _spec(d, seed=8), "MISMATCH manifest sample 0", STORES_SPEC),
    "shape changed": ("gray8", lambda d: _spec(d, height=27), "payload sizes other than", LAYOUTS),
    "shape and sizes changed": ("gray8", lambda d: (_spec(d, height=27), _samples(d, size=lambda v: [s - 28 for s in v])),
                                "MISMATCH manifest sample 0", LAYOUTS),
    "dtype changed": ("gray8", lambda d: _spec(d, dtype="uint16"), "payload sizes other than", LAYOUTS),
    "classes below a label": ("gray8", lambda d: _spec(d, num_classes=2), "not an integer in [0, 1]", LAYOUTS),
    "a label out of range": ("gray8", lambda d: d["samples"]["label"].__setitem__(3, 70000), "not an integer in", LAYOUTS),
    "a size that is text": ("gray8", lambda d: d["samples"]["size"].__setitem__(3, "976"), "not an integer in", LAYOUTS),
    "a layout's path changed": ("gray8", lambda d: d["layouts"]["hdf5"].update(path="lmdb"),
                                "where the generator writes 'corpus.h5'", LAYOUTS),
    "a layout dropped": ("gray8", lambda d: d["layouts"].pop("lmdb"), "", ("lmdb",)),
    "another version": ("gray8", lambda d: d.update(version=99), "manifest version 99", LAYOUTS),
    "not a manifest": ("gray8", lambda d: d.update(format="something-else"), "is not a layoutbench corpus manifest",
                       LAYOUTS),
}


@pytest.mark.parametrize("name", EDITS)
def test_a_hand_edited_manifest_is_caught(corpus_copy, capsys, name):
    """verify catches every edit (one line, or mismatch lines naming the sample), exit 1; the readers
    refuse every edit they can see (sizes always), and never serve another spec's data as this one."""
    kind, edit, says, refused = EDITS[name]
    root = corpus_copy(kind)
    edit_manifest(root, edit)
    r = loaders_verify(root, capsys)
    if name == "a layout dropped":  # nothing wrong with what is listed: verify checks what is complete
        assert r.code == 0 and "lmdb" not in r.out
    elif r.err:  # the manifest itself refused: the corpus cannot be checked (exit 3, not 1)
        one_line(r, "python -m loaders", says, code=3)
    else:
        assert any(says in line for line in mismatch_lines(r)), r.out
    for layout in LAYOUTS:
        try:
            reader = open_corpus(root, layout, verify=True)
            reader.read_batch(range(len(reader)))
            reader.read_many(range(len(reader)))
        except (CorpusError, SampleError) as exc:
            assert layout in refused, (layout, exc)
            assert "\n" not in str(exc) and ("regenerate" in str(exc) or "generate it" in str(exc)), exc
        else:
            assert layout not in refused, layout


def test_a_missing_manifest_is_refused_everywhere(corpus_copy, tmp_path, capsys):
    root = corpus_copy("gray8")
    (root / MANIFEST).unlink()
    for layout in LAYOUTS:
        with pytest.raises(CorpusError, match="manifest.json is missing: the corpus is incomplete"):
            open_corpus(root, layout)
    one_line(loaders_verify(root, capsys), "python -m loaders", "manifest.json is missing", "rerun the generator",
             code=3)
    one_line(bench_run(root, tmp_path / "r.json", capsys), "python -m bench", "manifest.json is missing")


# --- a read-only corpus ----------------------------------------------------------------------------

def snapshot(root: Path) -> dict:
    """Every path under root with its type, size, mtime and inode: what any write would change."""
    out = {}
    for p in [root, *root.rglob("*")]:
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino)
    return out


@pytest.fixture
def read_only(corpus_copy, tmp_path):
    """(copy of the gray8 corpus, its read-only view): chmod -R a-w, and as root (who ignores
    permission bits, so only a read-only mount proves nothing writes) a read-only bind mount too."""
    root = corpus_copy("gray8")
    subprocess.run(["chmod", "-R", "a-w", str(root)], check=True)
    view = root
    try:
        if os.geteuid() == 0:
            view = tmp_path / "ro"
            view.mkdir()
            if subprocess.run(["mount", "--bind", str(root), str(view)], capture_output=True).returncode != 0:
                pytest.skip("bind mounts are not permitted here")
            if subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], capture_output=True).returncode != 0:
                pytest.skip("read-only remounts are not permitted here")
            with pytest.raises(OSError):
                (view / "probe").write_text("x")  # really read-only, even for root
        yield root, view
    finally:
        if view != root:
            subprocess.run(["umount", "-l", str(view)], check=False)
        subprocess.run(["chmod", "-R", "u+w", str(root)], check=True)


def test_a_read_only_corpus_is_read_verified_and_benchmarked(read_only, tmp_path, capsys):
    """Readers in threads and forked workers, `python -m loaders verify` and `python -m bench run`
    (cold by fadvise, and warm) all work on a read-only corpus and change nothing in it; results go
    elsewhere, and an --output inside it is refused."""
    root, view = read_only
    before = snapshot(root)
    pixels, labels, _ = reference(view)
    for layout in LAYOUTS:
        with Loader(open_corpus(view, layout, verify=True), batch_size=8, workers=2, worker_kind="fork") as loader:
            for batch in loader.epoch(0):
                assert np.array_equal(batch.images, np.stack([pixels[i] for i in batch.indices]))
                assert np.array_equal(batch.labels, labels[batch.indices])
    r = loaders_verify(view, capsys)
    assert r.code == 0 and all(f"{layout}: all 37 samples match" in r.out for layout in LAYOUTS), r
    out = tmp_path / "results" / "r.json"
    r = bench_run(view, out, capsys, "--cache", "cold,warm", "--evict", "fadvise", "--no-naive")
    assert r.code == 0, r
    assert {run["layout"] for run in json.loads(out.read_text())["runs"]} == set(LAYOUTS)
    one_line(bench_run(view, view / "r.json", capsys), "python -m bench", "is inside the corpus directory", code=2)
    from generator.__main__ import main as generator_main

    r = run_cli(generator_main, "python -m generator", ["--shape", "28x28x1", "--count", 37, "--seed", 7, "--classes",
                                                        5, "--out", view, "--quiet"], capsys)
    one_line(r, "python -m generator", "is not writable", code=2)  # the generator cannot take its lock there
    assert snapshot(root) == before


# --- paths that lead outside the corpus -----------------------------------------------------------------

def _outside_copy(root: Path, rel: str) -> Path:
    """Move `rel` out of the corpus (an identical copy, which would pass every size and crc32
    check) and leave a symlink to it in its place."""
    outside = root.parent / f"outside-{rel.replace('/', '-')}"
    shutil.move(root / rel, outside)
    (root / rel).symlink_to(outside)
    return outside


# name -> (what is made a symlink to an identical copy outside, the layout, what the error says)
ESCAPES = {
    "the files directory": (lambda r: "files", "files", "outside the corpus directory"),
    "a class directory": (lambda r: f"files/{open_corpus(r, 'files').label(3)}", "files", "a symbolic link, refused"),
    "one sample file": (lambda r: os.path.relpath(open_corpus(r, "files").path(3), r), "files",
                        "a symbolic link, refused"),
    "corpus.h5": (lambda r: "corpus.h5", "hdf5", "outside the corpus directory"),
    "the lmdb directory": (lambda r: "lmdb", "lmdb", "outside the corpus directory"),
    "lmdb/data.mdb": (lambda r: "lmdb/data.mdb", "lmdb", "outside the corpus directory"),
}


@pytest.mark.parametrize("name", ESCAPES)
def test_a_symlink_out_of_the_corpus_is_refused(corpus_copy, capsys, name):
    """The data outside is byte-identical to the corpus's own, so every size and checksum would
    pass: only the refusal to follow the link keeps a reader inside the corpus root."""
    what, layout, says = ESCAPES[name]
    root = corpus_copy("gray8")
    _outside_copy(root, what(root))
    with pytest.raises((CorpusError, SampleError), match=says) as e:
        reader = open_corpus(root, layout)
        reader.read_batch(range(37))
    assert "\n" not in str(e.value)
    r = loaders_verify(root, capsys)
    if r.err:
        one_line(r, "python -m loaders", says)
    else:
        assert any(says in line for line in mismatch_lines(r)), r.out


def test_a_symlinked_corpus_root_is_fine(corpus, tmp_path):
    """The root is the user's to place (data/ on another disk): only paths inside it are confined."""
    link = tmp_path / "data-link"
    link.symlink_to(corpus("gray8"))
    assert verify(link, progress=False)[1] == []


def test_an_hdf5_dataset_stored_outside_the_file_is_refused(corpus_copy, capsys):
    """HDF5 can keep a dataset's bytes in another file (external storage) or another file's dataset
    (external links, virtual datasets); h5py follows them to any path. Refused, naming the dataset."""
    root = corpus_copy("gray8")
    with h5py.File(root / "corpus.h5", "r+") as f:
        payload = f["payload"][()]
        outside = root.parent / "payload.bin"
        payload.tofile(outside)  # the very bytes: size and crc checks would pass
        del f["payload"]
        f.create_dataset("payload", shape=payload.shape, dtype=np.uint8, external=[(str(outside), 0, payload.size)])
    with pytest.raises(CorpusError, match=r"corpus.h5:/payload is not a plain dataset stored in the file"):
        open_corpus(root, "hdf5").read(0)
    with h5py.File(root / "corpus.h5", "r+") as f:
        del f["payload"]
        with h5py.File(root.parent / "other.h5", "w") as g:
            g["payload"] = payload
        f["payload"] = h5py.ExternalLink(str(root.parent / "other.h5"), "payload")
    with pytest.raises(CorpusError, match="not a plain dataset"):
        open_corpus(root, "hdf5").read(0)
    r = loaders_verify(root, capsys, "--layouts", "hdf5")
    assert any("not a plain dataset" in line for line in mismatch_lines(r))


def test_manifest_paths_outside_the_root_are_refused(corpus_copy):
    """Absolute, '..', a NUL byte, the root itself, or another layout's place: refused before any read.
    (test_generator.py covers '../elsewhere.h5' and '/etc/passwd' for read_manifest.)"""
    root = corpus_copy("gray8")
    original = (root / MANIFEST).read_text()
    for path in ("/etc", "files/../../x", "../" + root.name + "/files", "fi\0les", ".", "", "corpus.h5"):
        (root / MANIFEST).write_text(original)
        edit_manifest(root, lambda d: d["layouts"]["files"].update(path=path))
        with pytest.raises(CorpusError, match="not inside the corpus directory|where the generator writes"):
            open_corpus(root, "files")
