"""files: torchvision's ImageFolder over files/ (an ImageFolder tree: one directory per class, its
name the label zero-padded, so ImageFolder's sorted class names number the classes as the manifest
does; generator/layouts/files.py), as its docs show it:
`ImageFolder(root, loader=...)` in a DataLoader. The tree is listed once per run, as a training
script lists it once; `loader=` is our codec on the file's bytes (ImageFolder's default loader,
PIL's RGB conversion, would change gray and 16-bit pixels). Empty class directories are kept
(`allow_empty=True`: the tree has one for every class); payload extensions ImageFolder does not
know (.raw) are taken by `is_valid_file`."""

from __future__ import annotations

import functools
import os

import numpy as np
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from generator.errors import CorpusError, UsageError

from .common import Source


class ReadDecode:
    """ImageFolder's `loader=`: the file's bytes through our codec (its index is the file's stem,
    for samples of their own shapes)."""

    def __init__(self, decode):
        self.decode = decode

    def __call__(self, path: str):
        with open(path, "rb") as f:
            data = f.read()
        return self.decode(data, int(os.path.basename(path).partition(".")[0]))


def _has_ext(exts: tuple, path: str) -> bool:
    return path.lower().endswith(exts)


class Positioned(Dataset):
    """ImageFolder's item `pos` with its position: (image, target, pos)."""

    def __init__(self, folder: ImageFolder):
        self.folder = folder

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, pos: int):
        image, target = self.folder[pos]
        return image, target, pos


class FolderSource(Source):
    library = "torchvision ImageFolder"
    modules = ("torchvision",)

    def __init__(self, reader, batch_size: int = 32, **kw):
        super().__init__(reader, batch_size, **kw)
        if self.manifest.version < 2:
            raise UsageError(f"{self.root}: a files layout of corpus format version 1 is not an ImageFolder tree "
                             f"(class directories unpadded); regenerate the corpus to read it with ImageFolder")
        exts = sorted({os.path.splitext(p)[1].lower() for p in (reader.where(0),)} | set(IMG_EXTENSIONS))
        valid = None if all(e in IMG_EXTENSIONS for e in exts) else functools.partial(_has_ext, tuple(exts))
        top = self.root / "files"
        self.folder = ImageFolder(str(top), loader=ReadDecode(self.decoder(str(top))), is_valid_file=valid,
                                  allow_empty=True)
        index_of = np.array([int(os.path.basename(p).partition(".")[0]) for p, _ in self.folder.samples], np.int64)
        if len(index_of) != self.n or not np.array_equal(np.sort(index_of), np.arange(self.n)):
            raise CorpusError(f"{top}: ImageFolder lists {len(index_of):,} files, not the corpus's {self.n:,} samples "
                              f"(python -m loaders verify names what differs)")
        self.to_pos = np.empty(self.n, np.int64)
        self.to_pos[index_of] = np.arange(self.n)

    def dataset(self, rank: int):
        return Positioned(self.folder)

    def positions(self):
        return self.to_pos

    def extra_settings(self) -> dict:
        return {"dataset": "torchvision.datasets.ImageFolder(files/, loader=our codec, allow_empty=True)",
                "classes": len(self.folder.classes)}

