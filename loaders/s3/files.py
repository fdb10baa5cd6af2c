"""`files` over S3: files/<class>/<index>.<ext> as objects, one GET per sample (the loose-object
case); a batch's GETs in flight together. Object names as the local reader's paths
(loaders/files.py), from the manifest's format version."""

from __future__ import annotations

from generator.layouts.files import class_dir, index_width, sample_ext

from .base import S3Reader


class S3FilesReader(S3Reader):
    layout = "files"

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        version = self.manifest.version
        self._dirs = [f"{self.prefix}/{class_dir(self.spec, c, version)}/" for c in range(self.spec.num_classes)]
        self._width = index_width(self.spec)
        formats = self.manifest.formats
        if formats is None:
            self._ext, self._exts = "." + sample_ext(self.spec, version), None
        else:
            ext_of = {f: f".{sample_ext(self.spec, version, f)}" for f in set(formats)}
            self._ext, self._exts = None, [ext_of[f] for f in formats]
        self._labels = self._label_arr.tolist()

    def name(self, i: int) -> str:
        """Sample i's object name, relative to the corpus prefix."""
        return (self._dirs[self._labels[i]] + str(i).zfill(self._width)
                + (self._ext if self._exts is None else self._exts[i]))

    def where(self, index: int) -> str:
        return self.object_url(self.name(index))

    def _read_one(self, i: int) -> bytes:
        return self.fetch(i, self.name(i))

    def _read_many(self, idx: list[int]) -> list:
        return self.in_flight(self._read_one, idx)

    def s3_ranges(self, indices):
        return [(self.name(i), None, self._sizes[i]) for i in indices]  # whole objects

    def expected_objects(self):
        return {self.name(i) for i in range(len(self))}
