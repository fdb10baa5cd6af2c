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
