"""Size distributions: each sample's image height and width as a pure function of (seed, index).

`--size-dist` takes (DLIO's record_length_stdev, for image dimensions):

- `fixed`: every sample has the spec's shape (the default; no distribution is stored).
- `normal:MEAN_HxW,STD`: each side drawn from a normal distribution, independently; STD is one
  number of pixels (both sides) or `HxW`. Each side is clamped to [1, MEAN + NORMAL_SPAN * STD]
  (and to MAX_SIDE): the upper clamp is the corpus's bounding shape, so a sample's pixel bytes
  never exceed the bound the generator sizes its buffers by.
- `uniform:MIN_HxW,MAX_HxW`: each side uniform over the integers [MIN, MAX], independently.
- `file:LIST`: LIST is a text file of `HxW` lines (blank lines and `#` comments ignored), at most
  MAX_LIST of them; sample i has line i mod n's shape, so a list of `count` lines gives every
  sample exactly its line. The lines are stored in the spec (`list:HxW;HxW;...`), not the path:
  the corpus does not depend on the file after generation.

The canonical text (`SizeDist.text`) is what the spec stores; `parse_size_dist` makes it from
the command line's. Shapes are drawn with splitmix64 hashes of (seed, index) and, for the normal
distribution, Box-Muller in double precision (math.log, math.cos; IEEE-754 libms agree on these
to the last bit for all but vanishingly rare arguments, and the manifest's shapes are what readers
trust).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

from .errors import UsageError, quote
from .hashing import mix64

NORMAL_SPAN = 4.0  # the normal distribution's clamp: at most MEAN + 4 STD per side
MAX_SIDE = 16383  # WebP's largest side; JPEG's is 65535: a size distribution never goes past it
LIST_BYTES = 1 << 20  # bytes of a file: list read at most (MAX_LIST lines of HxW and comments)
MAX_LIST = 4096  # lines of a file: list (a spec of at most ~50 KB: HDF5 attributes stop at 64 KiB)
KINDS = ("fixed", "normal", "uniform", "file")

_HW = r"(\d+)\s*[xX]\s*(\d+)"


def _hw(text: str, what: str, full: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*" + _HW + r"\s*", text)
    if not m:
        raise UsageError(f"bad --size-dist {quote(repr(full))}: {what} must be HxW, e.g. 224x224")
    h, w = int(m[1]), int(m[2])
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise UsageError(f"bad --size-dist {quote(repr(full))}: {what} sides must be in 1..{MAX_SIDE}")
    return h, w


@dataclass(frozen=True)
class SizeDist:
    """A parsed distribution: kind (normal, uniform, list) and its parameters."""

    kind: str
    a: tuple  # normal: mean (h, w); uniform: min (h, w); list: the shapes ((h, w), ...)
    b: tuple = ()  # normal: std (h, w) as floats; uniform: max (h, w)

    @property
    def text(self) -> str:
        """The canonical form the spec stores."""
        if self.kind == "list":
            return "list:" + ";".join(f"{h}x{w}" for h, w in self.a)
        if self.kind == "normal":
            return f"normal:{self.a[0]}x{self.a[1]},{_num(self.b[0])}x{_num(self.b[1])}"
        return f"uniform:{self.a[0]}x{self.a[1]},{self.b[0]}x{self.b[1]}"

    @property
    def bounds(self) -> tuple[int, int]:
        """The largest (height, width) any sample can have: the corpus's bounding shape."""
        if self.kind == "list":
            return max(h for h, _ in self.a), max(w for _, w in self.a)
        if self.kind == "uniform":
            return self.b
        return tuple(min(MAX_SIDE, max(1, int(math.floor(m + NORMAL_SPAN * s)))) for m, s in zip(self.a, self.b))

    def shape(self, seed: int, index: int) -> tuple[int, int]:
        """(height, width) of sample `index`: a pure function of (seed, index)."""
        if self.kind == "list":
            return self.a[index % len(self.a)]
        u = mix64(mix64(seed ^ 0x51_2E_D1_57) ^ index)
        lo32, hi32 = u & 0xFFFFFFFF, u >> 32
        if self.kind == "uniform":
            (h0, w0), (h1, w1) = self.a, self.b
            return h0 + lo32 % (h1 - h0 + 1), w0 + hi32 % (w1 - w0 + 1)
        # Box-Muller: two uniforms in (0, 1] and [0, 1) -> two independent standard normals
        u1 = (lo32 + 1) / 4294967296.0
        u2 = hi32 / 4294967296.0
        r = math.sqrt(-2.0 * math.log(u1))
        z1, z2 = r * math.cos(2 * math.pi * u2), r * math.sin(2 * math.pi * u2)
        top_h, top_w = self.bounds
        h = min(top_h, max(1, int(round(self.a[0] + z1 * self.b[0]))))
        w = min(top_w, max(1, int(round(self.a[1] + z2 * self.b[1]))))
        return h, w


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def parse_size_dist(text: str | None, base: str | None = None) -> str | None:
    """The command line's --size-dist -> the canonical text the spec stores (None for fixed).
    `base`: the directory a relative file: path is taken from (default: the working directory)."""
    if text is None or text.strip() == "fixed":
        return None
    kind, sep, rest = text.partition(":")
    kind = kind.strip()
    if not sep or kind not in KINDS:
        raise UsageError(f"bad --size-dist {quote(repr(text))}: expected fixed, normal:MEAN_HxW,STD, uniform:MIN_HxW,MAX_HxW "
                         f"or file:LIST")
    if kind == "file":
        path = os.path.join(base or ".", rest.strip())
        return SizeDist("list", tuple(read_shape_list(path))).text
    parts = rest.split(",")
    if len(parts) != 2:
        raise UsageError(f"bad --size-dist {quote(repr(text))}: {kind} takes two values separated by a comma")
    if kind == "uniform":
        lo, hi = _hw(parts[0], "MIN", text), _hw(parts[1], "MAX", text)
        if lo[0] > hi[0] or lo[1] > hi[1]:
            raise UsageError(f"bad --size-dist {quote(repr(text))}: MIN must not exceed MAX on either side")
        return SizeDist("uniform", lo, hi).text
    mean = _hw(parts[0], "MEAN", text)
    std_text = parts[1].strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(?:\s*[xX]\s*(\d+(?:\.\d+)?))?", std_text)
    if not m:
        raise UsageError(f"bad --size-dist {quote(repr(text))}: STD must be a number of pixels or HxW, e.g. 32 or 24x32")
    std = (float(m[1]), float(m[2] if m[2] is not None else m[1]))
    return SizeDist("normal", mean, std).text


def read_shape_list(path: str) -> list[tuple[int, int]]:
    """The `HxW` lines of a file: list, or UsageError naming the file and line."""
    from .safeio import FileRefused, read_regular

    try:
        lines = read_regular(path, LIST_BYTES).decode("utf-8").splitlines()  # a regular file, bounded
    except (FileRefused, OSError, UnicodeDecodeError) as exc:
        reason = quote(getattr(exc, "strerror", None) or exc)
        raise UsageError(f"--size-dist file:{quote(path)}: cannot read it ({reason}); give a text file of HxW "
                         f"lines") from None
    shapes = []
    for n, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(_HW, line)
        if not m or not (1 <= int(m[1]) <= MAX_SIDE and 1 <= int(m[2]) <= MAX_SIDE):
            raise UsageError(f"--size-dist file:{quote(path)} line {n}: {quote(repr(line))} is not HxW with sides in "
                             f"1..{MAX_SIDE}")
        shapes.append((int(m[1]), int(m[2])))
    if not shapes:
        raise UsageError(f"--size-dist file:{quote(path)} holds no HxW lines")
    if len(shapes) > MAX_LIST:
        raise UsageError(f"--size-dist file:{quote(path)} has {len(shapes):,} lines; at most {MAX_LIST:,} are supported")
    return shapes


def load(text: str) -> SizeDist:
    """The canonical text (as a spec stores it) -> SizeDist, or UsageError."""
    kind, _, rest = text.partition(":")
    try:
        if kind == "list":
            shapes = tuple(tuple(int(v) for v in s.lower().split("x")) for s in rest.split(";"))
            if not shapes or len(shapes) > MAX_LIST or any(len(s) != 2 or not all(1 <= v <= MAX_SIDE for v in s)
                                                           for s in shapes):
                raise ValueError
            return SizeDist("list", shapes)
        if kind in ("normal", "uniform"):
            dist = parse_size_dist(text)
            a, b = rest.split(",")
            if kind == "uniform":
                return SizeDist("uniform", _hw(a, "MIN", text), _hw(b, "MAX", text))
            sh, sw = (float(v) for v in b.lower().split("x"))
            assert dist is not None
            return SizeDist("normal", _hw(a, "MEAN", text), (sh, sw))
    except (ValueError, TypeError):
        pass
    raise UsageError(f"sizes {text[:80]!r} is not a size distribution (normal:..., uniform:... or list:...)")
