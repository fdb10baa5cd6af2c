"""python -m loaders verify DIR|s3://BUCKET/PREFIX: check every sample of every layout against the reference."""

from __future__ import annotations

import os
import sys

from generator.build import parse_layouts
from generator.objectstore.store import is_s3_url
from generator.cli import Parser, run_main
from generator.errors import CorpusError, UsageError
from generator.manifest import read_manifest

from .verify import verify

SHOWN = 50  # mismatch lines printed; the counts cover the rest
# verify's exit codes: distinct, so a script can tell "bad samples" from "not a corpus to check"
OK, MISMATCHES, USAGE, UNCHECKABLE = 0, 1, 2, 3
INTERRUPTED = "verify does not resume: rerun it to check the corpus from the start"


class UncheckableCorpus(CorpusError):
    """The corpus as a whole cannot be checked (no manifest, a damaged or foreign one): exit 3."""

    exit_code = UNCHECKABLE


def build_parser() -> Parser:
    p = Parser(prog="python -m loaders", description=__doc__.strip())
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    v = sub.add_parser("verify", help="every sample bit-identical to the generator's reference and manifest",
                       description="Check that every sample of every layout equals the generator's reference "
                                   "sample (payload bytes, decoded pixels, label) and its manifest crc32. "
                                   "Exit 0 when all match, 1 when any sample or layout does not match (listed), "
                                   "2 for bad arguments, 3 when the corpus as a whole cannot be checked (no "
                                   "manifest, a damaged or foreign one, an empty directory).")
    v.add_argument("dir", metavar="DIR", help="corpus directory (holding manifest.json), or s3://BUCKET/PREFIX where "
                                              "one was uploaded (its files, tar and npy layouts, read over S3)")
    v.add_argument("--layouts", help="comma list (default: every complete layout of the corpus)")
    v.add_argument("--source", metavar="SRC", default=None,
                   help="an ingested corpus's source (the ImageFolder tree or list it was made from): every sample "
                        "checked against its file's bytes, pixels, label, shape and dtype")
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    s3 = is_s3_url(args.dir)
    if not s3 and not os.path.isdir(args.dir):
        raise UsageError(f"{args.dir}: no such corpus directory (make one with python -m generator)")
    layouts = parse_layouts(args.layouts) if args.layouts is not None else None
    try:
        if s3:  # a corpus under an S3 prefix (loaders.s3)
            from .s3 import read_s3_manifest

            count = read_s3_manifest(args.dir).spec.count
        else:
            count = read_manifest(args.dir).spec.count
    except CorpusError as exc:  # the manifest itself: nothing can be compared with it
        raise UncheckableCorpus(str(exc)) from None
    names, found = verify(args.dir, layouts, progress=False if args.quiet else None, source=args.source)
    for m in found[:SHOWN]:
        print(f"MISMATCH {m}")
    if len(found) > SHOWN:
        print(f"... and {len(found) - SHOWN} more mismatches")
    for name in ["source", "manifest", *names]:
        if name == "source" and args.source is None:
            continue
        bad = len({m.index for m in found if m.layout == name and m.index >= 0})
        whole = any(m.layout == name and m.index < 0 for m in found)  # the layout itself, or files beyond the samples
        if bad or whole or name != "manifest":
            print(f"{name}: " + (f"{bad:,} of {count:,} samples do not match" if bad else
                                 "the layout does not match (see above)" if whole else f"all {count:,} samples match"))
    return MISMATCHES if found else OK


if __name__ == "__main__":
    sys.exit(run_main("python -m loaders", main, interrupted=INTERRUPTED))
