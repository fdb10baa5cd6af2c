"""Golden corpora: a few-KB corpus per layout committed under tests/golden/<layout>/ (written by
tests/golden/make.py). Today's readers must read each bit-exact, and today's writers must write
the same layout again: a change to a layout's bytes is a deliberate format version bump
(regenerate the golden corpus and say so), never an accident."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conformance import reference
from helpers import load_script

from generator.layouts import get_layout, layout_ids
from generator.manifest import read_manifest
from loaders import open_corpus
from loaders.verify import verify

GOLDEN = Path(__file__).parent / "golden"
make = load_script(GOLDEN / "make.py")

REGENERATE = "python tests/golden/make.py {layout}"


@pytest.fixture(params=layout_ids())
def layout(request):
    why = get_layout(request.param).missing()
    if why:
        pytest.skip(why)
    if not (GOLDEN / request.param).is_dir():
        pytest.fail(f"the {request.param} layout has no golden corpus: write one with "
                    f"{REGENERATE.format(layout=request.param)} and commit it")
    return request.param


def test_the_golden_spec_is_the_one_committed(layout):
    assert read_manifest(GOLDEN / layout).spec == make.SPEC


def test_todays_reader_reads_the_golden_corpus_bit_exact(layout, tmp_path):
    root = tmp_path / layout
    shutil.copytree(GOLDEN / layout, root)  # read-only use, but never touch the committed copy
    pixels, labels, payloads = reference(root)
    r = open_corpus(root, layout, verify=True)
    n = len(r)
    assert [bytes(p) for p in r.read_many(range(n))] == [bytes(p) for p in payloads]
    images, nbytes = r.read_batch(range(n))
    assert np.array_equal(images, np.stack(pixels)) and nbytes == sum(map(len, payloads))
    assert np.array_equal(r.labels(range(n)), labels) and np.array_equal(r.stored_labels(), labels)
    r.close()
    assert verify(root, progress=False)[1] == []


def test_todays_writer_writes_the_golden_corpus_again(layout, tmp_path):
    made = make.write(layout, tmp_path)
    writer = get_layout(layout).writer_class()
    got, want = writer.snapshot(made), writer.snapshot(GOLDEN / layout)
    changed = sorted(k for k in got.keys() | want.keys() if got.get(k) != want.get(k))
    assert not changed, (f"the {layout} writer no longer writes the committed golden corpus ({', '.join(changed[:5])} "
                         f"differ): if the change is deliberate, bump the layout's format version, regenerate with "
                         f"{REGENERATE.format(layout=layout)} and say so in the commit")
