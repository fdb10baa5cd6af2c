"""The suites every layout passes. A layout's test module subclasses ReaderSuite, sets `layout`
and implements the three damage hooks (make_missing, make_truncated, overwrite).
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import zlib

import numpy as np
import pytest

from generator.codec import Codec
from generator.errors import SampleError, UsageError
from generator.manifest import read_manifest
from generator.synth import make_sample
from loaders import open_corpus
from loaders.pipeline import Loader
from loaders.sampler import MODES

VARIABLE_KINDS = ["var", "var16", "varjpeg", "varraw"]  # size distributions (tests/conftest.py)
ROUND_TRIP_KINDS = ["gray8", "rgb8", "rgba8", "rgb16", "raw16", "deflate", "big", "jpeg", "png16"]
DAMAGE_KINDS = ["gray8", "big"]  # small (batch-assembled) and large (per-sample) read paths
EXTENT_KINDS = ["gray8", "big", "raw16", "deflate"]  # small, large, raw pixels, variable-size (compressed)


def reference(root):
    """(pixels list, labels array, payloads list) of every sample, made from scratch (for a lossy
    codec the pixels are those its payload decodes to: Codec.reference)."""
    spec = read_manifest(root).spec
    codec = Codec(spec)
    pixels, labels = zip(*(make_sample(spec, i) for i in range(spec.count)))
    payloads, pixels = zip(*(codec.reference(p) for p in pixels))
    return list(pixels), np.array(labels), list(payloads)


def _child_reads(reader, conn):
    """In a forked child: read every sample with the reader the parent had already used."""
    try:
        conn.send([zlib.crc32(reader.read(i)) for i in range(len(reader))])
    except BaseException as exc:  # report, do not hang the parent
        conn.send(repr(exc))


def crcs_read_in_a_forked_child(reader):
    """The crc32 of every sample as a forked child reads it with `reader` (handles inherited from
    the parent), or what went wrong there ("no answer" after 60 s)."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_child_reads, args=(reader, child))
    p.start()
    got = parent.recv() if parent.poll(60) else "no answer"
    p.join(10)
    return got


class ReaderSuite:
    layout: str

    # -- damage hooks, per layout ------------------------------------------------------------------

    def make_missing(self, root, index: int) -> None:
        raise NotImplementedError

    def make_truncated(self, root, index: int) -> None:
        raise NotImplementedError

    def overwrite(self, root, index: int, offset: int, data: bytes) -> None:
        """Replace bytes of sample `index`'s stored payload, from `offset`, with `data`."""
        raise NotImplementedError

    # -- helpers -----------------------------------------------------------------------------------

    def open(self, root, **kw):
        return open_corpus(root, self.layout, **kw)

    def assert_named(self, exc_info, index: int, problem: str):
        e = exc_info.value
        assert (e.layout, e.index) == (self.layout, index)
        assert problem in e.problem
        assert f"{self.layout} sample {index} at " in str(e) and e.where in str(e)

    # -- round trips -------------------------------------------------------------------------------

    @pytest.mark.parametrize("kind", ROUND_TRIP_KINDS)
    def test_round_trip_is_bit_exact(self, corpus, kind):
        root = corpus(kind)
        pixels, labels, payloads = reference(root)
        r = self.open(root)
        n = len(r)
        for i in range(n):
            p = r.read(i)
            assert bytes(p) == payloads[i]
            img = r.decode(p, i)
            assert img.dtype == pixels[i].dtype and img.shape == pixels[i].shape
            assert np.array_equal(img, pixels[i])
            assert r.label(i) == labels[i]
        order = np.random.default_rng(1).permutation(n)
        assert [bytes(p) for p in r.read_many(order)] == [payloads[i] for i in order]
        images, nbytes = r.read_batch(order)
        assert images.dtype == pixels[0].dtype and images.shape == (n, *pixels[0].shape)
        assert np.array_equal(images, np.stack([pixels[i] for i in order]))
        assert nbytes == sum(len(payloads[i]) for i in order)
        assert np.array_equal(r.labels(order), labels[order])
        assert r.read_many([]) == [] and r.read_batch([])[0].shape == (0, *pixels[0].shape)
        r.close()

    @pytest.mark.parametrize("kind", VARIABLE_KINDS)
    def test_variable_shapes_round_trip_or_a_named_refusal(self, corpus, kind, tmp_path):
        """A size distribution: every path returns each sample at the shape the manifest records
        (the spec's draw), bit-exact; a layout that cannot hold them is left out of the default set
        and refused by name when asked for."""
        from generator.build import generate
        from generator.layouts import get_layout

        root = corpus(kind)
        manifest = read_manifest(root)
        spec = manifest.spec
        why = get_layout(self.layout).writer_class().refusal(spec)
        if why is not None:
            assert self.layout not in manifest.layouts
            assert f"the {self.layout} layout" in why and "one of: " in why and "\n" not in why
            with pytest.raises(UsageError, match=f"the {self.layout} layout .* cannot hold"):
                generate(tmp_path / "c", spec, [self.layout], workers=1, progress=False)
            return
        pixels, labels, payloads = reference(root)
        shapes = [spec.sample_shape(i) for i in range(spec.count)]
        assert manifest.shapes == [list(s) for s in shapes] and len(set(shapes)) > 1
        assert all(s[0] <= spec.height and s[1] <= spec.width for s in shapes)
        r = self.open(root, verify=True)
        assert r.variable and [r.shape(i) for i in range(len(r))] == shapes
        for i in range(len(r)):
            p = r.read(i)
            assert bytes(p) == payloads[i]
            img = r.decode(p, i)
            assert img.shape == shapes[i] and np.array_equal(img, pixels[i])
        order = np.random.default_rng(2).permutation(len(r))
        images, nbytes = r.read_batch(order)
        assert isinstance(images, list) and len(images) == len(order)
        for img, i in zip(images, order):
            assert img.dtype == spec.np_dtype and img.shape == shapes[i] and np.array_equal(img, pixels[i])
        assert nbytes == sum(len(payloads[i]) for i in order)
        flat = np.empty(r.batch_elements(order[:5]), spec.np_dtype)  # the documented `out`: consecutive views
        views, _ = r.read_batch(order[:5], flat)
        assert all(np.shares_memory(v, flat) and np.array_equal(v, pixels[i]) for v, i in zip(views, order[:5]))
        with pytest.raises(UsageError, match="flat"):
            r.read_batch(order[:5], flat[:-1])
        assert r.read_batch([])[0] == []
        for kw in (dict(workers=0), dict(workers=2, worker_kind="fork"), dict(workers=2, worker_kind="thread"),
                   dict(workers=1, worker_kind="fork", timing=True)):
            seen = []
            with Loader(self.open(root), batch_size=4, seed=5, **kw) as loader:
                for batch in loader.epoch(0):
                    assert [im.shape for im in batch.images] == [shapes[i] for i in batch.indices]
                    assert all(np.array_equal(im, pixels[i]) for im, i in zip(batch.images, batch.indices))
                    assert np.array_equal(batch.labels, labels[batch.indices])
                    seen.extend(batch.indices.tolist())
            assert sorted(seen) == list(range(len(r))), kw
        r.close()

    def test_verify_mode_reads_a_sound_corpus(self, corpus):
        root = corpus("gray8")
        pixels, _, payloads = reference(root)
        r = self.open(root, verify=True)
        assert [bytes(p) for p in r.read_many(range(len(r)))] == payloads
        assert np.array_equal(r.read_batch(range(len(r)))[0], np.stack(pixels))

    def test_len_and_paths(self, corpus):
        r = self.open(corpus("gray8"))
        assert len(r) == 37
        assert r.paths() and all(p.exists() for p in r.paths())

    def test_out_of_range_index(self, corpus):
        r = self.open(corpus("gray8"))
        for bad in (37, -1, 10**12):
            with pytest.raises(IndexError, match="out of range"):
                r.read(bad)
        with pytest.raises(IndexError, match="37"):
            r.read_many([0, 37])
        with pytest.raises(IndexError):
            r.read_batch([-1])
        with pytest.raises(IndexError):
            r.label(37)

    # -- processes ---------------------------------------------------------------------------------

    def test_pickles_before_and_after_use(self, corpus):
        root = corpus("rgb8")
        _, _, payloads = reference(root)
        r = self.open(root)
        fresh = pickle.loads(pickle.dumps(r))
        assert bytes(fresh.read(3)) == payloads[3]
        r.read_many([0, 1, 2])  # handles open now
        used = pickle.loads(pickle.dumps(r))
        assert bytes(used.read(4)) == payloads[4] and bytes(r.read(5)) == payloads[5]
        r.close()
        assert bytes(r.read(6)) == payloads[6]  # reopens after close

    @pytest.mark.parametrize("kind", ["rgb8", "deflate"])
    def test_forked_child_never_uses_the_parents_handles(self, corpus, kind):
        root = corpus(kind)
        _, _, payloads = reference(root)
        r = self.open(root)
        r.read(0)  # the parent's handles are open when it forks
        assert crcs_read_in_a_forked_child(r) == [zlib.crc32(x) for x in payloads]
        assert bytes(r.read(1)) == payloads[1]  # the parent's handles still work

    @pytest.mark.parametrize("kind", ["fork", "spawn"])
    def test_reads_in_worker_processes(self, corpus, kind):
        root = corpus("rgba8")
        pixels, labels, _ = reference(root)
        with Loader(self.open(root), batch_size=4, workers=2, worker_kind=kind, seed=3) as loader:
            seen = []
            for batch in loader.epoch(0):
                assert np.array_equal(batch.images, np.stack([pixels[i] for i in batch.indices]))
                assert np.array_equal(batch.labels, labels[batch.indices])
                seen.extend(batch.indices.tolist())
            assert len(loader.worker_pids) == 2
        assert sorted(seen) == list(range(37))

    @pytest.mark.parametrize("mode", MODES)
    def test_every_index_once_per_epoch(self, corpus, mode):
        root = corpus("gray8")
        pixels, _, _ = reference(root)
        r = self.open(root)
        if mode == "shards" and not r.supports_streaming:  # only streaming layouts have shards to stream
            with pytest.raises(UsageError, match="streaming"):
                Loader(r, shuffle=mode)
            return
        for epoch in (0, 1):
            seen = []
            for rank in range(2):
                loader = Loader(r, batch_size=5, workers=2, shuffle=mode, seed=11, rank=rank, world=2)
                for batch in loader.epoch(epoch):
                    assert np.array_equal(batch.images, np.stack([pixels[i] for i in batch.indices]))
                    seen.extend(batch.indices.tolist())
                loader.close()
            assert sorted(seen) == list(range(37))

    # -- where samples lie (the capped regime's page-cache probe) ---------------------------------

    @pytest.mark.parametrize("kind", EXTENT_KINDS)
    def test_extents_cover_the_stored_bytes_or_say_why_not(self, corpus, kind):
        root = corpus(kind)
        _, _, payloads = reference(root)
        r = self.open(root)
        idx = list(range(len(r)))[::-1]  # any order, any batch
        got = r.extents(idx)
        if got is None:
            assert type(r).no_extents, f"{self.layout}: extents() gave None and the reader's no_extents says not why"
            return
        assert type(r).extents_cover in ("payload", "chunk") and len(got) == len(idx)
        assert r.extents([]) == []
        files = {str(p) for p in r.paths()}
        for i, ranges in zip(idx, got):
            assert ranges, (self.layout, i)
            stored = b""
            for path, off, n in ranges:
                assert path in files and off >= 0 and n > 0 and off + n <= os.path.getsize(path), (path, off, n)
                fd = os.open(path, os.O_RDONLY)
                try:
                    stored += os.pread(fd, n, off)
                finally:
                    os.close(fd)
            if type(r).extents_cover == "payload":
                assert stored == payloads[i], (self.layout, i)  # exactly the payload, read from where it is said to be
            else:  # the whole chunk the layout reads for it: the sample's stored bytes are inside it
                assert payloads[i][len(r.codec.header):] in stored, (self.layout, i)
        assert r.extents(idx[:3]) == got[:3]  # the same answer per sample, batch by batch

    # -- damage ------------------------------------------------------------------------------------

    def _all_paths_raise(self, root, index: int, problem: str, verify: bool = False):
        r = self.open(root, verify=verify)
        with pytest.raises(SampleError) as e:
            r.read(index)
        self.assert_named(e, index, problem)
        with pytest.raises(SampleError) as e:
            r.read_many([0, index, 1])
        self.assert_named(e, index, problem)
        with pytest.raises(SampleError) as e:
            r.read_batch([index, 0])
        self.assert_named(e, index, problem)
        with pytest.raises(SampleError) as e:
            list(Loader(r, batch_size=4, shuffle="sequential").epoch(0))
        self.assert_named(e, index, problem)

    @pytest.mark.parametrize("kind", DAMAGE_KINDS)
    def test_missing_sample_raises_named_error(self, corpus_copy, kind):
        root = corpus_copy(kind)
        self.make_missing(root, 3)
        self._all_paths_raise(root, 3, "missing")

    @pytest.mark.parametrize("kind", DAMAGE_KINDS)
    def test_truncated_sample_raises_named_error(self, corpus_copy, kind):
        root = corpus_copy(kind)
        self.make_truncated(root, 4)
        self._all_paths_raise(root, 4, "truncated")

    @pytest.mark.parametrize("kind", DAMAGE_KINDS)
    def test_bit_flip_is_caught_with_verify(self, corpus_copy, kind):
        root = corpus_copy(kind)
        _, _, payloads = reference(root)
        at = len(payloads[2]) - 5  # a pixel byte
        self.overwrite(root, 2, at, bytes([payloads[2][at] ^ 0x10]))
        self._all_paths_raise(root, 2, "crc32", verify=True)

    @pytest.mark.parametrize("kind", DAMAGE_KINDS)
    def test_corrupt_header_raises_named_error(self, corpus_copy, kind):
        root = corpus_copy(kind)
        i = 5
        self.overwrite(root, i, 0, b"JUNKJUNKJUNK")
        r = self.open(root)
        with pytest.raises(SampleError) as e:
            r.read_batch([0, i])
        self.assert_named(e, i, "undecodable")
        with pytest.raises(SampleError) as e:
            r.decode(r.read(i), i)
        self.assert_named(e, i, "undecodable")


# ==================================================================================================
# The writer suite: how a layout's writer behaves when generation is cut short, fills the disk, or
# runs with any number of workers. Every layout's test module subclasses it and sets `layout`.

WRITER_KIND = "gray8"  # the reference corpus (every layout) comes from the session's `corpus` fixture


def _kill_at(cls, method: str, call: int, when: str):
    """Patch `cls.method` (in this forked child only) to SIGKILL the process at its `call`-th call,
    before or after doing its work: a kill -9 at a known point of the write."""
    import os
    import signal

    real = getattr(cls, method)
    calls = [0]

    def patched(self, *args, **kw):
        k = calls[0]
        calls[0] += 1
        if k == call and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = real(self, *args, **kw)
        if k == call and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(cls, method, patched)


class WriterSuite:
    layout: str

    def is_temporary(self, relpath: str) -> bool:
        """A name the writer gives an unfinished file inside its published tree (none by default)."""
        return False

    # -- helpers -----------------------------------------------------------------------------------

    @property
    def writer_class(self):
        from generator.layouts import get_layout

        return get_layout(self.layout).writer_class()

    def generate(self, root, workers: int = 1):
        from generator.build import generate

        return generate(root, read_manifest(self.reference_root).spec, [self.layout], workers=workers,
                        progress=False)

    @pytest.fixture(autouse=True)
    def _reference(self, corpus):
        self.reference_root = corpus(WRITER_KIND)

    def assert_same_as_reference(self, root):
        got, want = read_manifest(root), read_manifest(self.reference_root)
        assert (got.crc32, got.sizes, got.labels) == (want.crc32, want.sizes, want.labels)
        assert list(got.layouts) == [self.layout]
        assert self.writer_class.snapshot(root) == self.writer_class.snapshot(self.reference_root)
        from loaders.verify import verify

        assert verify(root, progress=False)[1] == []

    def assert_nothing_incomplete_visible(self, root):
        """After a kill: the layout is refused by readers unless the manifest lists it, and every
        file under its final name is one the finished layout has, byte for byte."""
        from generator.errors import CorpusError
        from generator.manifest import MANIFEST

        done = read_manifest(root).layouts if (root / MANIFEST).exists() else {}
        if self.layout not in done:
            with pytest.raises(CorpusError):
                open_corpus(root, self.layout)
        top = root / self.writer_class.target
        want = self.writer_class.snapshot(self.reference_root) if top.exists() else {}
        files = [top] if top.is_file() else [p for p in top.rglob("*") if p.is_file()] if top.is_dir() else []
        for path in files:
            rel = str(path.relative_to(root))
            if rel in want:
                assert path.read_bytes() == want[rel], f"{rel} is under its final name but incomplete"
            elif not self.is_temporary(rel):
                # a layout that snapshots records, not files: its tree appears only when complete
                assert self.layout in done or self.writer_class.snapshot(root) == self.writer_class.snapshot(
                    self.reference_root), f"{rel} is under a final name before the layout is complete"

    # -- the tests ---------------------------------------------------------------------------------

    def test_a_size_distribution_writes_the_same_bytes_whatever_the_worker_count(self, corpus, tmp_path):
        """Samples of varying shape (tests/conftest.py's `var`): identical layouts from 1 and 3 workers,
        equal to the session's corpus, verified sample by sample (shapes included)."""
        from generator.build import generate
        from loaders.verify import verify

        ref = corpus("var")
        spec = read_manifest(ref).spec
        for workers in (1, 3):
            root = tmp_path / f"w{workers}"
            generate(root, spec, [self.layout], workers=workers, progress=False)
            assert read_manifest(root).shapes == read_manifest(ref).shapes
            assert self.writer_class.snapshot(root) == self.writer_class.snapshot(ref)
            assert verify(root, progress=False)[1] == []

    def test_same_bytes_whatever_the_worker_count(self, tmp_path):
        for workers in (1, 3):
            self.generate(tmp_path / f"w{workers}", workers)
            self.assert_same_as_reference(tmp_path / f"w{workers}")

    @pytest.mark.parametrize("point", [(0, "before"), (1, "after"), (-1, "after"), ("end", "before")])
    def test_a_kill_at_any_point_leaves_nothing_incomplete_and_a_rerun_is_identical(self, tmp_path, point):
        import os

        root = tmp_path / "corpus"
        cls = self.writer_class
        method = "end" if point[0] == "end" else "write_part" if cls.supports_parallel_write else "put_many"
        calls = len(cls(root, read_manifest(self.reference_root).spec, None).parts(1)) if method == "write_part" else None
        call = 0 if point[0] == "end" else point[0]
        if call == -1:  # the last write call: count them in a dry run of the plan
            from generator.pool import chunks

            spec = read_manifest(self.reference_root).spec
            call = (calls or len(chunks(0, spec.count, spec, 4))) - 1
        pid = os.fork()
        if pid == 0:  # the child: generate, killed at the chosen call
            try:
                _kill_at(cls, method, call, point[1])
                self.generate(root)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9, f"the kill at {method} call {call} never came"
        self.assert_nothing_incomplete_visible(root)
        self.generate(root)  # the same command again, to the end
        self.assert_same_as_reference(root)

    def test_disk_full_is_one_named_line_and_a_rerun_finishes(self, tmp_path, monkeypatch):
        import errno

        from generator.errors import CorpusError

        root = tmp_path / "corpus"
        cls = self.writer_class
        method = "write_part" if cls.supports_parallel_write else "put_many"
        real = getattr(cls, method)
        calls = [0]

        def full(self, *args, **kw):
            calls[0] += 1
            if calls[0] == 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(root))
            return real(self, *args, **kw)

        monkeypatch.setattr(cls, method, full)
        with pytest.raises(CorpusError) as e:
            self.generate(root)
        msg = str(e.value)
        assert f"disk full while writing the {self.layout} layout in {root}" in msg
        assert "rerun the same command to resume" in msg and "\n" not in msg
        monkeypatch.setattr(cls, method, real)
        self.generate(root)
        self.assert_same_as_reference(root)
