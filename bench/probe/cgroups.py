"""Memory cgroups for the capped regime: find where this process may make one, make it, cap it,
read its counters, and remove it (with everything in it).

Where a group can be made, in this order:
- cgroup v2 with the memory controller: a child of this process's own cgroup (a delegated
  subtree: root, or a session started under `systemd-run --user --scope -p Delegate=yes ...`,
  whose own group is then writable); the memory controller must be in its cgroup.controllers.
- cgroup v1's memory controller: a child of this process's memory cgroup (root, or a delegated
  directory).
Anything else is `CgroupUnavailable`: one line saying what is needed, never an uncapped run.

Groups are named `layoutbench-<owner pid>-<n>`. `sweep_stale` removes groups whose owner is gone
(a parent killed with SIGKILL), killing what is still inside them first.

Counters, per version (bytes unless said): usage (v1 memory.usage_in_bytes, v2 memory.current),
peak (v1 memory.max_usage_in_bytes, v2 memory.peak; both reset per epoch where the kernel allows),
page cache (v1 stat total_cache, v2 stat file), rss (v1 total_rss + total_shmem, v2 anon + shmem),
limit hits (v1 memory.failcnt, v2 memory.events max) and OOM kills (v1 memory.oom_control
oom_kill, v2 memory.events oom_kill).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from generator.errors import UsageError

from .probes import mounts

PREFIX = "layoutbench"
NEEDS = ("needs a memory cgroup this process can create: run as root (cgroup v1 memory controller or "
         "cgroup v2 with memory enabled), or start the command under systemd-run --user --scope -p Delegate=yes")


class CgroupUnavailable(UsageError):
    """No memory cgroup can be made here (exit 2, one line)."""


def _mounts() -> list[tuple[str, str, str]]:
    """(mount point, fstype, super options) of cgroup mounts."""
    return [(mount, fstype, options) for mount, fstype, _, options in mounts() if fstype in ("cgroup", "cgroup2")]


def _own_paths() -> dict[str, str]:
    """controller (or '' for v2) -> this process's cgroup path."""
    out = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            out[c] = path
    return out


def find_parent() -> tuple[int, Path]:
    """(version, directory) under which this process can make memory cgroups; CgroupUnavailable
    with the reason otherwise."""
    own, mounts = _own_paths(), _mounts()
    reasons = []
    for point, fstype, _ in mounts:
        if fstype != "cgroup2" or "" not in own:
            continue
        d = Path(point + own[""])
        try:
            controllers = (d / "cgroup.controllers").read_text().split()
        except OSError:
            continue
        if "memory" not in controllers:
            reasons.append(f"the cgroup v2 mount {point} has no memory controller ({' '.join(controllers) or 'none'})")
            continue
        if not os.access(d, os.W_OK):
            reasons.append(f"{d} is not writable")
            continue
        try:
            if "memory" not in (d / "cgroup.subtree_control").read_text().split():
                (d / "cgroup.subtree_control").write_text("+memory")
        except OSError as exc:
            reasons.append(f"cannot enable the memory controller below {d} ({exc.strerror})")
            continue
        return 2, d
    for point, fstype, opts in mounts:
        if fstype == "cgroup" and "memory" in opts.split(",") and "memory" in own:
            d = Path(point + own["memory"])
            if d.is_dir() and os.access(d, os.W_OK):
                return 1, d
            reasons.append(f"the cgroup v1 memory directory {d} is not writable")
    if not reasons:
        reasons.append("no memory cgroup controller is mounted")
    raise CgroupUnavailable(f"--cache capped {NEEDS}; here {'; '.join(reasons)}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Group:
    version: int
    path: Path

    # -- files -----------------------------------------------------------------------------------
    def _read(self, name: str) -> str:
        return (self.path / name).read_text()

    def _int(self, name: str) -> int | None:
        try:
            text = self._read(name).strip()
        except OSError:
            return None
        return None if text == "max" else int(text)

    def _kv(self, name: str) -> dict[str, int]:
        try:
            return {k: int(v) for k, v in (line.split() for line in self._read(name).splitlines() if line.strip())}
        except (OSError, ValueError):
            return {}

    # -- control ----------------------------------------------------------------------------------
    def set_limit(self, nbytes: int) -> None:
        (self.path / ("memory.max" if self.version == 2 else "memory.limit_in_bytes")).write_text(str(int(nbytes)))
        if self.version == 2:
            try:
                (self.path / "memory.swap.max").write_text("0")  # the cap is memory, not swap
            except OSError:
                pass

    def limit(self) -> int | None:
        return self._int("memory.max" if self.version == 2 else "memory.limit_in_bytes")

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def pids(self) -> list[int]:
        try:
            return [int(x) for x in self._read("cgroup.procs").split()]
        except OSError:
            return []

    def reset_peak(self) -> None:
        try:
            (self.path / ("memory.peak" if self.version == 2 else "memory.max_usage_in_bytes")).write_text("0")
        except OSError:
            pass  # older kernels: the peak is then since the group was made

    def stats(self) -> dict:
        """usage, peak, page cache, rss, file (the page cache of files, shared memory left out),
        limit hits and OOM kills (cumulative counters)."""
        if self.version == 2:
            st, ev = self._kv("memory.stat"), self._kv("memory.events")
            return {"usage": self._int("memory.current"), "peak": self._int("memory.peak"),
                    "cache": st.get("file"), "rss": st.get("anon", 0) + st.get("shmem", 0),
                    "file": st.get("file", 0) - st.get("shmem", 0),
                    "limit_hits": ev.get("max"), "oom_kills": ev.get("oom_kill")}
        st = self._kv("memory.stat")
        oom = self._kv("memory.oom_control")
        return {"usage": self._int("memory.usage_in_bytes"), "peak": self._int("memory.max_usage_in_bytes"),
                "cache": st.get("total_cache"), "rss": st.get("total_rss", 0) + st.get("total_shmem", 0),
                "file": st.get("total_cache", 0) - st.get("total_shmem", 0),
                "limit_hits": self._int("memory.failcnt"), "oom_kills": oom.get("oom_kill")}

    def kill_all(self, timeout: float = 5.0) -> None:
        """SIGKILL everything in the group and wait (briefly) until it is empty."""
        deadline = time.monotonic() + timeout
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)

    def remove(self) -> None:
        """Kill what is left in it, then remove the group (its page cache goes to the parent)."""
        if not self.path.exists():
            return
        self.kill_all()
        for attempt in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02 * (attempt + 1) ** 0.5)  # dying processes still leaving


_COUNT = [0]


def create() -> Group:
    """A new, empty, unlimited group named after this process (the owner)."""
    version, parent = find_parent()
    sweep_stale(parent)
    _COUNT[0] += 1
    path = parent / f"{PREFIX}-{os.getpid()}-{_COUNT[0]}"
    try:
        path.mkdir()
    except FileExistsError:  # left by an earlier process with this pid: take it over
        Group(version, path).remove()
        path.mkdir()
    except OSError as exc:
        raise CgroupUnavailable(f"--cache capped {NEEDS}; here mkdir {path} failed ({exc.strerror})") from None
    return Group(version, path)


def sweep_stale(parent: Path) -> list[Path]:
    """Remove groups this tool made whose owner process is gone (killed with SIGKILL, say)."""
    removed = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for d in entries:
        parts = d.name.split("-")
        if len(parts) != 3 or parts[0] != PREFIX or not parts[1].isdigit() or not d.is_dir():
            continue
        if int(parts[1]) != os.getpid() and not _alive(int(parts[1])):
            Group(2 if (d / "memory.max").exists() else 1, d).remove()
            removed.append(d)
    return removed


def groups_of(owner: int) -> list[Path]:
    """The groups owned by process `owner` that still exist (for tests and checks)."""
    try:
        _, parent = find_parent()
    except CgroupUnavailable:
        return []
    return sorted(p for p in parent.glob(f"{PREFIX}-{owner}-*") if p.is_dir())
