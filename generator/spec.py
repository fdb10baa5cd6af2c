"""What a corpus is: a frozen Spec (shape, dtype, count, seed, content, payload codec and its
settings) and the presets."""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass

import numpy as np

from . import codecs as _codecs
from .errors import UsageError

DTYPES = ("uint8", "uint16")
CONTENTS = ("smooth", "noise", "photo")  # synthesized; "ingest": the bytes of source files (generator.ingest)
INGEST = "ingest"
PAYLOADS = _codecs.PAYLOADS  # tiff, raw, png, jpeg, webp (generator.codecs has the registry)
COMPRESSIONS = _codecs.TIFF_COMPRESSIONS  # none, deflate, lzw, zstd: TIFF's
LOSSY = tuple(c for c in PAYLOADS if _codecs.CODECS[c].lossy)  # take --quality
# Fields added after version 1 of the spec: left out of to_dict() at their default, so a spec
# without them has the JSON (and corpora made by it the stored spec bytes) it always had.
_OPTIONAL = {"quality": None, "sizes": None, "source": None}

# Classic TIFF and HDF5 chunks stop at 4 GiB, and several samples are in memory per worker.
MAX_SAMPLE_BYTES = 1 << 30
MAX_COUNT = 1 << 25  # 33,554,432 samples: a manifest of at most ~940 MB, under MANIFEST_MAX_BYTES

# name: (height, width, channels, dtype, what it stands for)
PRESETS: dict[str, tuple[int, int, int, str, str]] = {
    "mnist": (28, 28, 1, "uint8", "MNIST digits, 784 B"),
    "cifar": (32, 32, 3, "uint8", "CIFAR-10, 3,072 B"),
    "imagenet": (224, 224, 3, "uint8", "ImageNet-like training crop, 150,528 B"),
    "hd": (1080, 1920, 3, "uint8", "Full HD frame, 6,220,800 B"),
    "4k-square": (4096, 4096, 3, "uint8", "4096x4096 RGB, 16,777,216 px, 50,331,648 B"),
    "4k-8bit": (2540, 4520, 4, "uint8", "4520x2540 RGBA 8 bit, 45,923,200 B (the article's 45.9 MB)"),
    "4k-16bit": (2540, 4520, 4, "uint16", "4520x2540 RGBA 16 bit, 91,846,400 B (the article's 91.8 MB)"),
}


@dataclass(frozen=True)
class Spec:
    """Everything that determines a corpus's bytes. Two equal specs make identical corpora."""

    height: int
    width: int
    channels: int
    dtype: str = "uint8"
    count: int = 1
    seed: int = 0
    content: str = "smooth"
    payload: str = "tiff"
    compression: str = "none"
    num_classes: int = 10
    preset: str | None = None
    quality: int | None = None  # jpeg and webp: 1..100 (default 90); None for lossless payloads
    # a size distribution (generator.sizes' canonical text), None: every sample has (height, width).
    # With one, height and width are set to its bounding shape (the largest any sample has), so
    # pixel_bytes stays the per-sample upper bound buffers are sized by; sample_shape(i) gives each.
    sizes: str | None = None
    # content "ingest" (generator.ingest): the source's identity, "sha256:<digest of every file's
    # path, size, crc32 and label>". Such a corpus's payloads are its files' bytes, unchanged
    # (payload: their one format, or "mixed"); shapes, dtypes and files are in the manifest, and
    # height, width, channels and dtype are the bounds (largest side, most channels, widest type).
    source: str | None = None

    def __post_init__(self):
        ingested = self.content == INGEST
        if self.sizes is not None:
            from .sizes import load

            if not isinstance(self.sizes, str):
                raise UsageError(f"sizes must be a size distribution's text, got {self.sizes!r}")
            dist = load(self.sizes)
            object.__setattr__(self, "sizes", dist.text)
            object.__setattr__(self, "height", dist.bounds[0])
            object.__setattr__(self, "width", dist.bounds[1])
        for name in ("height", "width", "channels", "count", "num_classes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise UsageError(f"{name} must be a positive integer, got {value!r}")
        if ingested != (self.source is not None) or (ingested and self.sizes is not None):
            raise UsageError("an ingested spec (content ingest) has a source and no size distribution; "
                             "only python -m generator ingest makes one")
        if self.channels not in ((1, 2, 3, 4) if ingested else (1, 3, 4)):
            raise UsageError(f"channels must be 1, 3 or 4, got {self.channels}")
        if self.count > MAX_COUNT:
            raise UsageError(f"count must be at most {MAX_COUNT:,} (its manifest must stay readable), got {self.count:,}")
        if self.num_classes > 65535:
            raise UsageError(f"num_classes must be at most 65535, got {self.num_classes}")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise UsageError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")
        for name, allowed in (("dtype", DTYPES), ("content", CONTENTS + ((INGEST,) if ingested else ())),
                              ("payload", PAYLOADS + (("mixed",) if ingested else ())), ("compression", COMPRESSIONS)):
            if getattr(self, name) not in allowed:
                raise UsageError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.pixel_bytes > MAX_SAMPLE_BYTES:
            raise UsageError(f"one sample of {self.height}x{self.width}x{self.channels} {self.dtype} is "
                             f"{self.pixel_bytes:,} bytes; at most {MAX_SAMPLE_BYTES:,} (1 GiB) is supported")
        if self.payload != "tiff" and self.compression != "none":
            raise UsageError(f"--compression applies to TIFF payloads only, not {self.payload}; use --payload tiff")
        if ingested:  # the files are what they are: no quality, no codec limits on dtype or channels
            if self.quality is not None or self.compression != "none":
                raise UsageError("an ingested corpus has no --quality or --compression: its files are stored unchanged")
            return
        if self.payload in LOSSY:
            if self.quality is None:
                object.__setattr__(self, "quality", _codecs.DEFAULT_QUALITY)
            if not isinstance(self.quality, int) or isinstance(self.quality, bool) or not 1 <= self.quality <= 100:
                raise UsageError(f"quality must be an integer in 1..100, got {self.quality!r}")
        elif self.quality is not None:
            raise UsageError(f"--quality applies to lossy payloads ({', '.join(LOSSY)}), not {self.payload}")
        info = _codecs.CODECS[_codecs.codec_id(self.payload, self.compression)]
        if (why := info.refusal(self.dtype, self.channels)) is not None:
            raise UsageError(why)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)

    @property
    def variable(self) -> bool:
        """True when samples have shapes of their own (a size distribution, an ingested source)."""
        return self.sizes is not None or self.source is not None

    @functools.cached_property
    def size_dist(self):
        """The parsed distribution (generator.sizes.SizeDist), or None for a fixed shape."""
        from .sizes import load

        return None if self.sizes is None else load(self.sizes)

    def sample_shape(self, index: int) -> tuple[int, int, int]:
        """(H, W, C) of sample `index`: a pure function of (seed, index); `shape` when fixed."""
        if self.source is not None:
            raise UsageError("an ingested corpus's shapes are its files': read them from the manifest")
        if self.sizes is None:
            return self.shape
        h, w = self.size_dist.shape(self.seed, index)
        return h, w, self.channels

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype).newbyteorder("<")

    @property
    def pixel_bytes(self) -> int:
        """Bytes of pixels in one sample (what the presets' sizes count); with a size distribution,
        of the largest sample (the bound)."""
        return self.height * self.width * self.channels * self.np_dtype.itemsize

    @property
    def total_pixel_bytes(self) -> int:
        return self.pixel_bytes * self.count

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        for name, default in _OPTIONAL.items():
            if out[name] == default:
                del out[name]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "Spec":
        if not isinstance(data, dict):
            raise UsageError(f"a spec is a JSON object of fields, got {type(data).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise UsageError(f"unknown spec fields: {', '.join(sorted(unknown))}")
        return cls(**data)

    def same_corpus(self, other: "Spec") -> bool:
        """True when both specs produce the same bytes (the preset's name is only a label)."""
        return dataclasses.replace(self, preset=None) == dataclasses.replace(other, preset=None)


def preset_spec(name: str, **overrides) -> Spec:
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)} (see --list-presets)")
    h, w, c, dtype, _ = PRESETS[name]
    return Spec(height=h, width=w, channels=c, dtype=dtype, preset=name, **overrides)


def parse_shape(text: str) -> tuple[int, int, int]:
    """'HxWxC' (or 'HxW' for one channel) -> (H, W, C)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text or "")
    if not m:
        raise UsageError(f"bad --shape {text!r}: expected HxWxC, e.g. 28x28x1 or 1080x1920x3")
    h, w, c = int(m[1]), int(m[2]), int(m[3] or 1)
    if h <= 0 or w <= 0 or c not in (1, 3, 4):
        raise UsageError(f"bad --shape {text!r}: height and width must be positive, channels 1, 3 or 4")
    return h, w, c
