"""The litdata layout: the conformance suites, LitData's own reader reading our chunks, how the
writer cuts them, and damage to the chunks' own structure (headers, offsets, index.json, spec.json).
Skipped in one line where litdata is missing (make install-litdata)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from generator import libraries

pytestmark = pytest.mark.skipif(libraries.problem("litdata") is not None,
                                reason=f"{libraries.problem('litdata')} (make install-litdata)")

from conformance import ReaderSuite, WriterSuite, reference  # noqa: E402
from records_helpers import pwrite  # noqa: E402

from generator.errors import CorpusError, SampleError  # noqa: E402
from generator.layouts.litdata import CHUNK_BYTES, chunk_name  # noqa: E402
from generator.manifest import read_manifest  # noqa: E402
from loaders import open_corpus  # noqa: E402

CHUNK = f"litdata/{chunk_name(0)}"


def items_of(path) -> tuple[np.ndarray, list[bytes]]:
    """(offsets, items) of a chunk file, parsed on our own from the format LitData documents."""
    raw = open(path, "rb").read()
    n = int(np.frombuffer(raw, "<u4", 1)[0])
    offsets = np.frombuffer(raw, "<u4", n + 1, 4).astype(np.int64)
    return offsets, [raw[a:b] for a, b in zip(offsets[:-1], offsets[1:])]


def write_chunk(path, items: list[bytes]) -> None:
    n = len(items)
    head = 4 + 4 * (n + 1)
    offsets = head + np.concatenate([[0], np.cumsum([len(x) for x in items])])
    path.write_bytes(np.uint32(n).tobytes() + offsets.astype("<u4").tobytes() + b"".join(items))


def item(payload: bytes, label: int, recorded: int | None = None) -> bytes:
    size = len(payload) if recorded is None else recorded
    return np.array([size, 8], "<u4").tobytes() + payload + np.int64(label).tobytes()


def payload_offset(root, index: int) -> int:
    offsets, _ = items_of(root / CHUNK)
    return int(offsets[index]) + 8


class TestLitData(ReaderSuite):
    layout = "litdata"

    def make_missing(self, root, index):
        """The offsets table gives item `index` no bytes (the next item takes its place)."""
        offsets, _ = items_of(root / CHUNK)
        pwrite(root / CHUNK, 4 + 4 * (index + 1), np.uint32(offsets[index]).tobytes())

    def make_truncated(self, root, index):
        _, items = items_of(root / CHUNK)
        _, labels, payloads = reference(root)
        items[index] = item(payloads[index][:-10], labels[index])
        write_chunk(root / CHUNK, items)

    def overwrite(self, root, index, offset, data):
        pwrite(root / CHUNK, payload_offset(root, index) + offset, data)


class TestLitDataWriter(WriterSuite):
    layout = "litdata"


@pytest.mark.parametrize("kind", ["gray8", "deflate", "raw16", "jpeg", "var"])
def test_litdata_reads_our_chunks_on_its_own(corpus, kind):
    """litdata.StreamingDataset over litdata/ gives (payload, label) of every sample, bit-exact."""
    from litdata import StreamingDataset

    root = corpus(kind)
    _, labels, payloads = reference(root)
    ds = StreamingDataset(str(root / "litdata"))
    assert len(ds) == len(payloads)
    for i in range(len(ds)):
        payload, label = ds[i]
        assert payload == payloads[i] and label == labels[i]


def test_chunks_follow_the_documented_size(tmp_path, monkeypatch):
    """Chunks of at most CHUNK_BYTES, filled in index order; their item counts are in the manifest."""
    from conftest import kind_spec

    from generator.build import generate
    from generator.layouts import litdata as layout

    assert CHUNK_BYTES == 64 << 20
    monkeypatch.setattr(layout, "CHUNK_BYTES", 10 * 1024)  # ~1 KB items: about 10 per chunk
    spec = kind_spec("gray8")
    generate(tmp_path, spec, ["litdata"], workers=2, progress=False)
    sizes = read_manifest(tmp_path).layouts["litdata"]["chunk_sizes"]
    assert len(sizes) > 2 and sum(sizes) == 37
    index = json.loads((tmp_path / "litdata" / "index.json").read_text())
    assert [c["chunk_size"] for c in index["chunks"]] == sizes
    assert all(c["chunk_bytes"] <= 10 * 1024 for c in index["chunks"])
    _, _, payloads = reference(tmp_path)
    r = open_corpus(tmp_path, "litdata", verify=True)
    order = np.random.default_rng(3).permutation(37)
    assert [bytes(p) for p in r.read_many(order)] == [payloads[i] for i in order]
    assert r.shards().tolist() == np.concatenate([[0], np.cumsum(sizes)]).tolist()


def test_an_item_header_at_odds_with_the_offsets_is_named(corpus_copy):
    root = corpus_copy("gray8")
    _, labels, payloads = reference(root)
    pwrite(root / CHUNK, payload_offset(root, 6) - 8, np.uint32(len(payloads[6]) - 1).tobytes())
    with pytest.raises(SampleError) as e:
        open_corpus(root, "litdata").read_many([5, 6])
    assert e.value.index == 6 and "item's header says" in e.value.problem and CHUNK in e.value.where


def test_a_wrong_stored_label_is_caught_with_verify(corpus_copy):
    root = corpus_copy("gray8")
    _, labels, payloads = reference(root)
    pwrite(root / CHUNK, payload_offset(root, 8) + len(payloads[8]), np.int64(labels[8] + 1).tobytes())
    assert bytes(open_corpus(root, "litdata").read(8)) == payloads[8]  # the payload is sound
    with pytest.raises(SampleError, match="stored label") as e:
        open_corpus(root, "litdata", verify=True).read_batch([8])
    assert e.value.index == 8
    from loaders.verify import verify

    found = verify(root, progress=False)[1]
    assert [(m.layout, m.index) for m in found] == [("litdata", 8)] and "stored label" in found[0].problem


def test_a_damaged_chunk_header_or_file_is_named(corpus_copy):
    root = corpus_copy("gray8")
    pwrite(root / CHUNK, 0, np.uint32(36).tobytes())  # the item count
    with pytest.raises(SampleError, match="header says 36 items") as e:
        open_corpus(root, "litdata").read(2)
    assert e.value.index == 2
    os.truncate(root / CHUNK, 20)
    with pytest.raises(SampleError, match="truncated"):
        open_corpus(root, "litdata").read(2)
    os.remove(root / CHUNK)
    with pytest.raises(SampleError, match="missing") as e:
        open_corpus(root, "litdata").read(9)
    assert e.value.index == 9


def test_a_chunk_cut_short_names_the_first_sample_asked_past_its_end(corpus_copy):
    root = corpus_copy("gray8")
    offsets, _ = items_of(root / CHUNK)
    os.truncate(root / CHUNK, int(offsets[30]) + 20)
    r = open_corpus(root, "litdata")
    assert len(r.read_many(range(30))) == 30
    with pytest.raises(SampleError, match="truncated") as e:
        r.read_batch([1, 31, 30])
    assert e.value.index == 31


def test_another_index_format_or_spec_is_refused(corpus_copy):
    root = corpus_copy("gray8")
    path = root / "litdata" / "index.json"
    index = json.loads(path.read_text())
    index["config"]["compression"] = "zstd"
    path.write_text(json.dumps(index))
    with pytest.raises(CorpusError, match="not ours"):
        open_corpus(root, "litdata").read(0)
    index["config"]["compression"] = None
    index["chunks"][0]["chunk_size"] = 36
    path.write_text(json.dumps(index))
    with pytest.raises(CorpusError, match="not this corpus's"):
        open_corpus(root, "litdata").read(0)
    index["chunks"][0]["chunk_size"] = 37
    path.write_text(json.dumps(index))
    spec = json.loads((root / "litdata" / "spec.json").read_text())
    spec["seed"] += 1
    (root / "litdata" / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(CorpusError, match="another spec"):
        open_corpus(root, "litdata").read(0)
    path.write_text("{not json")
    with pytest.raises(CorpusError, match="not a LitData index"):
        open_corpus(root, "litdata").read(0)


def test_stored_labels_and_unexpected_files(corpus_copy):
    root = corpus_copy("gray8")
    _, labels, _ = reference(root)
    r = open_corpus(root, "litdata")
    assert np.array_equal(r.stored_labels(), labels)
    assert r.unexpected_entries() == []
    (root / "litdata" / "chunk-0-1.bin").write_bytes(b"x")
    assert r.unexpected_entries() == [str(root / "litdata" / "chunk-0-1.bin")]
