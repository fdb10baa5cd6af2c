"""Image payload formats: PNG (8 and 16 bit), JPEG and WebP (8 bit), each an encoder and a decoder.

Contracts (generator.codec's registry names them by id, and Codec calls them):

- `encode_*(pixels, ...) -> bytes`: a deterministic function of the pixels and the settings, for
  one version of the library that encodes (the golden files under tests/golden/codecs/ pin the
  bytes; a library upgrade that changes them fails tests/test_codecs.py, and a corpus written by
  the other version then fails its manifest's crc32 check on regeneration instead of silently
  mixing bytes).
- `decode_*(payload, channels, dtype) -> (H, W, C) array` of that dtype, or ValueError (one
  line) for a payload that is not that format, is damaged, or holds another channel count or
  bit depth than asked for. Decoded arrays are fresh and writable.

PNG is encoded here (numpy filters + zlib), so 16-bit colour PNG needs no library beyond the
standard one and the bytes depend only on zlib: each row takes the PNG filter (None, Sub, Up,
Average, Paeth) with the least sum of absolute values, libpng's heuristic, at zlib level 6,
libpng's default. JPEG and WebP are encoded by Pillow (libjpeg-turbo, libwebp).

Decoders: Pillow by default; with the `codecs` extra installed (pip install -e '.[codecs]'),
simplejpeg for JPEG and pyspng for PNG, measured faster by bench/speed/codec.py (the figures
are in docs/lab/2026-12-01-codecs-and-photo-content.md). Either gives identical pixels (tests/test_codecs.py checks it), so which one
ran never changes a decoded image, only the time. Pillow cannot hold 16-bit colour: such PNGs
need pyspng or imagecodecs, and are refused in one line without them.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np

from .libraries import install_hint
from .libraries import missing as missing_libraries
from .libraries import present as have

PNG_LEVEL = 6  # zlib level of PNG's IDAT (libpng's default)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
EXTRA = install_hint("codecs")


# -- PNG ---------------------------------------------------------------------------------------------

_COLOR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type (gray, gray+alpha, RGB, RGBA)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def png_filter(rows: np.ndarray, bpp: int) -> np.ndarray:
    """(H, 1 + stride) uint8: each row of `rows` ((H, stride) uint8, big-endian samples) prefixed
    by the filter type that gives it the least sum of |filtered byte as int8|, then filtered."""
    h, stride = rows.shape
    x = rows.astype(np.int16)
    left = np.zeros_like(x)
    left[:, bpp:] = x[:, :-bpp]
    up = np.zeros_like(x)
    up[1:] = x[:-1]
    upleft = np.zeros_like(x)
    upleft[1:, bpp:] = x[:-1, :-bpp]
    p = left + up - upleft
    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
    candidates = np.stack([x, x - left, x - up, x - ((left + up) >> 1), x - paeth]).astype(np.uint8)
    cost = np.abs(candidates.view(np.int8).astype(np.int32)).sum(axis=2)  # (5, H)
    best = np.argmin(cost, axis=0)  # the first of equal costs: None before Sub before ...
    out = np.empty((h, 1 + stride), np.uint8)
    out[:, 0] = best
    out[:, 1:] = candidates[best, np.arange(h)]
    return out


def encode_png(pixels: np.ndarray) -> bytes:
    """A PNG of (H, W, C) uint8 or uint16 pixels, C in 1..4 (gray, gray+alpha, RGB, RGBA)."""
    h, w, c = pixels.shape
    depth = 8 * pixels.dtype.itemsize
    if depth not in (8, 16) or pixels.dtype.kind != "u":
        raise ValueError(f"PNG holds uint8 or uint16, not {pixels.dtype}")
    data = np.ascontiguousarray(pixels, pixels.dtype.newbyteorder(">"))
    rows = data.view(np.uint8).reshape(h, w * c * pixels.dtype.itemsize)
    body = zlib.compress(png_filter(rows, c * pixels.dtype.itemsize).tobytes(), PNG_LEVEL)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, _COLOR_TYPE[c], 0, 0, 0)
    return PNG_MAGIC + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def png_header(payload) -> tuple[int, int, int, int]:
    """(height, width, channels, bit depth) from a PNG's IHDR, or ValueError."""
    head = bytes(payload[:33])
    if head[:8] != PNG_MAGIC or head[12:16] != b"IHDR" or len(head) < 33:
        raise ValueError("not a PNG (bad signature or no IHDR)")
    w, h, depth, ctype = struct.unpack(">IIBB", head[16:26])
    channels = {v: k for k, v in _COLOR_TYPE.items()}.get(ctype)
    if channels is None:
        raise ValueError(f"PNG colour type {ctype} (palette) is not a pixel array layoutbench decodes")
    return h, w, channels, depth


def png_decoder() -> str:
    return "pyspng" if have("pyspng") else "pillow"


def decode_png(payload, channels: int, dtype: np.dtype, decoder: str | None = None) -> np.ndarray:
    h, w, c, depth = png_header(payload)
    if c != channels or depth != 8 * dtype.itemsize:
        raise ValueError(f"PNG holds {h}x{w}x{c} {depth}-bit, expected {channels} channels of {dtype}")
    decoder = decoder or png_decoder()
    try:
        if decoder == "pyspng" and c != 2:  # pyspng 0.1.4 refuses 8-bit gray+alpha
            import pyspng

            img = np.asarray(pyspng.load(bytes(payload)))
            if depth == 16 and img.ndim == 3 and img.shape[2] == c + 1:  # it adds alpha to 16-bit gray/RGB
                img = img[:, :, :c]
        elif depth == 16 and c > 1:
            if not have("imagecodecs"):
                raise ValueError(f"a 16-bit {'RGB' if c == 3 else 'RGBA' if c == 4 else 'gray+alpha'} PNG needs "
                                 f"pyspng or imagecodecs to decode (Pillow has no 16-bit colour): {EXTRA}")
            import imagecodecs

            img = np.asarray(imagecodecs.png_decode(bytes(payload)))
        else:
            from PIL import Image

            with Image.open(io.BytesIO(payload)) as im:
                img = np.asarray(im)
    except ValueError:
        raise
    except Exception as exc:  # the libraries raise many kinds for damaged data
        raise ValueError(f"undecodable PNG: {' '.join(str(exc).split())}") from None
    return _shaped(img, h, w, c, dtype, "PNG")


def _shaped(img: np.ndarray, h: int, w: int, c: int, dtype: np.dtype, what: str) -> np.ndarray:
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape != (h, w, c) or img.dtype.kind != "u" or img.dtype.itemsize != dtype.itemsize:
        raise ValueError(f"{what} decoded to {img.shape} {img.dtype}, expected {(h, w, c)} {dtype}")
    img = img.astype(dtype, copy=False)
    return img if img.flags.writeable and img.flags.c_contiguous else np.ascontiguousarray(img).copy()


# -- JPEG ---------------------------------------------------------------------------------------------

JPEG_SUBSAMPLING = 2  # Pillow's code for 4:2:0 chroma subsampling, what cameras and ImageNet use


def encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    """A baseline JPEG (libjpeg-turbo via Pillow) of (H, W, 1|3) uint8 pixels, 4:2:0 for colour."""
    from PIL import Image

    h, w, c = pixels.shape
    im = Image.fromarray(np.ascontiguousarray(pixels[:, :, 0] if c == 1 else pixels), "L" if c == 1 else "RGB")
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, subsampling=JPEG_SUBSAMPLING, optimize=False, progressive=False)
    return buf.getvalue()


def jpeg_decoder() -> str:
    return "simplejpeg" if have("simplejpeg") else "pillow"


def jpeg_size(payload) -> tuple[int, int, int]:
    """(height, width, components) from a JPEG's first SOF marker, or ValueError."""
    data = bytes(payload)
    if data[:3] != JPEG_MAGIC:
        raise ValueError("not a JPEG (bad magic bytes)")
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise ValueError("damaged JPEG (no marker where one belongs)")
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 10 > len(data):
                break
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return h, w, data[i + 9]
        i += 2 + length
    raise ValueError("damaged JPEG (no frame header)")


def decode_jpeg(payload, channels: int, dtype: np.dtype, decoder: str | None = None) -> np.ndarray:
    h, w, c = jpeg_size(payload)
    if c != channels:
        raise ValueError(f"JPEG holds {c} components, expected {channels}")
    decoder = decoder or jpeg_decoder()
    try:
        if decoder == "simplejpeg":
            import simplejpeg

            # islow IDCT and fancy upsampling: libjpeg's defaults, so the pixels equal Pillow's
            img = simplejpeg.decode_jpeg(bytes(payload), colorspace="GRAY" if c == 1 else "RGB",
                                         fastdct=False, fastupsample=False)
        else:
            from PIL import Image

            with Image.open(io.BytesIO(payload)) as im:
                im.load()
                img = np.asarray(im)
    except Exception as exc:
        raise ValueError(f"undecodable JPEG: {' '.join(str(exc).split())}") from None
    return _shaped(img, h, w, c, dtype, "JPEG")


# -- WebP ---------------------------------------------------------------------------------------------

WEBP_METHOD = 4  # libwebp's default effort (0 fast .. 6 small)


def encode_webp(pixels: np.ndarray, quality: int) -> bytes:
    """A lossy WebP (libwebp via Pillow) of (H, W, 1|3|4) uint8 pixels. WebP has no gray: one
    channel is stored as RGB with R = G = B, and decoded back to its first channel."""
    from PIL import Image

    c = pixels.shape[2]
    arr = np.ascontiguousarray(np.repeat(pixels, 3, axis=2) if c == 1 else pixels)
    im = Image.fromarray(arr, "RGBA" if c == 4 else "RGB")
    buf = io.BytesIO()
    im.save(buf, "WEBP", quality=quality, method=WEBP_METHOD, lossless=False, exact=False)
    return buf.getvalue()


def decode_webp(payload, channels: int, dtype: np.dtype, decoder: str | None = None) -> np.ndarray:
    head = bytes(payload[:16])
    if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        raise ValueError("not a WebP (bad RIFF header)")
    from PIL import Image

    try:
        with Image.open(io.BytesIO(payload)) as im:
            im.load()
            img = np.asarray(im.convert("RGBA" if channels == 4 else "RGB"))
    except Exception as exc:
        raise ValueError(f"undecodable WebP: {' '.join(str(exc).split())}") from None
    if channels == 1:
        img = img[:, :, :1]
    return _shaped(img, img.shape[0], img.shape[1], channels, dtype, "WebP")


# -- the registry's facts -------------------------------------------------------------------------------


class CodecInfo:
    """One registry entry: an id, what it holds, what it needs. Encoding and decoding go through
    generator.codec.Codec, which dispatches on the id."""

    def __init__(self, id: str, description: str, extension: str, dtypes=("uint8", "uint16"),
                 channels=(1, 3, 4), lossy: bool = False, libraries=(), fixed: bool = False, decoders=None):
        self.id, self.description, self.extension = id, description, extension
        self.dtypes, self.channels, self.lossy = tuple(dtypes), tuple(channels), lossy
        self.libraries = tuple(libraries)  # needed to encode and decode, beyond the base install
        self.fixed = fixed  # every payload of a shape has one size (Codec.fixed_size)
        # (dtype, channels) -> (what, libraries): pixels that only one of those libraries decodes
        self.decoders = dict(decoders or {})

    def refusal(self, dtype: str, channels: int) -> str | None:
        """None when this codec holds (dtype, channels); else one line naming the codecs that do."""
        if dtype not in self.dtypes:
            others = [c.id for c in CODECS.values() if dtype in c.dtypes and channels in c.channels]
            return (f"{self.id} holds {'/'.join(self.dtypes)} pixels only, not {dtype}; "
                    f"{dtype} with {channels} channel(s) goes in: {', '.join(others)}")
        if channels not in self.channels:
            others = [c.id for c in CODECS.values() if dtype in c.dtypes and channels in c.channels]
            return (f"{self.id} holds {'/'.join(map(str, self.channels))} channels, not {channels}; "
                    f"{channels}-channel {dtype} goes in: {', '.join(others)}")
        return None

    def missing(self, dtype: str | None = None, channels: int | None = None) -> str | None:
        """None when this install can write and read back payloads of (dtype, channels) (any, when
        not given); else one line saying what to install."""
        if (why := missing_libraries(f"the {self.id} codec", self.libraries, "codecs")) is not None:
            return why
        what, decoders = self.decoders.get((dtype, channels), (None, ()))
        if decoders and not any(have(m) for m in decoders):
            absent = "it is not installed" if len(decoders) == 1 else "neither is installed"
            return f"{what} needs {' or '.join(decoders)} to decode ({absent}; Pillow cannot): {install_hint('codecs')}"
        return None

    def partly(self) -> str | None:
        """None when every (dtype, channels) it holds reads back here; else one line naming those that do not."""
        lines = [self.missing(dtype, channels) for dtype, channels in self.decoders]
        return "; ".join(dict.fromkeys(w for w in lines if w)) or None

    def __repr__(self) -> str:
        return f"<codec {self.id}>"


CODECS: dict[str, CodecInfo] = {c.id: c for c in (
    CodecInfo("raw", "bare pixels, little-endian, no header", "raw", fixed=True),
    CodecInfo("tiff", "baseline TIFF, one strip, header first (read in place)", "tif", fixed=True),
    CodecInfo("tiff-deflate", "TIFF, one deflate strip (zlib level 1)", "tif"),
    CodecInfo("tiff-lzw", "TIFF, one LZW strip (imagecodecs)", "tif", libraries=("imagecodecs",)),
    CodecInfo("tiff-zstd", "TIFF, one zstd strip (imagecodecs, level 3)", "tif", libraries=("imagecodecs",)),
    CodecInfo("png", "PNG, adaptive row filters, zlib level 6", "png", decoders={
        ("uint16", 2): ("a 16-bit gray+alpha PNG", ("imagecodecs",)),
        ("uint16", 3): ("a 16-bit RGB PNG", ("pyspng", "imagecodecs")),
        ("uint16", 4): ("a 16-bit RGBA PNG", ("pyspng", "imagecodecs"))}),
    CodecInfo("jpeg", "baseline JPEG, 4:2:0 (libjpeg-turbo via Pillow), --quality", "jpg", dtypes=("uint8",),
              channels=(1, 3), lossy=True),
    CodecInfo("webp", "lossy WebP (libwebp via Pillow), --quality", "webp", dtypes=("uint8",), lossy=True),
)}
# ingested corpora of several formats only (python -m generator ingest): not a codec anything encodes
MIXED = CodecInfo("mixed", "ingested files of several formats (TIFF, PNG, JPEG, WebP), each told by its bytes", "img")


def codec_info(id: str) -> CodecInfo:
    """The registry entry of a codec id, or MIXED for an ingested corpus of several formats."""
    return MIXED if id == "mixed" else CODECS[id]

PAYLOADS = ("tiff", "raw", "png", "jpeg", "webp")
TIFF_COMPRESSIONS = ("none", "deflate", "lzw", "zstd")
DEFAULT_QUALITY = 90


def codec_id(payload: str, compression: str = "none") -> str:
    return payload if compression == "none" else f"{payload}-{compression}"


def sniff(payload) -> str | None:
    """The format of an image file's bytes by its magic number: tiff, png, jpeg, webp, or None."""
    head = bytes(payload[:12])
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:8] == PNG_MAGIC:
        return "png"
    if head[:3] == JPEG_MAGIC:
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


# -- ingested files: any of the formats above, told by their bytes ---------------------------------------

FORMATS = ("tiff", "png", "jpeg", "webp")
_DTYPE_OF_DEPTH = {8: "uint8", 16: "uint16"}


def probe(payload) -> tuple[str, tuple[int, int, int], str]:
    """(format, (H, W, C), dtype) of an image file's bytes, from its header (format by content, not
    name), or ValueError saying why layoutbench cannot take it (not an image, palette, CMYK, ...)."""
    fmt = sniff(payload)
    if fmt is None:
        raise ValueError("not a TIFF, PNG, JPEG or WebP image (by its first bytes)")
    if fmt == "png":
        h, w, c, depth = png_header(payload)
        if depth not in _DTYPE_OF_DEPTH:
            raise ValueError(f"a {depth}-bit PNG; layoutbench holds 8- and 16-bit pixels")
        return fmt, (h, w, c), _DTYPE_OF_DEPTH[depth]
    if fmt == "jpeg":
        h, w, c = jpeg_size(payload)
        if c not in (1, 3):
            raise ValueError(f"a JPEG of {c} components (CMYK?); layoutbench holds gray and RGB JPEGs")
        return fmt, (h, w, c), "uint8"
    if fmt == "webp":
        from PIL import Image

        try:
            with Image.open(io.BytesIO(payload)) as im:
                mode, (w, h) = im.mode, im.size
        except Exception as exc:
            raise ValueError(f"undecodable WebP: {' '.join(str(exc).split())}") from None
        return fmt, (h, w, 4 if "A" in mode else 3), "uint8"
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(bytes(payload))) as tif:
            page = tif.pages[0]
            shape, dtype = tuple(page.shape), np.dtype(page.dtype)
    except Exception as exc:
        raise ValueError(f"undecodable TIFF: {' '.join(str(exc).split())}") from None
    if len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) != 3 or shape[2] > 4 or dtype.kind != "u" or dtype.itemsize not in (1, 2):
        raise ValueError(f"a TIFF of shape {shape} {dtype}; layoutbench holds (H, W, 1..4) uint8 or uint16")
    return fmt, shape, f"uint{8 * dtype.itemsize}"


def decode_image(payload, channels: int, dtype: np.dtype) -> np.ndarray:
    """Pixels of an image file of any format above (told by its bytes), as (H, W, channels) of
    `dtype`, or ValueError (one line)."""
    fmt = sniff(payload)
    if fmt == "png":
        return decode_png(payload, channels, dtype)
    if fmt == "jpeg":
        return decode_jpeg(payload, channels, dtype)
    if fmt == "webp":
        return decode_webp(payload, channels, dtype)
    if fmt == "tiff":
        import tifffile

        try:
            img = np.asarray(tifffile.imread(io.BytesIO(bytes(payload)), key=0))
        except Exception as exc:
            raise ValueError(f"undecodable TIFF: {' '.join(str(exc).split())}") from None
        return _shaped(img, img.shape[0], img.shape[1] if img.ndim > 1 else 0, channels, dtype, "TIFF")
    raise ValueError("not a TIFF, PNG, JPEG or WebP image (by its first bytes)")
