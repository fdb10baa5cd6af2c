"""The payload codec: how one sample's pixels become the stored bytes, and back.

The registry (generator.codecs.CODECS) names every codec by id: raw, tiff, tiff-deflate,
tiff-lzw, tiff-zstd, png, jpeg, webp; `Codec(spec)` is the one object the writers and readers
use, whatever the id: `encode(pixels) -> payload`, `decode(payload) -> (H, W, C) array`,
`fixed_size` (the size of every payload, or None when sizes vary), `header` (the bytes every
fixed-size payload starts with), `lossy` (decode(encode(x)) is not x: the stored payload is
what is bit-exact, and the pixels a reader must return are decode(payload)).

Payloads are either bare pixels (`raw`), a baseline TIFF (`tiff`), or an image file format
(generator.codecs: PNG, JPEG, WebP). Our TIFFs are one strip, little-endian, with the IFD
*before* the pixels, so for an uncompressed corpus every payload is one fixed header followed
by the pixels: the encoder writes a precomputed header, and the decoder checks that header and
views the pixels in place with np.frombuffer. A compressed TIFF of ours (deflate, LZW, zstd) is
the same header with the strip compressed: the decoder recognises the header and decompresses
the strip directly. Anything else (a foreign TIFF) is decoded by tifffile.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np

from . import codecs as formats
from .errors import UsageError
from .spec import Spec

_SHORT, _LONG, _RATIONAL = 3, 4, 5
_ALIGN = 16  # pixel data starts at a multiple of this, so uint16 views are aligned
SMALL = 1 << 16  # payloads below this are returned as bytes
DEFLATE_LEVEL = 1  # zlib level 6 is ~5x slower for a few % smaller image-like payloads
ZSTD_LEVEL = 3  # zstd's default
TIFF_COMPRESSION = {"none": 1, "lzw": 5, "deflate": 8, "zstd": 50000}  # TIFF tag 259 values


def codec_libraries() -> tuple[str, ...]:
    """What decoding may import (pre-imported by the bench; versions recorded): the base libraries,
    and the optional faster decoders that import here."""
    return ("tifffile", "PIL") + tuple(m for m in ("simplejpeg", "pyspng", "imagecodecs") if formats.have(m))


def tiff_header(height: int, width: int, channels: int, itemsize: int,
                strip_bytes: int, deflate: bool = False, compression: str | None = None) -> bytes:
    """A baseline TIFF header + IFD whose single strip starts right after it (`compression`:
    none, deflate, lzw or zstd; `deflate=True` is compression="deflate")."""
    code = TIFF_COMPRESSION[compression or ("deflate" if deflate else "none")]
    bits = 8 * itemsize
    n_tags = 14 if channels == 4 else 13  # must match the tags listed below
    ifd_size = 2 + 12 * n_tags + 4
    extra = 8 + ifd_size  # where out-of-line values go
    bps_at = extra
    extra += 2 * channels if channels > 2 else 0
    xres_at = extra
    yres_at = extra + 8
    extra += 16
    pixels_at = -(-extra // _ALIGN) * _ALIGN

    def tag(code, typ, count, value):
        if typ == _SHORT and count == 1:
            return struct.pack("<HHIHH", code, typ, count, value, 0)
        return struct.pack("<HHII", code, typ, count, value)

    tags = [
        tag(256, _LONG, 1, width),
        tag(257, _LONG, 1, height),
        tag(258, _SHORT, channels, bps_at) if channels > 2 else tag(258, _SHORT, 1, bits),
        tag(259, _SHORT, 1, code),
        tag(262, _SHORT, 1, 1 if channels == 1 else 2),  # BlackIsZero or RGB
        tag(273, _LONG, 1, pixels_at),
        tag(277, _SHORT, 1, channels),
        tag(278, _LONG, 1, height),
        tag(279, _LONG, 1, strip_bytes),
        tag(282, _RATIONAL, 1, xres_at),
        tag(283, _RATIONAL, 1, yres_at),
        tag(284, _SHORT, 1, 1),  # chunky (interleaved) samples
    ]
    if channels == 4:
        tags.append(tag(338, _SHORT, 1, 2))  # ExtraSamples: unassociated alpha
    tags.append(tag(296, _SHORT, 1, 1))  # ResolutionUnit: none
    tags.sort(key=lambda t: struct.unpack_from("<H", t)[0])  # TIFF wants tags in code order
    assert len(tags) == n_tags
    head = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(tags)) + b"".join(tags) + b"\0\0\0\0"
    if channels > 2:
        head += struct.pack(f"<{channels}H", *([bits] * channels))
    head += struct.pack("<IIII", 1, 1, 1, 1)
    return head + b"\0" * (pixels_at - len(head))


def _compress_strip(compression: str, data: np.ndarray) -> bytes:
    if compression == "deflate":
        return zlib.compress(data, DEFLATE_LEVEL)
    import imagecodecs

    if compression == "lzw":
        return bytes(imagecodecs.lzw_encode(data.tobytes()))
    return bytes(imagecodecs.zstd_encode(data.tobytes(), level=ZSTD_LEVEL))


def _decompress_strip(compression: str, body) -> bytes:
    if compression == "deflate":
        return zlib.decompress(body)
    import imagecodecs

    if compression == "lzw":
        return bytes(imagecodecs.lzw_decode(bytes(body)))
    return bytes(imagecodecs.zstd_decode(bytes(body)))


class Codec:
    """encode(pixels) -> payload bytes; decode(payload) -> (H, W, C) array. One per spec.

    `kind` is the codec's registry id (generator.codecs.CODECS); `info` its entry. Constructing
    one for a codec whose library is missing (tiff-lzw, tiff-zstd without imagecodecs) is a
    UsageError naming the extra that installs it."""

    def __init__(self, spec: Spec):
        self.spec = spec
        self.shape = spec.shape
        self.dtype = spec.np_dtype
        self.kind = formats.codec_id(spec.payload, spec.compression)
        self.info = formats.codec_info(self.kind)
        self.lossy = self.info.lossy
        self.quality = spec.quality
        # an ingested corpus's dtype and channels are maxima over its samples, each of which the scan
        # checked on its own (generator.ingest): only the codec's libraries are asked for here
        held = (None, None) if spec.source is not None else (spec.dtype, spec.channels)
        if (why := self.info.missing(*held)) is not None:
            raise UsageError(why)
        self.variable = spec.variable  # samples of their own shapes: decode(payload, shape) takes each
        self.ingested = spec.source is not None  # files' bytes: decode(payload, shape, dtype) by their format
        self.header = b""
        if spec.payload == "tiff" and spec.compression == "none" and not self.variable:
            self.header = tiff_header(*spec.shape, self.dtype.itemsize, spec.pixel_bytes)
        # a size distribution makes every codec's payloads vary in size (raw and TIFF too)
        self.fixed_size = spec.pixel_bytes + len(self.header) if self.info.fixed and not self.variable else None
        self._tiff_head = len(tiff_header(*spec.shape, self.dtype.itemsize, 0)) if spec.payload == "tiff" else 0

    def encode(self, pixels: np.ndarray):
        """The payload: bytes when small, else a memoryview of a numpy buffer (bytes-like, no extra copy)."""
        if self.ingested:
            raise ValueError("an ingested corpus's payloads are its source files; nothing is encoded")
        data = np.ascontiguousarray(pixels, dtype=self.dtype)
        if data.shape != self.shape and not (self.variable and data.ndim == 3 and data.shape[2] == self.shape[2]
                                             and data.shape[0] <= self.shape[0] and data.shape[1] <= self.shape[1]):
            raise ValueError(f"pixels of shape {data.shape}, the codec's spec has "
                             f"{'at most ' if self.variable else ''}{self.shape}")
        payload = self.spec.payload
        if payload == "raw":
            return data.tobytes()
        if payload == "png":
            return formats.encode_png(data)
        if payload == "jpeg":
            return formats.encode_jpeg(data, self.quality)
        if payload == "webp":
            return formats.encode_webp(data, self.quality)
        if self.spec.compression != "none":
            body = _compress_strip(self.spec.compression, data)
            return tiff_header(*data.shape, self.dtype.itemsize, len(body), compression=self.spec.compression) + body
        if self.variable:
            return tiff_header(*data.shape, self.dtype.itemsize, data.nbytes) + data.tobytes()
        if self.fixed_size < SMALL:
            return self.header + data.tobytes()
        buf, pixels = self.payload_buffer()
        pixels[...] = data
        return memoryview(buf)

    def reference(self, pixels: np.ndarray) -> tuple[bytes, np.ndarray]:
        """(payload, the pixels a reader must return for it): the pixels themselves for a lossless
        codec; decode(payload) for a lossy one (JPEG, WebP), where the payload is what is
        bit-exact and the decoded pixels are a function of it."""
        payload = self.encode(pixels)
        return payload, (np.array(self.decode(payload)) if self.lossy else pixels)

    def payload_buffer(self) -> tuple[np.ndarray, np.ndarray]:
        """A new fixed-size payload (1-D uint8, header already written) and the (H, W, C) view of
        its pixels, for making a sample in place. numpy, not bytearray: numpy asks for huge pages
        for large buffers, so filling a large payload takes no 4 KiB page fault per page."""
        if self.fixed_size is None:
            raise ValueError("compressed payloads have no fixed layout")
        buf = np.empty(self.fixed_size, np.uint8)
        h = len(self.header)
        buf[:h] = np.frombuffer(self.header, np.uint8)
        return buf, buf[h:].view(self.dtype).reshape(self.shape)

    def decode(self, payload, shape: tuple | None = None, dtype=None) -> np.ndarray:
        """The pixels; a view into `payload` on the fast path (copy it if you keep it past the buffer).
        `shape`: the (H, W, C) the payload must hold; by default the spec's (required for a raw
        payload of a size distribution; other payloads of one are checked against it when given).
        `dtype`: an ingested corpus's sample's own (default: the spec's)."""
        if not isinstance(payload, (bytes, bytearray)):  # numpy arrays, mmap slices, memoryviews
            payload = memoryview(payload).cast("B")
        if self.ingested:
            if shape is None:
                raise ValueError("a sample of an ingested corpus needs its shape (the manifest's) to decode")
            fmt = formats.sniff(payload)
            if self.spec.payload != "mixed" and fmt != self.spec.payload:
                raise ValueError(f"a {fmt or 'non-image'} payload in a corpus of {self.spec.payload} files")
            dt = np.dtype(dtype or self.dtype).newbyteorder("<")
            return self._checked(formats.decode_image(payload, shape[2], dt), (fmt or "image").upper(), tuple(shape))
        want = tuple(shape) if shape is not None else None if self.variable else self.shape
        if self.spec.payload == "raw":
            if want is None:
                raise ValueError("a raw payload of a corpus with a size distribution needs its shape to decode")
            n = want[0] * want[1] * want[2] * self.dtype.itemsize
            if len(payload) != n:
                raise ValueError(f"raw payload is {len(payload)} bytes, expected {n}")
            return np.frombuffer(payload, self.dtype).reshape(want)
        kind = self.spec.payload
        if kind == "png":
            return self._checked(formats.decode_png(payload, self.shape[2], self.dtype), "PNG", want)
        if kind == "jpeg":
            return self._checked(formats.decode_jpeg(payload, self.shape[2], self.dtype), "JPEG", want)
        if kind == "webp":
            return self._checked(formats.decode_webp(payload, self.shape[2], self.dtype), "WebP", want)
        h = len(self.header)
        if h and len(payload) == self.fixed_size and payload[:h] == self.header:
            return np.frombuffer(payload, self.dtype, offset=h).reshape(self.shape)
        if want is not None and want != self.shape and self.spec.compression == "none":  # ours, of its own shape
            head = tiff_header(*want, self.dtype.itemsize, want[0] * want[1] * want[2] * self.dtype.itemsize)
            if len(payload) == len(head) + want[0] * want[1] * want[2] * self.dtype.itemsize and payload[:len(head)] == head:
                return np.frombuffer(payload, self.dtype, offset=len(head)).reshape(want)
        if self.spec.compression != "none" and want is not None:
            h = len(tiff_header(*want, self.dtype.itemsize, 0))
            ours = tiff_header(*want, self.dtype.itemsize, max(0, len(payload) - h), compression=self.spec.compression)
            if len(payload) >= h and payload[:h] == ours:  # our one-strip layout: decompress the strip, no TIFF parser
                try:
                    raw = _decompress_strip(self.spec.compression, payload[h:])
                except Exception as exc:  # zlib.error, imagecodecs' errors
                    raise ValueError(f"undecodable TIFF strip ({self.spec.compression}): {exc}") from None
                n = want[0] * want[1] * want[2] * self.dtype.itemsize
                if len(raw) != n:
                    raise ValueError(f"TIFF strip decompresses to {len(raw)} bytes, expected {n}")
                return np.frombuffer(raw, self.dtype).reshape(want)
        return self._decode_tifffile(payload, want)

    def _checked(self, img: np.ndarray, what: str, want: tuple | None) -> np.ndarray:
        if want is not None and img.shape != want:
            raise ValueError(f"{what} holds {img.shape}, expected {want}")
        if want is None and (img.shape[0] > self.shape[0] or img.shape[1] > self.shape[1]):
            raise ValueError(f"{what} holds {img.shape}, larger than the corpus's bound {self.shape}")
        return img

    def _decode_tifffile(self, payload, want: tuple | None = None) -> np.ndarray:
        import tifffile

        if bytes(payload[:4]) not in (b"II*\x00", b"MM\x00*"):
            raise ValueError("not a TIFF (bad magic bytes)")
        try:
            img = tifffile.imread(io.BytesIO(bytes(payload)))
        except Exception as exc:  # tifffile raises many types for damaged input
            raise ValueError(f"undecodable TIFF: {exc}") from None
        img = np.asarray(img)
        if img.ndim == 2:
            img = img[:, :, None]
        if img.dtype != self.dtype or img.shape[2:] != self.shape[2:]:
            raise ValueError(f"TIFF holds {img.shape} {img.dtype}, expected {want or self.shape} {self.dtype}")
        return self._checked(img, "TIFF", want)
