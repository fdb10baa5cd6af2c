"""The process's limit of open files: raised at the start of every command, and the share of it a
reader or writer may keep open for reuse.

- raise_open_files(): every CLI (generator.cli.run_main: `python -m generator`, `loaders`, `bench`)
  first raises the soft RLIMIT_NOFILE to the hard limit, as a shell's `ulimit -n $(ulimit -Hn)`
  would: a 1,000-class files corpus or 500 tar shards need more than the usual soft 1,024.
- keep_open(per_handle): how many handles a reader may cache (class directories, shard files):
  an eighth of the soft limit, divided by the descriptors each costs, at least 2. The rest is left
  to the process (other readers, worker pipes, the libraries). Code that caches one handle per
  shard or directory keeps at most this many open (least recently used closed first), so a
  corpus of any number of shards or classes reads within any limit; one that runs out anyway is
  one line naming `ulimit -n` (generator.errors.raise_if_out_of_handles), never blamed on the corpus.
"""

from __future__ import annotations

import resource

MIN_KEEP = 2
UNLIMITED_AS = 1 << 20  # what an unlimited soft limit counts as


def raise_open_files() -> tuple[int, int]:
    """Raise the soft limit of open files to the hard limit; (soft, hard) after. Nothing changes
    when it cannot be raised (a platform that refuses: the limits stay as they were)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and (hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # e.g. a hard limit above the kernel's nr_open: leave it
            return soft, hard
        soft = hard
    return soft, hard


def soft_open_files() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return UNLIMITED_AS if soft == resource.RLIM_INFINITY else soft


def keep_open(per_handle: int = 1) -> int:
    """Handles of `per_handle` descriptors each that one cache may keep open (module docstring)."""
    return max(MIN_KEEP, soft_open_files() // 8 // max(1, per_handle))
