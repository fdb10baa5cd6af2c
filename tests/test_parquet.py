"""The parquet layout: the conformance suite, pyarrow.parquet reading our file on its own, row
groups of the documented size read once per batch, and damage to the file's own structure."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="the parquet layout needs pyarrow (pip install -e '.[arrow]')")
pq = pytest.importorskip("pyarrow.parquet", reason="the parquet layout needs pyarrow.parquet")

from conformance import ReaderSuite, WriterSuite, reference  # noqa: E402
from records_helpers import pwrite

from generator.errors import CorpusError, SampleError  # noqa: E402
from generator.layouts.arrow import SPEC_KEY  # noqa: E402
from generator.layouts.parquet import group_rows  # noqa: E402
from generator.manifest import read_manifest  # noqa: E402
from generator.pool import codec_for  # noqa: E402
from generator.spec import Spec  # noqa: E402
from loaders import open_corpus  # noqa: E402

NAME = "corpus.parquet"


def rewrite(root, edit=None, table=None, row_group_size=None):
    """Rewrite corpus.parquet as the generator writes it, with `edit(payloads) -> payloads` applied
    (None: a null), or as `table`."""
    path = root / NAME
    f = pq.ParquetFile(str(path))
    rows = row_group_size or f.metadata.row_group(0).num_rows
    if table is None:
        table = f.read()
        payloads = edit(table.column("payload").to_pylist())
        schema = table.schema.set(0, table.schema.field(0).with_nullable(True))
        table = pa.Table.from_arrays([pa.array(payloads, schema.field(0).type), table.column("label")], schema=schema)
    f.close()
    pq.write_table(table, str(path), row_group_size=rows, compression="none", use_dictionary=False,
                   write_statistics=False)


def payload_at(root, index: int) -> int:
    """File offset of sample `index`'s payload: PLAIN, uncompressed pages store it as it is."""
    data = (root / NAME).read_bytes()
    want = reference(root)[2][index]
    at = data.find(want)
    assert at >= 0 and data.find(want, at + 1) < 0
    return at


class TestParquet(ReaderSuite):
    layout = "parquet"

    def make_missing(self, root, index):
        rewrite(root, lambda p: p[:index] + [None] + p[index + 1:])

    def make_truncated(self, root, index):
        rewrite(root, lambda p: p[:index] + [p[index][:-10]] + p[index + 1:])

    def overwrite(self, root, index, offset, data):
        pwrite(root / NAME, payload_at(root, index) + offset, data)


class TestParquetWriter(WriterSuite):
    layout = "parquet"



@pytest.mark.parametrize("kind", ["gray8", "deflate", "raw16", "big"])
def test_pyarrow_parquet_reads_our_file_on_its_own(corpus, kind):
    root = corpus(kind)
    _, labels, payloads = reference(root)
    table = pq.read_table(root / NAME)
    assert table.column("payload").to_pylist() == payloads
    assert table.column("label").to_pylist() == labels.tolist()
    assert json.loads(table.schema.metadata[SPEC_KEY]) == read_manifest(root).spec.to_dict()
    meta = pq.ParquetFile(root / NAME).metadata
    chunk = meta.row_group(0).column(0)
    assert chunk.compression == "UNCOMPRESSED" and not chunk.is_stats_set


def test_row_groups_have_the_documented_size(corpus):
    spec = read_manifest(corpus("big")).spec  # 72 KB payloads: 115 per 8 MiB, so 6 in one group
    meta = pq.ParquetFile(corpus("big") / NAME).metadata
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [6]
    rows = {name: group_rows(s, codec_for(s)) for name, s in {
        "mnist": Spec(height=28, width=28, channels=1, dtype="uint8", count=60_000),
        "imagenet": Spec(height=224, width=224, channels=3, dtype="uint8", count=2000),
        "4k": Spec(height=2540, width=4520, channels=4, dtype="uint8", count=8),
        "big": spec}.items()}
    assert rows == {"mnist": 1024, "imagenet": 55, "4k": 1, "big": 6}


def test_a_batch_reads_each_row_group_it_needs_once(corpus_copy, monkeypatch):
    root = corpus_copy("gray8")
    rewrite(root, lambda p: p, row_group_size=5)  # 8 groups of 5 (the last: 2)
    _, _, payloads = reference(root)
    r = open_corpus(root, "parquet")
    r.read(0)
    calls = []
    real = pq.ParquetFile.read_row_group

    def counted(self, g, *a, **kw):
        calls.append(g)
        return real(self, g, *a, **kw)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", counted)
    order = [36, 1, 12, 2, 35, 13, 0]
    assert [bytes(p) for p in r.read_many(order)] == [payloads[i] for i in order]
    assert calls == [2, 7]  # in group order, each once; group 0 was still kept from read(0)
    calls.clear()
    r.read_many([7, 8])  # group 1, then kept
    r.read_many([9, 5])
    assert calls == [1]


def test_truncated_file_is_named(corpus_copy):
    root = corpus_copy("gray8")
    os.truncate(root / NAME, os.path.getsize(root / NAME) // 2)
    with pytest.raises(SampleError) as e:
        open_corpus(root, "parquet").read_batch([5])
    assert e.value.index == 5 and NAME in e.value.where and "cannot open the Parquet file" in e.value.problem


def test_deleted_file_is_named(corpus_copy):
    root = corpus_copy("gray8")
    r = open_corpus(root, "parquet")
    os.remove(root / NAME)
    with pytest.raises(SampleError, match="missing") as e:
        r.read(7)
    assert e.value.index == 7


def test_a_scribbled_length_prefix_is_a_named_error_not_a_huge_allocation(corpus_copy):
    """PLAIN pages store each value as a 4-byte length then its bytes: a length of 2^31-1 in the
    file is pyarrow's error for that row group, or a size the manifest refuses; never a crash."""
    root = corpus_copy("gray8")
    at = payload_at(root, 3)
    pwrite(root / NAME, at - 4, (2**31 - 1).to_bytes(4, "little"))
    r = open_corpus(root, "parquet")
    with pytest.raises(SampleError) as e:
        r.read_many([3])
    assert e.value.index == 3 and NAME in str(e.value)


def test_hostile_row_counts_are_refused(corpus_copy):
    root = corpus_copy("gray8")
    table = pq.read_table(root / NAME)
    rewrite(root, table=pa.concat_tables([table, table]))  # 74 rows for a corpus of 37
    with pytest.raises(CorpusError, match="not this corpus"):
        open_corpus(root, "parquet").read(0)
    rewrite(root, table=table.slice(0, 30))  # fewer rows: the rest are missing samples
    r = open_corpus(root, "parquet")
    assert bytes(r.read(29)) == reference(root)[2][29]
    with pytest.raises(SampleError, match="missing") as e:
        r.read_batch([0, 33])
    assert e.value.index == 33


def test_another_spec_or_schema_is_refused(corpus_copy):
    root = corpus_copy("gray8")
    table = pq.read_table(root / NAME)
    spec = json.loads(table.schema.metadata[SPEC_KEY])
    spec["seed"] += 1
    rewrite(root, table=table.replace_schema_metadata({SPEC_KEY: json.dumps(spec).encode()}))
    with pytest.raises(CorpusError, match="another spec"):
        open_corpus(root, "parquet").read(0)
    rewrite(root, table=table.rename_columns(["data", "label"]))
    with pytest.raises(CorpusError, match="not ours"):
        open_corpus(root, "parquet").read(0)


def test_stored_labels(corpus):
    root = corpus("rgb8")
    assert np.array_equal(open_corpus(root, "parquet").stored_labels(), reference(root)[1])


def test_extents_are_the_row_groups_payload_column_chunk(corpus_copy):
    """Each sample's extent is its row group's payload column chunk as the footer places it: the
    rows of one group share it, groups' chunks are disjoint, and a chunk holds its rows' payloads."""
    root = corpus_copy("gray8")
    rewrite(root, edit=lambda p: p, row_group_size=10)  # 37 rows: groups of 10, 10, 10, 7
    _, _, payloads = reference(root)
    r = open_corpus(root, "parquet")
    got = [rs[0] for rs in r.extents(list(range(37)))]
    meta = pq.ParquetFile(str(root / NAME)).metadata
    chunks = [(meta.row_group(g).column(0).data_page_offset, meta.row_group(g).column(0).total_compressed_size)
              for g in range(meta.num_row_groups)]
    assert meta.num_row_groups == 4 and [(o, n) for _, o, n in got] == [chunks[i // 10] for i in range(37)]
    assert all(a + n <= b for (a, n), (b, _) in zip(chunks, chunks[1:]))
    data = (root / NAME).read_bytes()
    for i, (_, off, n) in enumerate(got):
        assert payloads[i] in data[off:off + n]
    assert r.extents_cover == "chunk"
