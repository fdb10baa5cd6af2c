"""How fast is the generator? Issue 2's speed goals, each ratio measured side by side in one run.

    .venv/bin/python -m bench.speed.gen [--out-dir DIR] [--repeats R] [--sections mnist,4k,content]

- mnist: MNIST (60,000 by default) written by each layout vs a plain loop of `tifffile.imwrite`
  per file into the same ImageFolder tree; both on the same disk, both timed up to a final
  os.sync() so both are durable. Goal: each layout >= 5x faster than the loop.
- 4k: `4k-8bit`, 8 images: each layout's write MB/s (content generation included, as the
  generator reports it) vs a raw write() of the same payload bytes into one file + fsync, and
  each layout's writer fed the ready bytes. Each side is timed to its own fsyncs, not to an
  os.sync(), which would also wait for every other writer on a shared machine. Goal: >= 0.7x.
- content: content generation MB/s per preset in one thread: make_sample alone, and
  make_sample + encode + crc32 (what the generator does per sample before writing).

Every timed run starts after an untimed os.sync() and writes into a fresh directory; nothing is
deleted until the end, because on ext4 creating files right after deleting many is slower
(the inode allocator skips recently deleted inodes) and would tilt whichever side ran next.
With --repeats R the order alternates (ABBA) and the tables show medians.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

import generator.build
import generator.pool
import generator.spec
import generator.synth
from generator.codec import Codec
from generator.layouts import get_layout, layout_ids
from generator.layouts.files import sample_relpath
from generator.pool import chunks, produce
from generator.spec import PRESETS, preset_spec
from generator.synth import make_sample

MNIST_GOAL = 5.0
BIG_GOAL = 0.7


def timed(fn, final_sync: bool = True) -> float:
    """Seconds for fn() (plus a final os.sync() if final_sync), after an untimed sync of earlier
    writes. os.sync() waits for every writer on the machine, so where fn makes its own writes
    durable (fsync) final_sync=False keeps other processes' writes out of the figure."""
    os.sync()
    t0 = time.perf_counter()
    fn()
    if final_sync:
        os.sync()
    return time.perf_counter() - t0


def naive_tifffile_loop(root: Path, spec) -> None:
    """What one would write by hand: one tifffile.imwrite per image, same ImageFolder tree."""
    import tifffile

    for label in range(spec.num_classes):
        (root / "files" / str(label)).mkdir(parents=True, exist_ok=True)
    for i in range(spec.count):
        pixels, label = make_sample(spec, i)
        tifffile.imwrite(root / sample_relpath(spec, i, label), pixels[:, :, 0] if spec.channels == 1 else pixels)


def raw_write(path: Path, payloads) -> None:
    """The disk's own speed for these bytes: write() them back to back into one file, fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for p in payloads:
            view = memoryview(p)
            while view:
                view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def alternating(names: list[str], repeats: int):
    """(repeat, name) in ABBA order, so slow drift of a shared machine hits both sides alike."""
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            yield r, name


def generator_sides(spec, workers: int, baseline) -> dict:
    """name -> fn(directory) writing spec's corpus in one layout: this tree's generator, and the
    baseline revision's (if any) as `layout@rev`, so before and after are measured in one run."""

    def side(package, spec, name):
        def run(out):
            forget_caches(package)  # as in a fresh `python -m generator`: the base block is made anew
            package.build.generate(out, spec, [name], workers, progress=False)
        return run

    sides = {}
    for name in layout_ids():
        sides[name] = side(generator, spec, name)
        if baseline:
            rev, old = baseline
            sides[f"{name}@{rev}"] = side(old, old.spec.Spec(**spec.to_dict()), name)
    return sides


def forget_caches(package) -> None:
    """Clear the per-process caches (base block, codec) of a generator package."""
    for module in (package.synth, package.pool):
        for value in vars(module).values():
            if hasattr(value, "cache_clear"):
                value.cache_clear()


def load_baseline(rev: str, into: Path):
    """The generator package as of git revision `rev`, importable beside this one (its imports
    are relative, so it works under another name)."""
    import importlib
    import subprocess
    from types import SimpleNamespace

    name = "generator_at_" + "".join(c if c.isalnum() else "_" for c in rev)
    dest = into / "baseline"
    dest.mkdir()
    archive = subprocess.run(["git", "archive", rev, "generator"], cwd=Path(__file__).resolve().parents[2],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    (dest / "generator").rename(dest / name)
    sys.path.insert(0, str(dest))
    return rev, SimpleNamespace(**{m: importlib.import_module(f"{name}.{m}") for m in ("build", "spec", "synth", "pool")})


def run_side_by_side(base: Path, sides: dict, repeats: int, final_sync: bool) -> dict[str, list[float]]:
    """Seconds per side per repeat; sides maps a name to fn(directory)."""
    seconds = {name: [] for name in sides}
    for r, name in alternating(list(sides), repeats):
        out = base / f"{name.replace('@', '-at-')}-{r}"
        seconds[name].append(timed(lambda: sides[name](out), final_sync))
        print(f"  {name:14} repeat {r + 1}: {seconds[name][-1]:.2f} s", file=sys.stderr, flush=True)
    return seconds


def table(rows: list[tuple], header: tuple) -> str:
    rows = [tuple(str(c) for c in header)] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     for row in rows)


def verdict(ratio: float, goal: float) -> str:
    return "ok" if ratio >= goal else "MISSED"


def mnist_section(base: Path, count: int, repeats: int, workers: int, baseline) -> str:
    spec = preset_spec("mnist", count=count)
    sides = {"tifffile": lambda out: naive_tifffile_loop(out, spec), **generator_sides(spec, workers, baseline)}
    secs = run_side_by_side(base / "mnist", sides, repeats, final_sync=True)
    loop = statistics.median(secs["tifffile"])
    rows = [("tifffile.imwrite loop", f"{loop:.2f}", f"{1e6 * loop / count:.1f}", "1.00x", "")]
    for name in sides:
        if name == "tifffile":
            continue
        s = statistics.median(secs[name])
        rows.append((f"generator {name}", f"{s:.2f}", f"{1e6 * s / count:.1f}", f"{loop / s:.2f}x",
                     f"{verdict(loop / s, MNIST_GOAL)} (goal >= {MNIST_GOAL:g}x)"))
    title = (f"MNIST {count:,} images, --workers {workers}, median of {repeats}, each timed to a final os.sync()")
    return title + "\n" + table(rows, ("writer", "seconds", "us/image", "speed-up", "verdict"))


def writer_alone(out: Path, spec, name: str, payloads, labels) -> None:
    """One layout's writer fed ready payloads in the generator's batches: the format's own cost,
    without making the content (files: the same per-file writes, in one process)."""
    out.mkdir()
    writer = get_layout(name).writer_class()(out, spec, Codec(spec))
    writer.begin()
    write = writer.write_part if writer.supports_parallel_write else writer.put_many
    for r in chunks(0, spec.count, spec):
        write(r, payloads[r.start:r.stop], labels[r.start:r.stop])
    writer.end(np.asarray(labels, np.uint16))  # flush and make durable, as the generator does


def big_section(base: Path, count: int, repeats: int, workers: int, baseline) -> str:
    spec = preset_spec("4k-8bit", count=count)
    payloads, _, _, labels = produce(spec, range(count))  # the exact bytes the layouts store, made untimed
    nbytes = sum(len(p) for p in payloads)
    (base / "4k").mkdir(parents=True, exist_ok=True)
    sides = {"raw": lambda out: raw_write(out, payloads),
             **{f"{name}-alone": lambda out, name=name: writer_alone(out, spec, name, payloads, labels)
                for name in layout_ids()},
             **generator_sides(spec, workers, baseline)}
    # Each side makes its own writes durable (raw: fsync; layouts: fsync / fdatasync of their files).
    secs = run_side_by_side(base / "4k", sides, repeats, final_sync=False)
    del payloads
    raw_s = statistics.median(secs["raw"])
    raw = nbytes / raw_s / 1e6
    rows = [("raw write()+fsync, bytes ready", f"{raw_s:.2f}", f"{raw:,.0f}", "1.00x", "")]
    for name in sides:
        if name == "raw":
            continue
        s = statistics.median(secs[name])
        mbs = nbytes / s / 1e6
        if name.endswith("-alone"):
            rows.append((f"{name[:-6]} writer alone, bytes ready", f"{s:.2f}", f"{mbs:,.0f}", f"{mbs / raw:.2f}x", ""))
        else:
            rows.append((f"generator {name}", f"{s:.2f}", f"{mbs:,.0f}", f"{mbs / raw:.2f}x",
                         f"{verdict(mbs / raw, BIG_GOAL)} (goal >= {BIG_GOAL:g}x)"))
    title = (f"4k-8bit, {count} images = {nbytes:,} B of payload, --workers {workers}, median of {repeats}, "
             f"each timed to its own fsyncs; the generator also makes the bytes, a writer alone does not")
    return title + "\n" + table(rows, ("writer", "seconds", "MB/s", "vs raw", "verdict"))


def rate(fn, spec, min_seconds: float) -> float:
    """Pixel MB/s of fn(i) over as many samples as fill min_seconds (at least 2)."""
    fn(0)  # warm up: the per-spec base block is made once per process
    n, t0 = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - t0 < min_seconds:
        fn(n % spec.count)
        n += 1
    return n * spec.pixel_bytes / (time.perf_counter() - t0) / 1e6


def content_section(min_seconds: float) -> str:
    rows = []
    for name in PRESETS:
        spec = preset_spec(name, count=1_000_000)
        codec = Codec(spec)
        make = rate(lambda i: make_sample(spec, i), spec, min_seconds)
        full = rate(lambda i: zlib.crc32(codec.encode(make_sample(spec, i)[0])), spec, min_seconds)
        made = rate(lambda i: produce(spec, [i]), spec, min_seconds)
        rows.append((name, f"{spec.pixel_bytes:,}", f"{make:,.0f}", f"{full:,.0f}", f"{made:,.0f}"))
    return ("Content generation, one thread, MB/s of pixels (smooth content, tiff payload). produce() is\n"
            "what the generator runs per sample: for large payloads it makes the pixels in place.\n"
            + table(rows, ("preset", "bytes/sample", "make_sample", "+encode+crc32", "produce()")))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.speed.gen", description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", help="where to write (default: a temporary directory under data/, "
                   "the disk the corpora live on); removed at the end unless --keep")
    p.add_argument("--sections", default="mnist,4k,content", help="comma list of mnist, 4k, content")
    p.add_argument("--mnist-count", type=int, default=60_000)
    p.add_argument("--big-count", type=int, default=8)
    p.add_argument("--repeats", type=int, default=1, help="runs per side, in alternating order (default 1)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="generator --workers (default: cores)")
    p.add_argument("--min-seconds", type=float, default=0.5, help="time per content-generation figure")
    p.add_argument("--keep", action="store_true", help="keep what was written")
    p.add_argument("--baseline", metavar="REV", help="also time the generator as of git revision REV "
                   "(e.g. a commit before a speed change): before and after in the same run")
    args = p.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - {"mnist", "4k", "content"}
    if unknown:
        p.error(f"unknown sections: {', '.join(sorted(unknown))}")
    if args.out_dir:
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
        base = Path(tempfile.mkdtemp(prefix="gen_speed-", dir=args.out_dir))
    else:
        Path("data").mkdir(exist_ok=True)
        base = Path(tempfile.mkdtemp(prefix=".gen_speed-", dir="data"))
    print(f"writing under {base} ({os.cpu_count()} cores)", file=sys.stderr)
    try:
        baseline = load_baseline(args.baseline, base) if args.baseline else None
        if "mnist" in sections:
            print(mnist_section(base, args.mnist_count, args.repeats, args.workers, baseline) + "\n", flush=True)
        if "4k" in sections:
            print(big_section(base, args.big_count, args.repeats, args.workers, baseline) + "\n", flush=True)
        if "content" in sections:
            print(content_section(args.min_seconds) + "\n", flush=True)
    finally:
        if args.keep:
            print(f"kept {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
