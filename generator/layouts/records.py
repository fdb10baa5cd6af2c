"""Record-stream layouts written as shards (tar, tfrecord): what they share.

A sharded layout keeps samples in index order in shards of `samples_per_shard` consecutive
samples each (the last one shorter): shard k holds samples [k*S, min((k+1)*S, count)). S is a
pure function of the spec and the writer settings (`shard_mb`, `shard_samples`), never of the
worker count, so any number of workers or MPI ranks writes the same bytes. It is stored in the
layout's manifest facts (`samples_per_shard`, with the settings it came from), where readers
take it: the settings describe how one layout is cut, not what the samples are, so they stay out
of the Spec (changing them must not make the corpus "another corpus" for every other layout).

Defaults: at most 256 MiB and 10,000 samples per shard, as WebDataset and TensorFlow's ImageNet
conversion cut theirs (ShardWriter's own default is 100,000 samples or 3 GB); without an explicit
setting a small corpus is also cut into at least MIN_SHARDS shards, so that parallel writers and
shard-shuffling readers have shards to share out (MNIST 60,000: 8 shards of 7,500). Explicit
settings are honoured exactly. Compressed payloads are sized by their upper estimate, so S is
known before any sample is made.

Writing (LayoutWriter's parallel contract): parts() are the shard ranges; write_part() writes
one shard and its index under temporary names in <target>.partial/ and renames them, the index
last, so a shard counts as complete when its index exists under its final name. A rerun keeps
complete shards (begin() checks the plan file, plan.json, and starts over if S changed); end()
fsyncs and renames <target>.partial/ to <target>/. Nothing incomplete is ever under a final name.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from . import LayoutWriter, payload_estimate

SHARD_MB = 256  # default: at most this many MiB of payload per shard
SHARD_SAMPLES = 10_000  # default: at most this many samples per shard
MIN_SHARDS = 8  # default settings cut a corpus into at least this many shards (when it has the samples)
PLAN = "plan.json"
TMP = ".tmp-"
FSYNC_EACH_MAX = 256  # end() fsyncs each file when there are at most this many, else one sync()
SETTINGS = ("shard_mb", "shard_samples")


def samples_per_shard(spec, codec, shard_mb: float | None = None, shard_samples: int | None = None) -> int:
    """Samples per shard for these settings (None: the default), at least 1."""
    per_sample = payload_estimate(spec, codec)
    by_bytes = int((SHARD_MB if shard_mb is None else shard_mb) * (1 << 20)) // per_sample
    s = min(SHARD_SAMPLES if shard_samples is None else shard_samples, by_bytes)
    if shard_mb is None and shard_samples is None:
        s = min(s, -(-spec.count // MIN_SHARDS))
    return max(1, min(s, spec.count))


def shard_ranges(count: int, per_shard: int) -> list[range]:
    return [range(a, min(a + per_shard, count)) for a in range(0, count, per_shard)]


def shard_name(k: int, ext: str) -> str:
    return f"shard-{k:06d}.{ext}"


def write_buffers(fd: int, buffers) -> int:
    """Write every buffer in order: small ones gathered into 4 MiB writes, large ones (a 4K image)
    written as they are (no copy). Returns the bytes written."""
    pending, total = bytearray(), 0
    for b in buffers:
        b = memoryview(b).cast("B")  # numpy rows, bytes and memoryviews alike
        if len(b) >= (1 << 20):
            if pending:
                _write_all(fd, pending)
                pending = bytearray()
            _write_all(fd, b)
        else:
            pending += b
            if len(pending) >= (4 << 20):
                _write_all(fd, pending)
                pending = bytearray()
        total += len(b)
    if pending:
        _write_all(fd, pending)
    return total


def _write_all(fd: int, data) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view):]


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ShardedWriter(LayoutWriter):
    """A parallel writer of shards: a subclass sets `name`, `target`, `shard_ext`, `index_ext`
    and implements encode_shard()."""

    supports_parallel_write = True
    settings = SETTINGS
    shard_ext: str
    index_ext: str

    def __init__(self, root, spec, codec, **options):
        super().__init__(root, spec, codec, **options)
        if spec is not None and codec is None:  # (a writer made only to ask for its paths or parts)
            from ..pool import codec_for

            codec = codec_for(spec)
        self.per_shard = samples_per_shard(spec, codec, **options) if spec is not None else None

    @property
    def partial(self) -> Path:
        return self.root / f"{self.target}.partial"

    def paths(self):
        return [self.root / self.target, self.partial]

    def plan(self) -> dict:
        return {"layout": self.name, "count": self.spec.count, "samples_per_shard": self.per_shard}

    def begin(self) -> int:
        final, partial = self.root / self.target, self.partial
        if final.is_dir() and not partial.exists():  # renamed, but the manifest never listed it: resume from it
            os.replace(final, partial)
        partial.mkdir(exist_ok=True)
        plan_path = partial / PLAN
        try:
            old = json.loads(plan_path.read_text())
        except (OSError, ValueError):
            old = None
        if old != self.plan():  # other settings (or damage): nothing there can be kept
            for p in partial.iterdir():
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            tmp = partial / f"{PLAN}{TMP}{os.getpid()}"
            tmp.write_text(json.dumps(self.plan()))
            os.replace(tmp, plan_path)
        else:
            for stale in partial.glob(f"*{TMP}*"):  # left by a killed run
                stale.unlink()
        return 0  # every shard is visited; complete ones are kept

    def parts(self, workers: int) -> list[range]:
        """One part per shard (the same whatever `workers`)."""
        return shard_ranges(self.spec.count, self.per_shard)

    def write_part(self, indices, payloads, labels) -> None:
        k = indices.start // self.per_shard
        if indices.start % self.per_shard or len(indices) != len(shard_ranges(self.spec.count, self.per_shard)[k]):
            raise ValueError(f"{self.name}: part {indices} is not shard {k} of {self.per_shard} samples")
        data, index = self.partial / shard_name(k, self.shard_ext), self.partial / shard_name(k, self.index_ext)
        if index.exists() and data.exists():  # complete, from an earlier run
            return
        buffers, index_bytes = self.encode_shard(indices, payloads, labels)
        for path, content in ((data, buffers), (index, [index_bytes])):
            tmp = path.with_name(f"{path.name}{TMP}{os.getpid()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            try:
                write_buffers(fd, content)
            finally:
                os.close(fd)
            os.replace(tmp, path)  # the data first, the index last: an index means a complete shard

    def encode_shard(self, indices: range, payloads: list, labels: list) -> tuple[list, bytes]:
        """(the shard's bytes as a list of buffers, its index file's bytes)."""
        raise NotImplementedError

    def finish_files(self, partial: Path) -> None:
        """Extra files written into the partial directory before it is published (end())."""

    def end(self, labels) -> None:
        partial = self.partial
        self.finish_files(partial)
        (partial / PLAN).unlink(missing_ok=True)
        files = sorted(p for p in partial.iterdir() if p.is_file())
        if len(files) <= FSYNC_EACH_MAX:
            for p in files:
                _fsync_path(p)
            _fsync_path(partial)
        else:
            os.sync()
        final = self.root / self.target
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        _fsync_path(self.root)

    def facts(self) -> dict:
        """Manifest facts: how the layout is cut (readers take samples_per_shard from here)."""
        return {"samples_per_shard": self.per_shard, "shards": len(shard_ranges(self.spec.count, self.per_shard)),
                **{k: v for k, v in self.options.items() if v is not None}}
