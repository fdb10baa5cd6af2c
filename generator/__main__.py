"""python -m generator: write a synthetic image corpus in every registered layout (see --list-layouts)."""

from __future__ import annotations

import os
import sys

from .build import format_table, generate, left_out_lines, parse_layouts
from .cli import Parser, int_in, positive_number, run_main
from .errors import UsageError
from .layouts import layout_ids, layouts
from .objectstore import refuse_remote_out
from .sizes import parse_size_dist
from .spec import COMPRESSIONS, CONTENTS, DTYPES, MAX_COUNT, PAYLOADS, PRESETS, Spec, parse_shape, preset_spec


def build_parser() -> Parser:
    p = Parser(prog="python -m generator", description=__doc__.strip() + (
        " Each sample is a pure function of (seed, index): the same command always writes the same "
        "bytes, whatever --workers. Interrupted? Rerun the same command: it resumes. Under MPI, "
        "`mpirun -n R python -m bench.cli.mpi generate` takes the same options: loose files are written by "
        "all ranks, HDF5 and LMDB by rank 0. `python -m generator ingest SRC --out DIR` makes a corpus of an "
        "existing image folder instead, each file's bytes unchanged (see its --help)."))
    p.add_argument("--preset", help=f"one of: {', '.join(PRESETS)} (see --list-presets)")
    p.add_argument("--shape", help="custom HxWxC instead of a preset, e.g. 512x512x3")
    p.add_argument("--dtype", choices=DTYPES, help="pixel type for --shape (default uint8)")
    p.add_argument("--count", type=int_in(1, MAX_COUNT), default=1000, help="number of images (default 1000)")
    p.add_argument("--out", help="corpus directory (default data/<preset>-<count>)")
    p.add_argument("--layouts", default=None,
                   help=f"comma list (default: every registered layout, {','.join(layout_ids())})")
    p.add_argument("--seed", type=int_in(0, 2**63 - 1), default=0, help="content seed (default 0)")
    p.add_argument("--like", metavar="SRC", default=None,
                   help="synthesize --count photo images with the statistics of an image folder (ImageFolder tree "
                        "or `path label` list): shapes, codec and quality, channels, dtype, classes, fitted from up "
                        "to 300 of its files (printed in one line); replaces --preset, --shape, --size-dist, "
                        "--payload, --quality, --content and --classes")
    p.add_argument("--payload", choices=PAYLOADS, default=None,
                   help="stored bytes: tiff (default), png (8/16 bit), jpeg or webp (8 bit, lossy), or raw pixels")
    p.add_argument("--quality", type=int_in(1, 100), default=None,
                   help="jpeg/webp quality 1..100 (default 90)")
    p.add_argument("--content", choices=CONTENTS, default="smooth",
                   help="smooth (image-like, compressible; default), noise (incompressible) or photo "
                        "(natural-image statistics: 1/f spectrum, correlated colour, edges)")
    p.add_argument("--compression", choices=COMPRESSIONS, default="none",
                   help="TIFF compression: none (default, read in place), deflate, lzw or zstd (lzw, zstd: "
                        "the codecs extra)")
    p.add_argument("--size-dist", default=None, metavar="DIST",
                   help="image sizes: fixed (default: --preset's or --shape's), normal:MEAN_HxW,STD (each side "
                        "clamped to [1, MEAN+4*STD]), uniform:MIN_HxW,MAX_HxW, or file:LIST (a text file of HxW "
                        "lines; sample i takes line i mod n). Channels and dtype come from --preset or --shape")
    p.add_argument("--classes", type=int_in(1, 65535), default=10, help="number of label classes (default 10)")
    p.add_argument("--workers", type=int_in(1, 1024), default=os.cpu_count() or 1,
                   help=f"parallel workers (default: the core count, {os.cpu_count()})")
    p.add_argument("--shard-mb", type=positive_number, default=None,
                   help="sharded layouts (tar, tfrecord): at most this many MiB of payload per shard (default 256)")
    p.add_argument("--shard-samples", type=int_in(1, MAX_COUNT), default=None,
                   help="sharded layouts: at most this many samples per shard (default 10,000; without either "
                        "setting a small corpus is cut into at least 8 shards)")
    p.add_argument("--force", action="store_true", help="replace a corpus with a different spec in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars or table")
    p.add_argument("--list-presets", action="store_true", help="print the presets and exit")
    p.add_argument("--list-layouts", action="store_true", help="print the registered layouts, whether each is usable here and what installs it, and exit")
    p.add_argument("--list-codecs", action="store_true", help="print the payload codecs, whether each is usable here and what installs it, and exit")
    return p


def spec_from_args(args) -> Spec:
    if args.like:
        given = [f"--{n.replace('_', '-')}" for n in ("preset", "shape", "size_dist", "payload", "quality", "dtype")
                 if getattr(args, n) is not None]
        given += [f"--{n}" for n, default in (("content", "smooth"), ("classes", 10), ("compression", "none"))
                  if getattr(args, n) != default]
        if given:
            raise UsageError(f"--like fits {', '.join(given)} from its source; drop them (or drop --like)")
        from .like import fit

        fitted = fit(args.like, args.count, args.seed)
        print(fitted.summary(args.like), file=sys.stderr if args.quiet else sys.stdout)
        return fitted.spec
    common = dict(count=args.count, seed=args.seed, content=args.content, payload=args.payload or "tiff",
                  compression=args.compression, num_classes=args.classes, quality=args.quality,
                  sizes=parse_size_dist(args.size_dist))
    if args.preset and args.shape:
        raise UsageError("give --preset or --shape, not both")
    if args.preset:
        if args.dtype:
            raise UsageError("--dtype goes with --shape; presets fix their own dtype")
        return preset_spec(args.preset, **common)
    if args.shape:
        h, w, c = parse_shape(args.shape)
        return Spec(height=h, width=w, channels=c, dtype=args.dtype or "uint8", **common)
    raise UsageError("give --preset NAME (see --list-presets) or --shape HxWxC")


def settings_from_args(args) -> dict:
    """Writer settings from the command line (None: the writer's default)."""
    return {"shard_mb": args.shard_mb, "shard_samples": args.shard_samples}


def listed(name: str, width: int, description: str, missing: str | None, partly: str | None = None) -> str:
    """One entry of --list-layouts or --list-codecs: whether it is usable here (ready, partly: some of
    what it holds, missing), and if not wholly, on a second line, what it needs and what installs it."""
    status, why = ("missing", missing) if missing else ("partly", partly) if partly else ("ready", None)
    head = f"{name:{width}} {status:7}  {description}"
    return head if why is None else f"{head}\n{'':{width}} {'':7}  {why}"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_presets:
        for name, (h, w, c, dtype, what) in PRESETS.items():
            print(f"{name:10} {h}x{w}x{c} {dtype:6}  {what}")
        return 0
    if args.list_codecs:
        from .codecs import CODECS

        for info in CODECS.values():
            holds = f"{'/'.join(info.dtypes)}, {'/'.join(map(str, info.channels))} ch"
            print(listed(info.id, 13, f"{holds:22} {info.description}", info.missing(), info.partly()))
        return 0
    if args.list_layouts:
        for layout in layouts().values():
            print(listed(layout.id, 10, layout.description, layout.missing()))
        return 0
    refuse_remote_out(args.out)  # before anything is fitted or written (it would be a folder named s3:)
    spec = spec_from_args(args)
    chosen = parse_layouts(args.layouts) if args.layouts is not None else None
    name = spec.preset or (f"like-{os.path.basename(os.path.normpath(args.like))}" if args.like else
                           f"{spec.height}x{spec.width}x{spec.channels}-{spec.dtype}")
    if spec.variable:
        name += "-" + spec.sizes.split(":", 1)[0]
    out = args.out or os.path.join("data", f"{name}-{spec.count}")
    manifest, reports = generate(out, spec, chosen, args.workers, args.force,
                                 progress=False if args.quiet else None, settings=settings_from_args(args))
    if not args.quiet:
        if spec.variable:
            px = sum(h * w * c for h, w, c in manifest.shapes) * spec.np_dtype.itemsize
            shown = spec.sizes if len(spec.sizes) <= 60 else f"{spec.sizes[:57]}..."
            print(f"corpus {out}: {spec.count:,} images of varying size ({shown}; at most {spec.height}x{spec.width}"
                  f"x{spec.channels} {spec.dtype}), {px:,} B of pixels, seed {spec.seed}")
        else:
            print(f"corpus {out}: {spec.count:,} x {spec.pixel_bytes:,} B of pixels "
                  f"({spec.height}x{spec.width}x{spec.channels} {spec.dtype}), seed {spec.seed}")
        print(format_table(reports))
        if args.layouts is None:
            for line in left_out_lines():
                print(line)
    return 0


def dispatch(argv=None) -> int:
    """`python -m generator ingest ...` (generator.ingest) or the synthetic generator."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["ingest"]:
        from .ingest import main as ingest_main

        return ingest_main(argv[1:])
    return main(argv)


if __name__ == "__main__":
    sys.exit(run_main("python -m generator", dispatch))
