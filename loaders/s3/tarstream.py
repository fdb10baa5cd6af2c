"""Tar shards streamed whole over S3, as WebDataset reads them: one GET per shard, its members
parsed as the bytes arrive (no index), each sample handed out once its bytes are in.

ShardStreams.read(indices) starts a stream for each shard the indices fall in (on the reader's
pool of threads: streams of several shards are in flight together), then waits for each
sample's member: found by its name (`<key>.<ext>`, loaders.s3.tar.S3TarReader.member) and its
header checked as the local reader checks it (loaders.tar.member_problem, with the manifest's
size). A shard's bytes are kept until each of its samples has been handed out once, then
dropped; at most MAX_STREAMS shards are held, the oldest dropped past that (a sample of a
dropped shard streams its shard again: another GET, counted).

Failures, each one line naming the shard's URL and the sample: the shard missing; cut short
(truncated: the object's bytes ended before its advertised size, or the archive ends without
the sample's member); a damaged header.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from generator.errors import SampleError
from generator.layouts.tar import BLOCK

from ..tar import _octal, member_problem

MAX_STREAMS = 8  # shards held at most per reader
WAIT_S = 1.0  # how often a waiting reader looks at its stream again (the store's timeouts bound it)


class _Stream:
    """One shard being fetched whole: its bytes so far and the members found in them."""

    def __init__(self, k: int, names: dict[str, int]):
        self.k = k
        self.cond = threading.Condition()
        self.buf = bytearray()
        self.names = names  # member name -> sample
        self.left = set(names.values())  # samples not handed out yet
        self.found: dict[int, tuple[int, int]] = {}  # sample -> (payload offset, size)
        self.problems: dict[int, str] = {}  # sample -> what is wrong with its member
        self.done = False  # the GET ended (or failed: error)
        self.error: Exception | None = None
        self.cancelled = False


class ShardStreams:
    """The shards a reader (S3TarReader, streaming) is streaming; thread-safe."""

    def __init__(self, reader):
        self.r = reader
        self.lock = threading.Lock()
        self.active: OrderedDict[int, _Stream] = OrderedDict()

    def read(self, idx: list[int]) -> list:
        per = self.r.per_shard
        streams: dict[int, _Stream] = {}
        for i in idx:
            k = i // per
            if k not in streams:
                streams[k] = self._stream(k)
        return [self._take(streams[i // per], i) for i in idx]

    def close(self) -> None:
        with self.lock:
            for st in self.active.values():
                st.cancelled = True
            self.active.clear()

    # -- the streams
    def _stream(self, k: int) -> _Stream:
        r = self.r
        with self.lock:
            st = self.active.get(k)
            if st is not None:
                return st
            first, last = k * r.per_shard, min(r.spec.count, (k + 1) * r.per_shard)
            st = self.active[k] = _Stream(k, {r.member(i): i for i in range(first, last)})
            while len(self.active) > MAX_STREAMS:
                _, old = self.active.popitem(last=False)
                old.cancelled = True
        r._pool.submit(self._pump, st)
        return st

    def _pump(self, st: _Stream) -> None:
        at = 0
        try:
            for chunk in self.r.store.get_stream(self.r.shard_name(st.k)):
                if st.cancelled:
                    break
                with st.cond:
                    st.buf += chunk
                    at = self._parse(st, at)
                    st.cond.notify_all()
        except BaseException as exc:  # the waiting readers raise it, named for their sample
            st.error = exc
        finally:
            with st.cond:
                st.done = True
                st.cond.notify_all()

    def _parse(self, st: _Stream, at: int) -> int:
        """Members whose header and payload have arrived, from byte `at`; returns where the next
        member's header starts (st.cond held)."""
        buf, sizes, verify = st.buf, self.r._sizes, self.r.verify
        while len(buf) - at >= BLOCK:
            head = bytes(buf[at:at + BLOCK])
            if not any(head):  # the archive's end
                return len(buf) + BLOCK
            size = _octal(head[124:136])
            if size is None:
                st.error = SampleError(self.r.layout, min(st.left, default=-1), self.r.object_url(
                    self.r.shard_name(st.k)), f"damaged: the tar header at byte {at:,} has no size")
                return len(buf) + BLOCK
            end = at + BLOCK + size
            if len(buf) < end:
                break
            name = head[:100].split(b"\0", 1)[0].decode(errors="replace")
            i = st.names.get(name)
            if i is not None:
                problem = member_problem(head, name, at, sizes[i], verify)
                if problem is None:
                    st.found[i] = (at + BLOCK, size)
                else:
                    st.problems[i] = problem
            at += BLOCK + -(-size // BLOCK) * BLOCK
        return at

    def _take(self, st: _Stream, i: int):
        r = self.r
        with st.cond:
            while i not in st.found and i not in st.problems and not st.done:
                st.cond.wait(WAIT_S)
            got = st.found.get(i)
            if got is None:
                if i in st.problems:
                    raise SampleError(r.layout, i, r.where(i), st.problems[i])
                if st.error is not None:
                    self._drop(st)
                    from generator.objectstore.store import StoreError

                    if isinstance(st.error, StoreError):
                        raise r.named(st.error, i, r.shard_name(st.k)) from None
                    raise st.error
                if st.cancelled:  # dropped to make room (more shards at once than MAX_STREAMS): again
                    return self._take(self._stream(st.k), i)
                raise SampleError(r.layout, i, r.where(i), "truncated: the shard (streamed whole) ends without "
                                                          "this member")
            a, n = got
            data = bytes(st.buf[a:a + n])
            st.left.discard(i)
            if not st.left:
                self._drop(st)
        return data

    def _drop(self, st: _Stream) -> None:
        with self.lock:
            if self.active.get(st.k) is st:
                del self.active[st.k]
        st.buf = bytearray()
