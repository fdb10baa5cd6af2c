"""Messages of the generator and verify that used to mislead or be tracebacks (issue 26): each is one
line naming the file and what to do.

Names that are not UTF-8, a non-ASCII corpus path under the C locale, a size list that is a device,
a --like source with a side past the limit, an image whose header says it decodes past 1 GiB
(ingest and --like), an ingest whose --out is inside its source, files added
to an ingested source, a database verify cannot open, permissions and link loops, memory.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from generator.errors import CorpusError, ResourceError

ROOT = Path(__file__).resolve().parents[1]


def run(*args, env=None, **kw):
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=full, timeout=300,
                          **kw)


def one_line(done, code: int) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code and len(lines) == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def _png(path, shape=(4, 5, 3), value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, value, np.uint8)).save(path)


def _bytes_name(parent: Path, raw: bytes) -> Path:
    """A path under `parent` whose last name is `raw` (bytes that need not be UTF-8)."""
    return Path(os.fsdecode(os.path.join(os.fsencode(parent), raw)))


def test_ingest_refuses_names_that_are_not_utf8_in_one_line(tmp_path):
    src = tmp_path / "src"
    _png(src / "cat" / "a.png")
    _png(_bytes_name(src, b"d\xffog") / "b.png")
    done = run("-m", "generator", "ingest", str(src), "--out", str(tmp_path / "out"), "--layouts", "files")
    line = one_line(done, 2)
    assert "not valid UTF-8" in line and "d\\xffog" in line and "rename" in line
    assert not (tmp_path / "out").exists()
    # a file name too, in a class that is fine
    os.rename(_bytes_name(src, b"d\xffog"), src / "dog")
    os.rename(src / "cat" / "a.png", _bytes_name(src / "cat", b"\xfea.png"))
    line = one_line(run("-m", "generator", "ingest", str(src), "--out", str(tmp_path / "out")), 2)
    assert "cat/\\xfea.png" in line


@pytest.mark.parametrize("layouts", ["files,lmdb,sqlite,hdf5", "arrow,parquet,npy,zarr,tar,tfrecord"])
def test_a_non_ascii_corpus_path_under_the_c_locale_generates_and_verifies(tmp_path, layouts):
    from generator.layouts import get_layout

    names = [n for n in layouts.split(",") if get_layout(n).missing() is None]
    out = tmp_path / "corpus-é"
    env = {"LANG": "C", "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    gen = run("-m", "generator", "--shape", "2x2x1", "--count", "20", "--layouts", ",".join(names), "--out", str(out),
              env=env)
    assert gen.returncode == 0, gen.stderr
    ver = run("-m", "loaders", "verify", str(out), env=env)
    assert ver.returncode == 0, ver.stdout + ver.stderr
    for name in names:
        assert f"{name}: all 20 samples match" in ver.stdout + ver.stderr


def test_a_name_a_library_cannot_encode_is_one_line_not_a_traceback(capsys):
    from generator.cli import run_main

    def main(argv):
        "corpus-\udcc3\udca9".encode("utf-8")  # what a library does with a name decoded by surrogateescape

    assert run_main("prog", main) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "locale" in err and "UTF-8" in err


@pytest.mark.parametrize("target, says", [("/dev/zero", "is a character device, not a regular file"),
                                          ("big", "more than the 1,048,576 allowed"),
                                          ("long", "is not HxW")])
def test_a_size_list_that_is_a_device_or_huge_is_a_short_line(tmp_path, target, says):
    if target == "big":
        target = tmp_path / "big.txt"
        target.write_bytes(b"x" * (3 << 20))
    elif target == "long":
        target = tmp_path / "long.txt"
        target.write_text("9" * 100_000 + "\n")
    done = run("-m", "generator", "--shape", "2x2x1", "--size-dist", f"file:{target}", "--out", str(tmp_path / "o"))
    line = one_line(done, 2)
    assert says in line and len(line) < 600


def test_like_names_the_file_whose_side_is_past_the_limit(tmp_path):
    src = tmp_path / "src"
    _png(src / "a" / "small.png", (5, 5))
    _png(src / "a" / "wide.png", (1, 20_000))
    line = one_line(run("-m", "generator", "--like", str(src), "--count", "10", "--out", str(tmp_path / "o")), 2)
    assert "wide.png" in line and "1x20,000" in line and "16,383" in line


def _huge_png(path, h, w, channels=3, depth=8, rows=2):
    """A PNG whose header says h x w x channels but which holds `rows` rows of zeros: a few hundred
    bytes that would decode (or fail to) only after allocating the whole image."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, depth, {1: 0, 2: 4, 3: 2, 4: 6}[channels], 0, 0, 0)
    rows_data = zlib.compress((b"\0" + bytes(w * channels * depth // 8)) * rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows_data) + chunk(b"IEND", b""))


def _huge_jpeg(path, h, w):
    """A small JPEG whose frame header is rewritten to say h x w."""
    import io

    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = h.to_bytes(2, "big") + w.to_bytes(2, "big")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))


def test_an_image_that_decodes_past_1_gib_is_refused_from_its_header_never_decoded(tmp_path, monkeypatch):
    """A PNG of 40,000x40,000 (4.8 GB of pixels in a few hundred bytes) and a JPEG whose header says
    60,000x60,000: each named with the bytes it would decode to and the limit, before any decode
    (once decoded in full, then refused naming no file), and --skip-bad leaves them out by name."""
    from generator import codecs as formats
    from generator.errors import UsageError
    from generator.ingest import scan

    src = tmp_path / "src"
    _png(src / "a" / "fine.png")
    _huge_png(src / "a" / "huge.png", 40_000, 40_000)
    _huge_jpeg(src / "b" / "huge.jpg", 60_000, 60_000)
    _png(src / "b" / "fine.png")

    def never(*args, **kw):
        raise AssertionError("decoded an image its header already refuses")

    real = formats.decode_image
    monkeypatch.setattr(formats, "decode_image", lambda data, c, dt: never() if len(data) < 2000 and (
        formats.probe(data)[1][0] > 10_000) else real(data, c, dt))
    with pytest.raises(UsageError) as err:
        scan(src, workers=2)
    assert "2 source image(s)" in str(err.value) and "--skip-bad" in str(err.value)
    entries = scan(src, skip_bad=True, workers=2)
    assert [e.rel for e in entries] == ["a/fine.png", "b/fine.png"]
    skipped = dict(entries.info["skipped"])
    assert skipped["a/huge.png"].startswith("40,000x40,000x3 uint8 pixels decode to 4,800,000,000 bytes, over the "
                                            "1,073,741,824 (1 GiB) a sample may take (refused from its header")
    assert skipped["b/huge.jpg"].startswith("60,000x60,000x3 uint8 pixels decode to 10,800,000,000 bytes")
    monkeypatch.undo()
    # the command: one line naming the file, its size and the limit; --skip-bad lists it and goes on
    done = run("-m", "generator", "ingest", str(src), "--out", str(tmp_path / "o"), "--layouts", "files")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert "a/huge.png: 40,000x40,000x3 uint8 pixels decode to 4,800,000,000 bytes, over the 1,073,741,824" in error
    assert any(str(src / "b" / "huge.jpg") in line for line in done.stderr.splitlines())
    assert not (tmp_path / "o").exists()
    done = run("-m", "generator", "ingest", str(src), "--out", str(tmp_path / "o"), "--layouts", "files", "--skip-bad")
    assert done.returncode == 0, done.stderr
    assert "skipped a/huge.png: 40,000x40,000x3" in done.stdout and "skipped b/huge.jpg: 60,000x60,000x3" in done.stdout
    done = run("-m", "loaders", "verify", str(tmp_path / "o"), "--source", str(src))  # the skipped stay skipped
    assert done.returncode == 0 and "source: all 2 samples match" in done.stdout, done.stdout + done.stderr


def test_like_names_the_file_that_decodes_past_1_gib(tmp_path):
    """--like: a 16-bit RGB PNG of 16,000x12,000 (sides within the 16,383 limit, 1.15 GB of pixels):
    refused by name with its size and the limit, not decoded, not counted as one more bad file."""
    src = tmp_path / "src"
    _png(src / "a" / "small.png", (5, 5))
    _huge_png(src / "a" / "deep.png", 16_000, 12_000, depth=16)
    line = one_line(run("-m", "generator", "--like", str(src), "--count", "10", "--out", str(tmp_path / "o")), 2)
    assert "deep.png" in line and "16,000x12,000x3 uint16 pixels decode to 1,152,000,000 bytes" in line
    assert "1,073,741,824 (1 GiB)" in line and "remove such files" in line


def test_ingest_refuses_an_out_inside_its_source(tmp_path):
    src = tmp_path / "src"
    _png(src / "a" / "x.png")
    for out in (src / "sub", src, src / "a" / "deeper"):
        line = one_line(run("-m", "generator", "ingest", str(src), "--out", str(out)), 2)
        assert "inside the ingest source" in line
    assert sorted(p.name for p in src.iterdir()) == ["a"] and sorted(p.name for p in (src / "a").iterdir()) == ["x.png"]


def test_verify_source_lists_the_files_added_since_the_ingest(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    _png(src / "a" / "x.png", value=1)
    _png(src / "a" / "y.png", value=2)
    assert run("-m", "generator", "ingest", str(src), "--out", str(out), "--layouts", "files").returncode == 0
    _png(src / "a" / "z.png", value=3)
    done = run("-m", "loaders", "verify", str(out), "--source", str(src))
    assert done.returncode == 1
    listed = [line for line in done.stdout.splitlines() if line.startswith("MISMATCH")]
    assert any("1 file(s) in the source that the corpus does not hold are listed" in line for line in listed)
    assert any(str(src / "a" / "z.png") in line and "added since the ingest" in line for line in listed)


def test_verify_goes_on_when_corpus_sqlite_cannot_be_opened(tmp_path):
    from generator.build import generate
    from generator.spec import Spec

    generate(tmp_path, Spec(height=2, width=2, channels=1, count=12), layouts=["files", "sqlite"], workers=1,
             progress=False)
    (tmp_path / "corpus.sqlite").write_bytes(b"SQLite format 3\0" + bytes(range(200)))
    done = run("-m", "loaders", "verify", str(tmp_path))
    text = done.stdout + done.stderr
    assert done.returncode == 1, text
    assert "files: all 12 samples match" in text and "sqlite: 12 of 12 samples do not match" in text
    assert "damaged" in text and "python -m loaders verify" not in text


def test_a_layout_that_cannot_be_listed_names_permission_and_loops_not_a_changed_corpus():
    from loaders.verify import listing_problem

    assert "permission denied" in listing_problem(OSError(errno.EACCES, "Permission denied", "x"))
    assert "symbolic link loop" in listing_problem(OSError(errno.ELOOP, "Too many levels of symbolic links", "x"))
    assert "changed during verify" in listing_problem(OSError(errno.ENOENT, "No such file or directory", "x"))
    with pytest.raises(ResourceError, match="ulimit -n"):
        listing_problem(OSError(errno.EMFILE, "Too many open files", "x"))


def test_an_ingested_file_that_became_unreadable_or_a_loop_is_named_as_such(tmp_path, monkeypatch):
    import generator.pool as pool
    from generator.ingest import scan
    from generator.spec import Spec

    src = tmp_path / "src"
    _png(src / "a" / "x.png")
    entries = scan(src)
    spec = Spec(height=4, width=5, channels=3, count=1)
    monkeypatch.setitem(pool.SOURCES, spec, entries)
    for code, says in [(errno.EACCES, "permission denied"), (errno.ELOOP, "symbolic link loop")]:
        def refuse(path, limit, code=code):
            raise OSError(code, os.strerror(code), path)

        monkeypatch.setattr("generator.safeio.read_regular", refuse)
        with pytest.raises(CorpusError, match=says) as e:
            pool._produce_source(spec, [0])
        assert "changed during" not in str(e.value)


def test_lmdb_out_of_address_space_is_named_not_an_input_output_error(tmp_path):
    pytest.importorskip("lmdb")
    out = tmp_path / "c"
    # a map of 1 TiB in an address space of 4 GiB: what a large corpus's map is under `ulimit -v`
    limit = ("import resource, generator.layouts.lmdb as w; w.map_size = lambda spec, codec: 1 << 40; "
             "resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))")
    script = (f"{limit}\nimport runpy, sys\nsys.argv = ['python -m generator', '--shape', '4x4x1', '--count', '50', "
              f"'--layouts', 'lmdb', '--out', {str(out)!r}]\nrunpy.run_module('generator', run_name='__main__')")
    line = one_line(run("-c", script), 1)
    assert "out of memory (ENOMEM)" in line and "ulimit -v" in line and "Input/output error" not in line
