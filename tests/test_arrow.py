"""The arrow layout: the conformance suite, pyarrow reading our file on its own, and damage to the
file's own structure (truncation, hostile offsets, another schema or spec)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="the arrow layout needs pyarrow (pip install -e '.[arrow]')")

from conformance import ReaderSuite, WriterSuite, reference  # noqa: E402
from records_helpers import pwrite

from generator.errors import CorpusError, SampleError  # noqa: E402
from generator.layouts.arrow import SPEC_KEY, batch_rows  # noqa: E402
from generator.manifest import read_manifest  # noqa: E402
from generator.pool import codec_for  # noqa: E402
from loaders import open_corpus  # noqa: E402

NAME = "corpus.arrow"


def read_table(path, mapped: bool = False):
    """(schema, table) of corpus.arrow: over a memory map (valid while the file is unchanged), or
    read into memory (for rewriting the file)."""
    with (pa.memory_map(str(path), "r") if mapped else pa.OSFile(str(path), "rb")) as source:
        f = pa.ipc.open_file(source)
        batches = [f.get_batch(b) for b in range(f.num_record_batches)]
        return f.schema, pa.Table.from_batches(batches, schema=f.schema).combine_chunks()


def rewrite(root, edit):
    """Rewrite corpus.arrow with `edit(payloads list) -> payloads list` applied (None: a null)."""
    path = root / NAME
    schema, table = read_table(path)
    payloads = edit(table.column("payload").to_pylist())
    arrays = [pa.array(payloads, schema.field(0).type), table.column("label").combine_chunks()]
    out = pa.Table.from_arrays(arrays, schema=schema.with_metadata(schema.metadata))
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, out.schema) as w:
        w.write_table(out)


def payload_at(path, index: int) -> tuple[int, int]:
    """(file offset of sample `index`'s payload, where its offsets entry lies) computed on our own."""
    with pa.memory_map(str(path), "r") as mm:
        base = mm.read_buffer(1).address
        f = pa.ipc.open_file(mm)
        row = 0
        for b in range(f.num_record_batches):
            col = f.get_batch(b).column(0)
            if index < row + len(col):
                _, offs, data = col.buffers()
                r = index - row
                start = int(np.frombuffer(offs, "<i8")[r])
                return data.address - base + start, offs.address - base + 8 * r
            row += len(col)
    raise IndexError(index)


class TestArrow(ReaderSuite):
    layout = "arrow"

    def make_missing(self, root, index):
        rewrite(root, lambda p: p[:index] + [None] + p[index + 1:])

    def make_truncated(self, root, index):
        rewrite(root, lambda p: p[:index] + [p[index][:-10]] + p[index + 1:])

    def overwrite(self, root, index, offset, data):
        pwrite(root / NAME, payload_at(root / NAME, index)[0] + offset, data)


class TestArrowWriter(WriterSuite):
    layout = "arrow"



@pytest.mark.parametrize("kind", ["gray8", "deflate", "raw16", "big"])
def test_pyarrow_reads_our_file_on_its_own(corpus, kind):
    """pyarrow.ipc over pyarrow.memory_map gives our payloads and labels, and the spec in the schema."""
    root = corpus(kind)
    _, labels, payloads = reference(root)
    schema, table = read_table(root / NAME, mapped=True)
    assert table.column("payload").to_pylist() == payloads
    assert table.column("label").to_pylist() == labels.tolist()
    assert json.loads(schema.metadata[SPEC_KEY]) == read_manifest(root).spec.to_dict()
    assert str(schema.field("payload").type) == "large_binary" and str(schema.field("label").type) == "uint16"


def test_record_batches_have_the_documented_size(corpus):
    root = corpus("big")  # 72 KB payloads: one 64 MiB batch for 6 samples; and the rule itself
    spec = read_manifest(root).spec
    with pa.memory_map(str(root / NAME), "r") as mm:
        f = pa.ipc.open_file(mm)
        assert [f.get_batch(b).num_rows for b in range(f.num_record_batches)] == [6]
    assert batch_rows(spec, codec_for(spec)) == 6
    mnist = spec.__class__(height=28, width=28, channels=1, dtype="uint8", count=60_000)
    assert batch_rows(mnist, codec_for(mnist)) == 60_000  # 58.6 MB: one batch
    four_k = spec.__class__(height=2540, width=4520, channels=4, dtype="uint8", count=8)
    assert batch_rows(four_k, codec_for(four_k)) == 1  # 46 MB: one per batch


def test_reads_through_the_map_without_pyarrow_per_sample(corpus, monkeypatch):
    """After opening, no pyarrow call serves a read: the samples come out of the mapped view."""
    root = corpus("rgb8")
    _, _, payloads = reference(root)
    r = open_corpus(root, "arrow")
    r.read(0)
    monkeypatch.setattr(pa.ipc, "open_file", None)
    monkeypatch.setattr(pa, "memory_map", None)
    assert [bytes(p) for p in r.read_many(range(37))] == payloads
    assert r.reads_through_map and r._view is not None


def test_truncated_file_is_named(corpus_copy):
    root = corpus_copy("gray8")
    os.truncate(root / NAME, os.path.getsize(root / NAME) // 2)
    with pytest.raises(SampleError) as e:
        open_corpus(root, "arrow").read_batch([5])
    assert e.value.index == 5 and NAME in e.value.where and "cannot open the Arrow file" in e.value.problem


def test_empty_and_deleted_files_are_named(corpus_copy):
    root = corpus_copy("gray8")
    os.truncate(root / NAME, 0)
    with pytest.raises(SampleError, match="empty"):
        open_corpus(root, "arrow").read(1)
    os.remove(root / NAME)
    with pytest.raises(SampleError, match="missing") as e:
        open_corpus(root, "arrow").read(7)
    assert e.value.index == 7


@pytest.mark.parametrize("value", [2**62, -5, 3])
def test_hostile_offsets_are_named_errors(corpus_copy, value):
    """An offsets entry past the data, negative, or going backwards: the sample's named error, no
    huge allocation, no page touched outside the file."""
    root = corpus_copy("gray8")
    _, at = payload_at(root / NAME, 9)
    pwrite(root / NAME, at + 8, int(value).to_bytes(8, "little", signed=True))  # the end of sample 9
    r = open_corpus(root, "arrow")
    with pytest.raises(SampleError) as e:
        r.read_batch([0, 9])
    assert e.value.index == 9 and "missing" in e.value.problem and NAME in str(e.value)
    with pytest.raises(SampleError) as e:
        r.read(10)  # its start is sample 9's end
    assert e.value.index == 10
    assert bytes(r.read(0)) == reference(root)[2][0]


def test_another_spec_or_schema_is_refused(corpus_copy):
    root = corpus_copy("gray8")
    schema, table = read_table(root / NAME)
    spec = json.loads(schema.metadata[SPEC_KEY])
    spec["seed"] += 1
    other = table.replace_schema_metadata({SPEC_KEY: json.dumps(spec).encode()})
    with pa.OSFile(str(root / NAME), "wb") as sink, pa.ipc.new_file(sink, other.schema) as w:
        w.write_table(other)
    with pytest.raises(CorpusError, match="another spec"):
        open_corpus(root, "arrow").read(0)
    renamed = table.rename_columns(["data", "label"])
    with pa.OSFile(str(root / NAME), "wb") as sink, pa.ipc.new_file(sink, renamed.schema) as w:
        w.write_table(renamed)
    with pytest.raises(CorpusError, match="not ours"):
        open_corpus(root, "arrow").read(0)


def test_pickle_in_the_spec_metadata_is_never_loaded(corpus_copy, tmp_path):
    import pickle

    canary = tmp_path / "canary"

    class Boom:
        def __reduce__(self):
            return (open, (str(canary), "w"))

    root = corpus_copy("gray8")
    _, table = read_table(root / NAME)
    planted = table.replace_schema_metadata({SPEC_KEY: pickle.dumps(Boom())})
    with pa.OSFile(str(root / NAME), "wb") as sink, pa.ipc.new_file(sink, planted.schema) as w:
        w.write_table(planted)
    with pytest.raises(CorpusError, match="unreadable spec"):
        open_corpus(root, "arrow").read(0)
    assert not canary.exists()


def test_stored_labels_and_too_many_rows(corpus_copy):
    root = corpus_copy("gray8")
    _, labels, _ = reference(root)
    assert np.array_equal(open_corpus(root, "arrow").stored_labels(), labels)
    _, table = read_table(root / NAME)
    doubled = pa.concat_tables([table, table])
    with pa.OSFile(str(root / NAME), "wb") as sink, pa.ipc.new_file(sink, doubled.schema) as w:
        w.write_table(doubled)
    with pytest.raises(CorpusError, match="more than the 37 rows"):
        open_corpus(root, "arrow").read(0)


# -- the program's own pyarrow handles on the corpus's files (pyarrow keeps no per-file state) ---------


@pytest.mark.parametrize("mode", ["r", "r+"])
def test_reads_beside_the_programs_own_memory_map(corpus_copy, mode):
    """A program's own pa.memory_map (read-write too) and IPC reader of corpus.arrow, and its
    memory-mapped ParquetFile of corpus.parquet, change nothing the readers do."""
    pq = pytest.importorskip("pyarrow.parquet")
    root = corpus_copy("gray8")  # r+ maps the file writable: a private copy
    pixels, labels, payloads = reference(root)
    with pa.memory_map(str(root / NAME), mode) as mm:
        held = pa.ipc.open_file(mm).get_batch(0)
        theirs = pq.ParquetFile(str(root / "corpus.parquet"), memory_map=True)
        theirs.read_row_group(0)
        for layout in ("arrow", "parquet"):
            r = open_corpus(root, layout)
            images, _ = r.read_batch(list(range(len(r))))
            assert all(np.array_equal(images[i], pixels[i]) for i in range(len(r)))
            assert [bytes(p) for p in r.read_many([0, 36])] == [payloads[0], payloads[36]]
            assert r.stored_labels().tolist() == labels.tolist()
            r.close()
        assert held.column(1).to_pylist() == labels[:held.num_rows].tolist()
        theirs.close()
