"""Writing tar shards three ways, side by side, on one corpus (what chose the tar layout's writer).

    .venv/bin/python -m bench.speed.tar_write [--count 60000] [--rounds 3] [--out-dir DIR]

MNIST-size payloads of the generator, made once in memory, written as 8 shards by (1) the tar
layout's writer (ustar headers built for a whole shard with numpy, buffers gathered into large
writes), (2) tarfile.addfile per member, (3) webdataset's ShardWriter (mtime fixed); the three
outputs are checked byte-identical. Each round times the three in turn. Needs webdataset (the
`records` extra).
"""

from __future__ import annotations

import argparse
import io
import os
import tarfile
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.speed.tar_write", description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=60_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out-dir", type=Path, default=None, help="where the shards go (default: a temporary directory)")
    args = p.parse_args(argv)
    import webdataset as wds

    from generator.layouts.records import write_buffers
    from generator.layouts.tar import GROUP, MODE, USER, TarWriter, key_of
    from generator.pool import codec_for, produce
    from generator.spec import preset_spec

    spec = preset_spec("mnist", count=args.count)
    payloads, _, _, labels = produce(spec, range(spec.count))
    payloads = [bytes(x) for x in payloads]
    per = -(-spec.count // 8)
    shards = [range(a, min(a + per, spec.count)) for a in range(0, spec.count, per)]
    out = Path(args.out_dir or tempfile.mkdtemp(prefix="tar-write-speed-"))
    out.mkdir(parents=True, exist_ok=True)

    def ours():
        w = TarWriter(out, spec, codec_for(spec))
        for k, r in enumerate(shards):
            buffers, _ = w.encode_shard(r, payloads[r.start:r.stop], labels[r.start:r.stop])
            fd = os.open(out / f"ours-{k}.tar", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                write_buffers(fd, buffers)
            finally:
                os.close(fd)

    def stdlib():
        for k, r in enumerate(shards):
            with tarfile.open(out / f"tarfile-{k}.tar", "w", format=tarfile.USTAR_FORMAT) as tf:
                for i in r:
                    for ext, data in (("cls", str(labels[i]).encode()), ("tif", payloads[i])):
                        info = tarfile.TarInfo(f"{key_of(spec, i)}.{ext}")
                        info.size, info.mtime, info.mode, info.uname, info.gname = len(data), 0, MODE, USER, GROUP
                        tf.addfile(info, io.BytesIO(data))

    def shardwriter():
        with wds.ShardWriter(str(out / "wds-%d.tar"), maxcount=per, mtime=0, verbose=0) as sw:
            for i in range(spec.count):
                sw.write({"__key__": key_of(spec, i), "cls": str(labels[i]).encode(), "tif": payloads[i]})

    ways = (("tar layout writer (numpy headers)", ours), ("tarfile.addfile", stdlib), ("webdataset ShardWriter", shardwriter))
    for rnd in range(args.rounds):
        for name, fn in ways:
            t = time.perf_counter()
            fn()
            dt = time.perf_counter() - t
            print(f"round {rnd + 1}  {name:36s} {dt:6.2f} s  {spec.count / dt:10,.0f} samples/s", flush=True)
    same = all((out / f"ours-{k}.tar").read_bytes() == (out / f"tarfile-{k}.tar").read_bytes()
               == (out / f"wds-{k}.tar").read_bytes() for k in range(len(shards)))
    print("the three wrote identical bytes" if same else "the outputs DIFFER")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
