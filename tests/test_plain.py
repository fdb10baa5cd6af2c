"""The naive baselines decode every payload the plain way (tifffile, Pillow, numpy) and give the
readers' pixels: a JPEG or PNG corpus's naive runs once died in tifffile ("not a TIFF file")."""

from __future__ import annotations

import numpy as np
import pytest

from loaders import open_corpus
from loaders.registry import readers

from conformance import reference
from helpers import need_layout

NAIVE_LAYOUTS = [name for name, cls in readers().items() if cls.naive]
KINDS = ["gray8", "rgb16", "raw16", "deflate", "jpeg", "png16"]


def test_the_layouts_with_naive_baselines():
    assert {"files", "hdf5"} <= set(NAIVE_LAYOUTS)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layout", NAIVE_LAYOUTS)
def test_the_naive_baseline_decodes_every_payload_to_the_readers_pixels(corpus, layout, kind):
    need_layout(layout)
    root = corpus(kind)
    pixels, _, payloads = reference(root)
    r = open_corpus(root, layout)
    try:
        batch = np.random.default_rng(3).permutation(len(r))[:6]
        images, order, nbytes = r.naive_batch(batch)
        assert sorted(order.tolist()) == sorted(batch.tolist())
        assert nbytes == sum(len(payloads[i]) for i in order)
        assert images.dtype == pixels[0].dtype and images.shape == (len(batch), *pixels[0].shape)
        assert np.array_equal(images, np.stack([pixels[i] for i in order]))
    finally:
        r.close_naive()
        r.close()
