"""Write the codec golden files: one small image per codec and bit depth it holds, under
tests/golden/codecs/, plus index.json (each file's spec and the crc32 of the pixels it decodes
to). tests/test_codecs.py checks that today's decoder reads each one to those pixels and that
today's encoder writes the same bytes; a deliberate change to a codec's bytes regenerates them:

    python tests/golden/codecs/make_codecs.py
"""

from __future__ import annotations

import json
import sys
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parents[2]) not in sys.path:  # run as a script; the tests import it with the repository on sys.path
    sys.path.insert(0, str(HERE.parents[2]))

from generator.codec import Codec  # noqa: E402
from generator.codecs import CODECS, codec_id  # noqa: E402
from generator.spec import Spec  # noqa: E402
from generator.synth import make_sample  # noqa: E402

BASE = dict(height=16, width=24, count=1, seed=3, content="photo")
CASES = {
    "raw-gray8": dict(payload="raw", channels=1, dtype="uint8"),
    "raw-rgb16": dict(payload="raw", channels=3, dtype="uint16"),
    "tiff-rgb8": dict(payload="tiff", channels=3, dtype="uint8"),
    "tiff-rgba16": dict(payload="tiff", channels=4, dtype="uint16"),
    "tiff-deflate-gray8": dict(payload="tiff", compression="deflate", channels=1, dtype="uint8"),
    "tiff-deflate-rgb16": dict(payload="tiff", compression="deflate", channels=3, dtype="uint16"),
    "tiff-lzw-rgb8": dict(payload="tiff", compression="lzw", channels=3, dtype="uint8"),
    "tiff-lzw-rgb16": dict(payload="tiff", compression="lzw", channels=3, dtype="uint16"),
    "tiff-zstd-rgba8": dict(payload="tiff", compression="zstd", channels=4, dtype="uint8"),
    "tiff-zstd-gray16": dict(payload="tiff", compression="zstd", channels=1, dtype="uint16"),
    "png-rgb8": dict(payload="png", channels=3, dtype="uint8"),
    "png-gray16": dict(payload="png", channels=1, dtype="uint16"),
    "png-rgba16": dict(payload="png", channels=4, dtype="uint16"),
    "jpeg-rgb8-q90": dict(payload="jpeg", channels=3, dtype="uint8", quality=90),
    "jpeg-gray8-q75": dict(payload="jpeg", channels=1, dtype="uint8", quality=75),
    "webp-rgb8-q90": dict(payload="webp", channels=3, dtype="uint8", quality=90),
    "webp-rgba8-q80": dict(payload="webp", channels=4, dtype="uint8", quality=80),
}


def spec_of(name: str) -> Spec:
    return Spec(**BASE, **CASES[name])


def path_of(name: str) -> Path:
    s = spec_of(name)
    return HERE / f"{name}.{CODECS[codec_id(s.payload, s.compression)].extension}"


def main() -> int:
    index = {}
    for name in CASES:
        spec = spec_of(name)
        codec = Codec(spec)
        payload, pixels = codec.reference(make_sample(spec, 0)[0])
        path_of(name).write_bytes(bytes(payload))
        index[name] = {"file": path_of(name).name, "spec": spec.to_dict(), "payload_crc32": zlib.crc32(payload),
                       "pixels_crc32": zlib.crc32(pixels.tobytes())}
        print(f"wrote {path_of(name)} ({len(payload)} bytes)")
    (HERE / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
