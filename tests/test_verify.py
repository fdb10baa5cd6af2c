"""python -m loaders verify: all match -> 0; any mismatch -> 1 naming layout, index and path."""

from __future__ import annotations

import json
import subprocess
import sys

import test_files
import test_hdf5
import test_lmdb

from generator.layouts import layout_ids
from loaders.__main__ import main
from loaders.verify import verify


def test_a_sound_corpus_verifies(corpus, capsys):
    assert main(["verify", str(corpus("gray8")), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "MISMATCH" not in out
    for layout in layout_ids(available=True):
        assert f"{layout}: all 37 samples match" in out


def test_every_payload_kind_verifies(corpus):
    for kind in ("rgb16", "raw16", "deflate", "big"):
        names, found = verify(corpus(kind), progress=False)
        assert names == list(layout_ids(available=True)) and found == []


def test_damage_is_reported_by_layout_index_and_path(corpus_copy, capsys):
    root = corpus_copy("gray8")
    test_files.TestFiles().overwrite(root, 2, 300, b"\xff\x00")  # pixels changed: bytes, crc, pixels
    test_hdf5.TestHDF5().make_truncated(root, 9)
    test_lmdb.TestLMDB().make_missing(root, 30)
    assert main(["verify", str(root), "--quiet"]) == 1
    lines = capsys.readouterr().out.splitlines()
    mism = [line for line in lines if line.startswith("MISMATCH")]
    path2 = test_files.sample_path(root, 2)
    assert any(f"files sample 2 at {path2}:" in m and "payload differs" in m and "crc32" in m
               and "pixels differ" in m for m in mism)
    assert any("hdf5 sample 9 at " in m and "corpus.h5" in m and "truncated" in m for m in mism)
    assert any("lmdb sample 30 at " in m and "key 000000000000001e" in m and "missing" in m for m in mism)
    assert "files: 1 of 37 samples do not match" in lines and "lmdb: 1 of 37 samples do not match" in lines
    # --layouts narrows the check to the named layouts
    assert main(["verify", str(root), "--quiet", "--layouts", "lmdb"]) == 1
    assert not any("files sample" in line for line in capsys.readouterr().out.splitlines())


def test_a_wrong_label_is_a_mismatch(corpus_copy):
    root = corpus_copy("rgb8")
    with open(root / "manifest.json") as f:
        data = json.load(f)
    data["samples"]["label"][4] = (data["samples"]["label"][4] + 1) % 5
    with open(root / "manifest.json", "w") as f:
        json.dump(data, f)
    _, found = verify(root, ["hdf5"], progress=False)
    assert [(m.layout, m.index) for m in found] == [("manifest", 4)] and "label" in found[0].problem


def test_command_line_errors_are_one_line(corpus, tmp_path):
    """Exit 2: bad arguments; 3: the corpus as a whole cannot be checked (an empty directory, a
    foreign manifest); 1 is kept for mismatches (test_damage_is_reported_by_layout_index_and_path)."""
    def run(*args):
        return subprocess.run([sys.executable, "-m", "loaders", *args], capture_output=True, text=True)

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "manifest.json").write_text('{"format": "someone-elses", "version": 1}')
    (tmp_path / "empty").mkdir()
    for args, code, message in [
        (["verify"], 2, "required: DIR"),
        (["verify", str(corpus("gray8")), "--layouts", "nope"], 2, "unknown layout 'nope'"),
        (["verify", str(tmp_path / "empty")], 3, "manifest.json is missing"),
        (["verify", str(foreign)], 3, "is not a layoutbench corpus manifest"),
        (["frobnicate"], 2, "invalid choice"),
    ]:
        out = run(*args)
        assert out.returncode == code, out
        assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1
        assert "Traceback" not in out.stderr
