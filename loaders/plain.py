"""The plain library call a user without this project writes to decode one stored image: what
the naive baselines (Reader.naive_batch) time.

- TIFF: `tifffile.imread(path or file object)`;
- PNG, JPEG, WebP: `numpy.asarray(PIL.Image.open(...))` (Pillow; 16-bit colour PNG, which
  Pillow cannot hold, falls back to the corpus's own decoder);
- raw pixels: `numpy.fromfile(path)` / `numpy.frombuffer(bytes)`, reshaped to the spec.

Every result is (H, W, C), as the loaders return samples.
"""

from __future__ import annotations

import io
import os

import numpy as np

PILLOW_PAYLOADS = ("png", "jpeg", "webp")


def plain_decode(source, codec) -> np.ndarray:
    """`source` (a path, or the payload's bytes) decoded the plain way for `codec`'s payload
    (a generator.codec.Codec). Raises what the library raises on damaged input."""
    spec = codec.spec
    is_path = isinstance(source, (str, os.PathLike))
    if spec.payload == "raw":
        flat = np.fromfile(source, spec.np_dtype) if is_path else np.frombuffer(source, spec.np_dtype)
        return flat.reshape(spec.shape)
    if spec.payload in PILLOW_PAYLOADS:
        if spec.payload == "png" and spec.dtype == "uint16" and spec.channels > 1:  # not a Pillow mode
            return codec.decode(open(source, "rb").read() if is_path else source)
        from PIL import Image

        with Image.open(source if is_path else io.BytesIO(bytes(source))) as im:
            img = np.asarray(im)
    else:
        import tifffile

        img = tifffile.imread(source if is_path else io.BytesIO(bytes(source)))
    return img[:, :, None] if img.ndim == 2 else img
