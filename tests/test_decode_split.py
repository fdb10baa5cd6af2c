"""The timed fetch splits each sample's time into read and decode, wall and CPU."""

from __future__ import annotations

import numpy as np

from generator.build import generate
from generator.spec import Spec
from loaders import open_corpus
from loaders.stages import bound_by, fetch, timed_split


def test_split_read_and_decode_per_sample(tmp_path):
    spec = Spec(height=96, width=128, channels=3, count=12, content="photo", payload="png")
    generate(tmp_path, spec, ["files"], workers=1, progress=False)
    r = open_corpus(tmp_path, "files")
    idx = np.arange(12)
    images, order, nbytes, seconds, split = timed_split(r, idx)
    assert split.shape == (12, 4) and (split >= 0).all()
    assert np.allclose(split[:, 0] + split[:, 1], seconds, rtol=0.05, atol=2e-5)
    assert np.array_equal(images, r.read_batch(idx)[0])
    # a PNG of 36 KB pixels from the page cache: decoding costs more than reading
    assert bound_by(split) == "decode" and split[:, 3].sum() > split[:, 2].sum()
    assert fetch(r, idx, "timed")[3].shape == (12,)  # the pipeline's timed fetch is unchanged
    raw = Spec(height=96, width=128, channels=3, count=12, payload="raw")
    generate(tmp_path / "raw", raw, ["files"], workers=1, progress=False)
    split = timed_split(open_corpus(tmp_path / "raw", "files"), idx)[4]
    assert split[:, 1].sum() < split[:, 0].sum() * 2  # raw: decoding is a view, a fraction of the read
