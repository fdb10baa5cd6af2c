"""python -m generator.objectstore: the bundled S3 server (serve, stop) and copying corpora (upload, download)."""

from __future__ import annotations

import sys
import time

from ..cli import Parser, int_in, run_main

INTERRUPTED = {
    "serve": "the server was stopped",
    "upload": "the upload is not a corpus yet (its manifest goes last): rerun the same command to resume",
    "download": "the download is not a corpus yet (its manifest goes last): rerun the same command to resume",
}


def build_parser() -> Parser:
    p = Parser(prog="python -m generator.objectstore", description=__doc__.strip())
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    s = sub.add_parser("serve", help="run an S3 server (weed mini) on 127.0.0.1 until Ctrl-C",
                       description="Run SeaweedFS's S3 server on 127.0.0.1 with its data in --dir until Ctrl-C or "
                                   "SIGTERM (or `stop --dir`); prints the endpoint and the AWS_* lines to export.")
    s.add_argument("--dir", required=True, help="the server's data directory (made if missing; kept)")
    s.add_argument("--port", type=int_in(1, 65535), default=None, help="the S3 port (default: a free one)")
    s.add_argument("--bucket", action="append", default=[], help="create this bucket on start (repeatable)")
    t = sub.add_parser("stop", help="stop the server serving --dir (also one left by a killed run)")
    t.add_argument("--dir", required=True, help="the server's data directory")
    u = sub.add_parser("upload", help="copy a local corpus to s3://BUCKET/PREFIX (manifest last; resumable)")
    u.add_argument("src", metavar="LOCAL_CORPUS")
    u.add_argument("url", metavar="s3://BUCKET/PREFIX")
    d = sub.add_parser("download", help="copy a corpus at s3://BUCKET/PREFIX into a local directory (resumable)")
    d.add_argument("url", metavar="s3://BUCKET/PREFIX")
    d.add_argument("dst", metavar="LOCAL")
    for q in (u, d):
        q.add_argument("--workers", type=int_in(1, 256), default=8, help="requests in flight (default 8)")
        q.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def serve(args) -> int:
    from .server import S3Server, export_lines

    server = S3Server(args.dir, args.port, buckets=args.bucket).start()
    try:
        print(f"S3 endpoint {server.endpoint} (weed pid {server.pid}, data in {server.data_dir}); for clients:")
        print(export_lines(server.env()), flush=True)
        print("Ctrl-C (or `python -m generator.objectstore stop --dir ...`) stops it", file=sys.stderr, flush=True)
        while server.proc.poll() is None:
            time.sleep(0.2)
        if server.record is not None and not server.record.exists():
            print("stopped by `stop`", file=sys.stderr)
            return 0
        from .server import ServerError

        raise ServerError(f"weed exited by itself (code {server.proc.returncode}): {server.log_tail()}; "
                          f"see {server.data_dir / 'weed.log'}")
    finally:
        server.stop()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "stop":
        from .server import stop_dir

        stopped = stop_dir(args.dir)
        print(f"stopped {len(stopped)} server(s) of {args.dir}" if stopped else f"no server recorded in {args.dir}")
        return 0
    from .store import parse_url
    from .transfer import download, upload

    if args.command == "upload":
        parse_url(args.url)
        put, skipped = upload(args.src, args.url, args.workers, args.quiet)
        print(f"uploaded {args.src} to {args.url}: {put:,} objects put, {skipped:,} already there")
    else:
        parse_url(args.url)
        got, skipped = download(args.url, args.dst, args.workers, args.quiet)
        print(f"downloaded {args.url} to {args.dst}: {got:,} objects fetched, {skipped:,} already there")
    return 0


if __name__ == "__main__":
    sys.exit(run_main("python -m generator.objectstore", main,
                      interrupted=lambda argv: next((v for k, v in INTERRUPTED.items() if k in argv),
                                                    "rerun the command")))
