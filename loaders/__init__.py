"""Interchangeable readers for every corpus layout, samplers and the batch pipeline.

    reader = loaders.open_corpus("data/mnist-60000", "lmdb")
    for batch in loaders.Loader(reader, batch_size=32, workers=2).epoch(0): ...
"""

from .base import Reader
from .dataset import ImageDataset
from .pipeline import Batch, Loader
from .registry import open_corpus, readers

__all__ = ["Batch", "ImageDataset", "Loader", "Reader", "open_corpus", "readers"]
