"""A map-style dataset, ds[i] -> (image, label), for torch.utils.data.DataLoader or any loop.

It holds only a reader, which pickles without handles and opens its own in each worker, so it
works unchanged with DataLoader's fork or spawn workers. Images are writable copies (H, W, C);
`__getitems__` (used by DataLoader for a whole batch) takes the reader's batch path.
"""

from __future__ import annotations

import numpy as np

from .base import Reader


class ImageDataset:
    def __init__(self, reader: Reader):
        self.reader = reader

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index) -> tuple[np.ndarray, int]:
        i = self.reader.check_index(index)
        images, _ = self.reader.read_batch([i])
        return images[0], self.reader.label(i)

    def __getitems__(self, indices) -> list[tuple[np.ndarray, int]]:
        images, _ = self.reader.read_batch(indices)
        return list(zip(images, self.reader.labels(indices).tolist()))
