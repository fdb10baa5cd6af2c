"""--like SRC: a synthetic spec with the statistics of an existing image folder.

`fit(src, count, seed)` looks at up to SAMPLE of SRC's files (an ImageFolder tree or a `path
label` list, as generator.ingest reads them; chosen evenly over SRC's order, so every class is
seen), decodes each once (bad ones are counted and left out; one this install cannot decode, a
16-bit RGB PNG without pyspng or imagecodecs, is fitted from its header; one whose header says it
decodes past 1 GiB is refused by name, never decoded), and fits:

- the codec: the most common format among them; for JPEG its quality, estimated from the
  quantization tables (Pillow's `im.quantization`) as the IJG quality whose luminance and
  chrominance tables are nearest (libjpeg-turbo encodes those tables exactly, so a file made by
  libjpeg at quality q is estimated as q); TIFF: its compression (none, deflate, LZW, zstd);
  WebP: its quality cannot be read from the file, so the default (90) is used and said;
- channels and dtype: the most common among them (with a format that cannot hold them the
  codec wins: 16-bit JPEG does not exist);
- shapes: the empirical list of the sampled (height, width) in sampling order (generator.sizes'
  list: sample i takes shape i mod n), or fixed when they are all one shape;
- the class count: SRC's.

A fit this install could not read back (16-bit RGB or RGBA PNG without pyspng or imagecodecs)
is refused there, before anything is written, in one line naming the extra that installs the
decoder; a TIFF compression without its library (LZW, zstd without imagecodecs) is fitted as
deflate instead, and said.

Content is `photo` (natural-image statistics), so encoded sizes follow from codec, quality and
shape the way a photograph's do. How busy a seed's few scenes are varies (a probe of imagenet-like
JPEGs at one quality gave 13.5 to 20 kB a file over eight seeds), so the seed is calibrated: of
CANDIDATES seeds derived from --seed (the first is --seed itself), the one whose first PROBE
samples encode nearest the same-shaped source files' mean size is used (the spec records it; the
same command always picks the same one). Bounding shapes above CALIBRATE_MAX_PIXELS skip this
(their scenes take seconds each) and say so. `summary()` is the one line the CLI prints.
"""

from __future__ import annotations

import io
import os
from collections import Counter
from dataclasses import dataclass

import numpy as np

from . import codecs as formats
from .errors import UsageError, quote
from .ingest import NotReadableHere, TooLarge, examine, folder_files, list_files
from .sizes import MAX_LIST, MAX_SIDE, SizeDist
from .spec import Spec

SAMPLE = 300  # files looked at, at most
CANDIDATES = 16  # seeds tried for the byte-size calibration
PROBE = 32  # samples encoded per candidate seed
CALIBRATE_MAX_PIXELS = 16 << 20  # bounding shapes above this many pixels are not calibrated
_TIFF_COMPRESSION = {1: "none", 8: "deflate", 32946: "deflate", 5: "lzw", 50000: "zstd"}


@dataclass(frozen=True)
class Fit:
    spec: Spec
    seen: int  # files examined
    total: int  # files in SRC
    bad: int  # of those examined, not usable
    mean_bytes: float  # the examined files' mean size
    shapes: tuple  # the examined (h, w)
    note: str  # how the quality was found
    calibration: str = ""  # how the seed was chosen

    def summary(self, src) -> str:
        s, hw = self.spec, np.array(self.shapes, float)
        kind = "fixed" if s.sizes is None else f"empirical list of {len(set(self.shapes))} distinct"
        codec = s.payload + (f" quality {s.quality} ({self.note})" if s.quality else "") + (
            f" {s.compression}" if s.compression != "none" else "") + (f" ({self.note})" if self.note and not s.quality
                                                                       else "")
        return (f"--like {src}: fitted from {self.seen:,} of {self.total:,} files ({self.bad} bad): {codec}, "
                f"{s.channels} channel(s) {s.dtype}, shapes {kind} (mean {hw[:, 0].mean():.0f}x{hw[:, 1].mean():.0f}, "
                f"std {hw[:, 0].std():.0f}x{hw[:, 1].std():.0f}, at most {s.height}x{s.width}), "
                f"{s.num_classes} classes, source mean {self.mean_bytes:,.0f} B/file; content photo, {self.calibration}")


_IJG_TABLES: dict[int, tuple] = {}


def _ijg_tables(quality: int) -> tuple:
    """Pillow's quantization tables (luminance, chrominance) for an IJG quality, as it reports them."""
    if quality not in _IJG_TABLES:
        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (16, 16)).save(buf, "JPEG", quality=quality)
        with Image.open(buf) as im:
            q = im.quantization
        _IJG_TABLES[quality] = tuple(tuple(q[k]) for k in sorted(q))
    return _IJG_TABLES[quality]


def jpeg_quality(payload) -> int:
    """The IJG quality (1..100) whose tables are nearest this JPEG's (sum of absolute differences)."""
    from PIL import Image

    with Image.open(io.BytesIO(payload)) as im:
        q = im.quantization
    got = [np.array(q[k], np.int64) for k in sorted(q)][:2]

    def distance(quality: int) -> int:
        want = _ijg_tables(quality)
        return sum(int(np.abs(g - np.array(w, np.int64)).sum()) for g, w in zip(got, want))

    return min(range(1, 101), key=lambda qual: (distance(qual), -qual))


def _tiff_compression(payload) -> str:
    import tifffile

    with tifffile.TiffFile(io.BytesIO(bytes(payload))) as tif:
        return _TIFF_COMPRESSION.get(int(tif.pages[0].compression), "none")


def fit(src, count: int, seed: int = 0) -> Fit:
    """The spec of `count` synthetic samples like SRC's (see the module docstring)."""
    src = os.fspath(src)
    if not os.path.exists(src):
        raise UsageError(f"--like {src}: no such file or directory")
    files, classes = folder_files(src) if os.path.isdir(src) else list_files(src)
    if not files:
        raise UsageError(f"--like {src} holds no image files (an ImageFolder tree is SRC/<class>/<image>, a list is "
                         f"`path label` lines)")
    n = min(SAMPLE, len(files), MAX_LIST)
    picks = np.unique(np.linspace(0, len(files) - 1, n).round().astype(int))
    found, bad = [], 0
    for k in picks.tolist():
        try:
            data, fmt, shape, dtype = examine(files[k][0])
        except NotReadableHere as exc:  # whole, as far as its header says; its statistics count
            data, fmt, shape, dtype = exc.facts
        except TooLarge as exc:  # a synthetic corpus of its shape could not be made either: named, not counted bad
            raise UsageError(f"--like {quote(src)}: {quote(files[k][0])}: {exc}; remove such files from the "
                             f"folder") from None
        except ValueError:
            bad += 1
            continue
        found.append((data, fmt, shape, dtype))
        if max(shape[0], shape[1]) > MAX_SIDE:
            raise UsageError(f"--like {quote(src)}: {quote(files[k][0])} is {shape[0]:,}x{shape[1]:,} pixels, a side "
                             f"over the {MAX_SIDE:,} a synthetic corpus allows (WebP's largest); remove or downscale "
                             f"such files, or ingest the folder as it is (python -m generator ingest)")
    if not found:
        raise UsageError(f"--like {src}: none of the {len(picks)} files looked at could be decoded; check them with "
                         f"python -m generator ingest {src} --out DIR")
    fmt = Counter(f for _, f, _, _ in found).most_common(1)[0][0]
    ours = [x for x in found if x[1] == fmt]
    channels = Counter(s[2] for _, _, s, _ in ours).most_common(1)[0][0]
    dtype = Counter(d for _, _, _, d in ours).most_common(1)[0][0]
    if channels == 2:  # gray + alpha: synthesized as RGBA would double the bytes; gray is nearer
        channels = 1
    info = formats.CODECS[fmt]
    if dtype not in info.dtypes:
        dtype = info.dtypes[0]
    if channels not in info.channels:
        channels = 3 if 3 in info.channels else info.channels[0]
    quality, compression, note = None, "none", ""
    if fmt == "jpeg":
        qs = [jpeg_quality(d) for d, _, _, _ in ours]
        quality = int(np.median(qs))
        note = "from quantization tables" + (f", median of {min(qs)}..{max(qs)}" if min(qs) != max(qs) else "")
    elif fmt == "webp":
        quality, note = formats.DEFAULT_QUALITY, "WebP does not record it: the default"
    elif fmt == "tiff":
        compression = Counter(_tiff_compression(d) for d, _, _, _ in ours).most_common(1)[0][0]
        if compression in ("lzw", "zstd") and formats.CODECS[f"tiff-{compression}"].missing():
            note = f"{compression} needs imagecodecs, not installed: deflate instead"
            compression = "deflate"
    if (why := formats.CODECS[formats.codec_id(fmt, compression)].missing(dtype, channels)) is not None:
        raise UsageError(f"--like {src}: its files are fitted as {channels}-channel {dtype} {fmt}, which this install "
                         f"could not read back: {why}")
    shapes = tuple((s[0], s[1]) for _, _, s, _ in found)
    sizes = None if len(set(shapes)) == 1 else SizeDist("list", shapes).text
    h, w = shapes[0]
    spec = Spec(height=h, width=w, channels=channels, dtype=dtype, count=count, seed=seed, content="photo",
                payload=fmt, compression=compression, quality=quality, num_classes=max(1, len(classes)), sizes=sizes)
    spec, calibration = calibrate(spec, [len(d) for d, _, _, _ in found])
    return Fit(spec, len(picks), len(files), bad, float(np.mean([len(d) for d, _, _, _ in found])), shapes, note,
               calibration)


def calibrate(spec: Spec, source_sizes: list[int]) -> tuple[Spec, str]:
    """(spec with the candidate seed whose probe's mean payload size is nearest the source's, a note)."""
    import dataclasses

    from .pool import produce
    from .synth import _photo_scenes

    if spec.height * spec.width > CALIBRATE_MAX_PIXELS:
        return spec, f"seed {spec.seed} (not calibrated: shapes up to {spec.height}x{spec.width} are too large to probe)"
    probe = range(min(PROBE, spec.count))
    want = float(np.mean([source_sizes[k % len(source_sizes)] for k in probe]))
    best = None
    for k in range(CANDIDATES):
        seed = spec.seed if k == 0 else (spec.seed + k * 0x9E3779B97F4A7C15) % (1 << 63)
        candidate = dataclasses.replace(spec, seed=seed, count=max(spec.count, len(probe)))
        got = float(np.mean([len(p) for p in produce(candidate, probe)[0]]))
        _photo_scenes.cache_clear()  # a candidate's scenes are not needed again
        if best is None or abs(got - want) < abs(best[1] - want):
            best = (seed, got)
    seed, got = best
    return dataclasses.replace(spec, seed=seed), (f"seed {seed} of {CANDIDATES} candidates (probe {got:,.0f} B/file vs "
                                                  f"the same-shaped source files' {want:,.0f})")
