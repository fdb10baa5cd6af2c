"""Decoders side by side in one run: Pillow against the optional faster ones (simplejpeg for JPEG,
pyspng for PNG), on photo-content payloads, alternating, best of --repeats. Also encode MB/s.

    .venv/bin/python -m bench.speed.codec [--shape 224x224x3] [--count 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

from generator import codecs as formats
from generator.codec import Codec
from generator.spec import Spec, parse_shape
from generator.synth import make_sample

DECODERS = {"jpeg": (formats.decode_jpeg, ["pillow", "simplejpeg"]), "png": (formats.decode_png, ["pillow", "pyspng"])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.speed.codec", description=__doc__.strip().splitlines()[0])
    p.add_argument("--shape", default="224x224x3")
    p.add_argument("--count", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    h, w, c = parse_shape(args.shape)
    for payload, (decode, names) in DECODERS.items():
        spec = Spec(height=h, width=w, channels=c, count=args.count, content="photo", payload=payload)
        codec = Codec(spec)
        pixels = [make_sample(spec, i)[0] for i in range(spec.count)]
        t0 = time.perf_counter()
        data = [bytes(codec.encode(x)) for x in pixels]
        enc = spec.pixel_bytes * spec.count / (time.perf_counter() - t0) / 1e6
        names = [n for n in names if n == "pillow" or formats.have(n)]
        best = {n: float("inf") for n in names}
        for _ in range(args.repeats):
            for n in names:
                t0 = time.perf_counter()
                for d in data:
                    decode(d, c, spec.np_dtype, n)
                best[n] = min(best[n], (time.perf_counter() - t0) / len(data))
        bpp = sum(map(len, data)) * 8 / (h * w * len(data))
        line = ", ".join(f"{n} {best[n] * 1e3:.3f} ms ({spec.pixel_bytes / best[n] / 1e6:.0f} MB/s)" for n in names)
        print(f"{payload} {args.shape} ({bpp:.2f} bits/pixel, encode {enc:.0f} MB/s): decode {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
