"""Write the golden corpora: one tiny corpus per layout under tests/golden/<layout>/, committed so
that a change to a layout's bytes is a deliberate, visible format change (tests/test_golden.py).

    python tests/golden/make.py            # every registered layout that has no golden corpus yet
    python tests/golden/make.py hdf5 lmdb  # rewrite these (after a deliberate format version bump)
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parents[1]) not in sys.path:  # run as a script; the tests import it with the repository on sys.path
    sys.path.insert(0, str(HERE.parents[1]))

from generator.build import generate  # noqa: E402
from generator.spec import Spec  # noqa: E402

# 5 RGB images of 3x4: 36 bytes of pixels behind a fixed TIFF header, labels of 3 classes.
SPEC = Spec(height=3, width=4, channels=3, count=5, seed=11, num_classes=3)
LEFT_OUT = (".lock", "lmdb/lock.mdb")  # the generator's lock and LMDB's lock table: not corpus data


def write(layout: str, where: Path = HERE) -> Path:
    root = where / layout
    if root.exists():
        shutil.rmtree(root)
    generate(root, SPEC, [layout], workers=1, progress=False)
    for name in LEFT_OUT:
        (root / name).unlink(missing_ok=True)
    return root


def main(argv: list[str]) -> int:
    from generator.layouts import layout_ids

    names = argv or [name for name in layout_ids(available=True) if not (HERE / name).exists()]
    for name in names:
        print(f"wrote {write(name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
