"""Errors every part of layoutbench raises: each names what is wrong and what to do."""


class LayoutbenchError(Exception):
    """Base class: the CLI prints the message on one line instead of a traceback."""

    exit_code = 1

    def __str__(self) -> str:  # one line, whatever a library put in the text it wraps (h5py: newlines)
        return " ".join(super().__str__().split())


class UsageError(LayoutbenchError, ValueError):
    """A bad argument or setting (the CLI exits 2)."""

    exit_code = 2


class CorpusError(LayoutbenchError):
    """A corpus directory that is missing, incomplete, of another version or another spec."""


class SampleError(LayoutbenchError):
    """One sample that is missing, truncated or corrupt; names layout, index and where."""

    def __init__(self, layout: str, index: int, where: str, problem: str):
        problem = " ".join(str(problem).split())
        self.layout, self.index, self.where, self.problem = layout, index, where, problem
        super().__init__(
            f"{layout} sample {index} at {where}: {problem} "
            f"(run `python -m loaders verify` on the corpus, or regenerate it with --force)"
        )

    def __reduce__(self):  # picklable with its fields, so it crosses from worker processes intact
        return (SampleError, (self.layout, self.index, self.where, self.problem))


class ResourceError(LayoutbenchError):
    """A limit of this process or machine ran out (open files, memory): never the corpus's fault;
    the message names the limit and how to raise it."""


def raise_if_out_of_handles(exc: BaseException, what: object = None) -> None:
    """Raise ResourceError, one line naming `ulimit -n`, when exc is EMFILE (this process's limit of
    open files) or ENFILE (the system's); return otherwise, so the caller reports exc its own way.
    `what`: the file being opened, named in the line."""
    import errno

    code = getattr(exc, "errno", None)
    if code not in (errno.EMFILE, errno.ENFILE):
        return
    at = f" opening {_quote(what)}" if what is not None else ""
    if code == errno.ENFILE:
        raise ResourceError(f"the system's table of open files is full (ENFILE){at}; close other programs' files "
                            f"or raise fs.file-max, then rerun (the corpus is not at fault)") from None
    raise ResourceError(f"too many open files (EMFILE){at}: this process may open {_nofile()}; {_raise_nofile()} "
                        f"and rerun (the corpus is not at fault)") from None


def raise_if_out_of_memory(exc: BaseException, what: object = None) -> None:
    """Raise ResourceError naming the memory limit when exc is ENOMEM or a MemoryError (e.g. under
    `ulimit -v`), instead of a misleading 'Input/output error'; return otherwise."""
    import errno

    if not (isinstance(exc, MemoryError) or getattr(exc, "errno", None) == errno.ENOMEM):
        return
    import resource

    at = f" at {_quote(what)}" if what is not None else ""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        raise ResourceError(f"out of memory (ENOMEM){at}: the machine's memory, or its maps (vm.max_map_count), ran "
                            f"out; free memory, then rerun (the corpus is not at fault)") from None
    raise ResourceError(f"out of memory (ENOMEM){at}: this process may use {soft:,} bytes of address space "
                        f"(`ulimit -v` {soft // 1024:,}); raise `ulimit -v` or free memory, then rerun (the corpus "
                        f"is not at fault)") from None


def _nofile() -> str:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return f"{soft:,} files (`ulimit -n`; the hard limit `ulimit -Hn` is {_limit(hard)})"


def _raise_nofile() -> str:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        return "raise the limit with `ulimit -n $(ulimit -Hn)`"
    return ("raise the hard limit, which this process cannot (`ulimit -Hn 65536` as root, or the nofile line of "
            "/etc/security/limits.conf), then `ulimit -n 65536`")


def _limit(value: int) -> str:
    import resource

    return "unlimited" if value == resource.RLIM_INFINITY else f"{value:,}"


QUOTE_LIMIT = 200  # characters of a user's value an error message quotes at most


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """A value for an error message: repr-safe (no newlines, undecodable bytes escaped) and at most
    `limit` characters, the cut marked with its full length."""
    text = str(value)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8") if _unencodable(text) else text
    text = " ".join(text.split()) if any(c in text for c in "\r\n\t") else text
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text):,} characters)"
    return text


def _unencodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


_quote = quote


def os_reason(exc: OSError) -> str:
    """exc's reason for an error message (its strerror); raises ResourceError instead when exc is a
    limit of this process or machine running out (EMFILE, ENFILE, ENOMEM): never the corpus's fault."""
    raise_if_out_of_handles(exc, getattr(exc, "filename", None))
    raise_if_out_of_memory(exc, getattr(exc, "filename", None))
    return exc.strerror or str(exc)
