"""The lance layout: the conformance suites, pylance reading our dataset on its own, how the writer
cuts it, and damage to the dataset's own files (a data file truncated or gone, another schema or
spec, too many rows). Skipped in one line where pylance is missing (the lance extra)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from generator import libraries

pytestmark = pytest.mark.skipif(libraries.problem("lance") is not None,
                                reason=f"{libraries.problem('lance')} (pip install -e '.[lance]')")

from conformance import ReaderSuite, WriterSuite, crcs_read_in_a_forked_child, reference  # noqa: E402

from generator.errors import CorpusError, SampleError  # noqa: E402
from generator.layouts.arrow import SPEC_KEY  # noqa: E402
from generator.layouts.lance import FILE_VERSION, fragment_rows  # noqa: E402
from generator.manifest import read_manifest  # noqa: E402
from generator.pool import codec_for  # noqa: E402
from loaders import open_corpus  # noqa: E402

NAME = "corpus.lance"


def read_table(root):
    import lance

    return lance.dataset(str(root / NAME)).to_table()


def rewrite(root, edit=None, table=None):
    """Write corpus.lance again with pylance (a new version): its payloads with `edit(payloads list)
    -> payloads list` applied (None: a null), or `table` as it is."""
    import lance
    import pyarrow as pa

    if table is None:
        table = read_table(root)
        payloads = edit(table.column("payload").to_pylist())
        schema = pa.schema([pa.field("payload", pa.large_binary()), pa.field("label", pa.uint16())],
                           metadata=table.schema.metadata)
        table = pa.Table.from_arrays([pa.array(payloads, pa.large_binary()), table.column("label")], schema=schema)
    lance.write_dataset(table, str(root / NAME), mode="overwrite")


class TestLance(ReaderSuite):
    layout = "lance"

    def make_missing(self, root, index):
        rewrite(root, lambda p: p[:index] + [None] + p[index + 1:])

    def make_truncated(self, root, index):
        rewrite(root, lambda p: p[:index] + [p[index][:-10]] + p[index + 1:])

    def overwrite(self, root, index, offset, data):
        # Lance keeps a payload in pages of its own encoding, at no byte range of its own: the
        # damage is written through pylance (the reader's own checks must catch it)
        def edit(p):
            p[index] = p[index][:offset] + data + p[index][offset + len(data):]
            return p

        rewrite(root, edit)


    @pytest.mark.parametrize("kind", ["rgb8", "deflate"])
    def test_forked_child_never_uses_the_parents_handles(self, corpus, kind):
        """pylance is not fork-safe (its forked children crash once it has run in the parent): a
        child forked after the parent read gets one line saying so, never a crash or a hang."""
        r = self.open(corpus(kind))
        r.read(0)  # pylance has run here when the child forks
        got = crcs_read_in_a_forked_child(r)
        assert isinstance(got, str) and "UsageError" in got and "forked after pylance ran" in got, got
        assert "spawn" in got and "\\n" not in got
        assert bytes(r.read(1)) == reference(corpus(kind))[2][1]  # the parent's reader still works


def test_process_workers_are_spawned_after_the_parent_read(corpus):
    """Loader(worker_kind="process" or "fork") over the lance reader, after the parent has read
    through pylance: spawned workers (Reader.process_kind), every index once, pixel-exact."""
    from loaders.pipeline import Loader

    root = corpus("rgba8")
    pixels, labels, _ = reference(root)
    r = open_corpus(root, "lance")
    assert r.fork_safe is False and r.process_kind("fork") == "spawn" and r.process_kind("thread") == "thread"
    r.read_batch([0, 1, 2])
    for kind in ("process", "fork"):
        with Loader(r, batch_size=4, workers=2, worker_kind=kind, seed=3) as loader:
            assert loader.worker_kind == "spawn"
            seen = []
            for batch in loader.epoch(0):
                assert np.array_equal(batch.images, np.stack([pixels[i] for i in batch.indices]))
                assert np.array_equal(batch.labels, labels[batch.indices])
                seen.extend(batch.indices.tolist())
        assert sorted(seen) == list(range(37))


def test_duplicate_indices_and_threads_share_nothing_they_must_not(corpus):
    """A batch may ask a sample twice; threads of one process each read with their own file readers
    (one LanceFileReader used by two threads at once is an error of pylance's)."""
    from concurrent.futures import ThreadPoolExecutor

    root = corpus("gray8")
    _, _, payloads = reference(root)
    r = open_corpus(root, "lance")
    assert [bytes(p) for p in r.read_many([3, 0, 3, 36, 0])] == [payloads[i] for i in (3, 0, 3, 36, 0)]
    orders = [np.random.default_rng(k).permutation(37).tolist() for k in range(16)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(r.read_many, orders))
    assert all([bytes(p) for p in g] == [payloads[i] for i in o] for g, o in zip(got, orders))


class TestLanceWriter(WriterSuite):
    layout = "lance"


@pytest.mark.parametrize("kind", ["gray8", "deflate", "raw16", "big", "jpeg"])
def test_pylance_reads_our_dataset_on_its_own(corpus, kind):
    """lance.dataset(...).to_table() gives our payloads and labels, and the spec in the schema."""
    root = corpus(kind)
    _, labels, payloads = reference(root)
    table = read_table(root)
    assert table.column("payload").to_pylist() == payloads
    assert table.column("label").to_pylist() == labels.tolist()
    assert json.loads(table.schema.metadata[SPEC_KEY]) == read_manifest(root).spec.to_dict()


def test_fragments_have_the_documented_size_and_one_version(corpus):
    import lance

    root = corpus("big")  # 72 KB payloads: 6 samples, one fragment
    ds = lance.dataset(str(root / NAME))
    assert [f.count_rows() for f in ds.get_fragments()] == [6]
    assert ds.version == 1 and ds.data_storage_version == FILE_VERSION
    spec = read_manifest(root).spec
    mnist = spec.__class__(height=28, width=28, channels=1, dtype="uint8", count=60_000)
    assert fragment_rows(mnist, codec_for(mnist)) == 60_000  # 47 MB: one fragment
    imagenet = spec.__class__(height=256, width=256, channels=3, dtype="uint8", count=10_000)
    assert fragment_rows(imagenet, codec_for(imagenet)) == 1364  # ~256 MiB each


def test_fragments_follow_the_rule_whatever_the_batches(tmp_path, monkeypatch):
    """A corpus cut into several fragments (the rule made small): fragment k holds samples
    [k*rows, (k+1)*rows), read back bit-exact."""
    import lance

    from conftest import kind_spec

    from generator.build import generate
    from generator.layouts import lance as lance_layout

    monkeypatch.setattr(lance_layout, "FRAGMENT_BYTES", 10 * 1024)  # ~1 KB samples: about 10 per fragment
    spec = kind_spec("gray8")
    rows = fragment_rows(spec, codec_for(spec))
    assert 1 < rows < 37
    generate(tmp_path, spec, ["lance"], workers=2, progress=False)
    ds = lance.dataset(str(tmp_path / NAME))
    assert [f.count_rows() for f in ds.get_fragments()] == [rows] * (37 // rows) + ([37 % rows] if 37 % rows else [])
    pixels, labels, payloads = reference(tmp_path)
    r = open_corpus(tmp_path, "lance", verify=True)
    order = np.random.default_rng(3).permutation(37)
    assert [bytes(p) for p in r.read_many(order)] == [payloads[i] for i in order]


def test_a_truncated_or_missing_data_file_is_one_named_error(corpus_copy):
    root = corpus_copy("gray8")
    (data,) = (root / NAME / "data").iterdir()
    os.truncate(data, os.path.getsize(data) // 2)
    with pytest.raises(SampleError) as e:
        open_corpus(root, "lance").read_batch([5, 6])
    assert e.value.index == 5 and NAME in e.value.where and "unreadable" in e.value.problem
    assert "\n" not in str(e.value)
    os.remove(data)
    with pytest.raises(SampleError) as e:
        open_corpus(root, "lance").read_many([7])
    assert e.value.index == 7 and NAME in e.value.where


def test_a_missing_dataset_is_named(corpus_copy):
    import shutil

    root = corpus_copy("gray8")
    shutil.rmtree(root / NAME)
    with pytest.raises(SampleError, match="missing") as e:
        open_corpus(root, "lance").read(7)
    assert e.value.index == 7


def test_another_spec_schema_or_row_count_is_refused(corpus_copy):
    import pyarrow as pa

    root = corpus_copy("gray8")
    table = read_table(root)
    spec = json.loads(table.schema.metadata[SPEC_KEY])
    spec["seed"] += 1
    rewrite(root, table=table.replace_schema_metadata({SPEC_KEY: json.dumps(spec).encode()}))
    with pytest.raises(CorpusError, match="another spec"):
        open_corpus(root, "lance").read(0)
    rewrite(root, table=table.rename_columns(["data", "label"]))
    with pytest.raises(CorpusError, match="not ours"):
        open_corpus(root, "lance").read(0)
    rewrite(root, table=pa.concat_tables([table, table]))
    with pytest.raises(CorpusError, match="74 rows where this corpus has 37"):
        open_corpus(root, "lance").read(0)


def test_stored_labels_and_paths(corpus):
    root = corpus("gray8")
    _, labels, _ = reference(root)
    r = open_corpus(root, "lance")
    assert np.array_equal(r.stored_labels(), labels)
    names = {p.relative_to(root / NAME).parts[0] for p in r.paths()}
    assert {"data", "_versions"} <= names and all(p.is_file() for p in r.paths())
