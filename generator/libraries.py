"""Which optional libraries this process can use, and what installs the ones it cannot.

A library is present when `import NAME` succeeds here and gives a real module. Two look-alikes are
not the library: a folder named after it anywhere on sys.path (the current directory of
`python -m ...`, a user's `zarr/` data folder) imports as an empty namespace package, and a package
that is installed but fails to import (a wheel built for another torch) raises on import. Each
answer is found once per process and kept; a namespace package imported while looking is taken
out of sys.modules again, so later code importing the name gets the same error any script would.

Everything that asks "is X installed?" asks here: the layout and codec registries, the decoders'
choice, the torch and MPI integrations.
"""

from __future__ import annotations

import functools
import importlib
import sys

# module -> the extra of layoutbench that installs it (pyproject.toml's optional-dependencies)
EXTRAS = {
    "pyarrow": "arrow",
    "zarr": "zarr",
    "crc32c": "records",
    "webdataset": "records",
    "tfrecord": "records",
    "imagecodecs": "codecs",
    "simplejpeg": "codecs",
    "pyspng": "codecs",
    "torch": "torch",
    "mpi4py": "mpi",
    "obstore": "s3",
    "lance": "lance",
    "litdata": "litdata",
}
# the make target that installs an extra on the README's quick-start path (into .venv)
TARGETS = {"arrow": "install-extras", "zarr": "install-extras", "records": "install-extras",
           "codecs": "install-extras", "layouts": "install-extras", "lance": "install-extras", "litdata": "install-litdata", "torch": "install-torch", "mpi": "install-mpi",
           "s3": "install-s3"}


@functools.cache
def problem(name: str) -> str | None:
    """None when `name` imports here as a real module; else why not, as a phrase naming it."""
    before = set(sys.modules)
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            return f"{name} is not installed"
        return f"{name} does not import (it needs {exc.name}, which is not installed)"
    except Exception as exc:  # installed, but broken here: a wheel for another torch, a missing shared library
        return f"{name} is installed but does not import ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
    if getattr(module, "__file__", None) is None and hasattr(module, "__path__"):
        where = next(iter(module.__path__), "?")
        for key in set(sys.modules) - before:  # the namespace package and anything imported under it
            if key == name or key.startswith(name + "."):
                del sys.modules[key]
        return f"{name} is not installed (the folder {where} has its name but is not the library)"
    return None


def present(name: str) -> bool:
    """True when `name` imports here as a real module (see the module docstring)."""
    return problem(name) is None


def install_hint(extra: str | None, names=()) -> str:
    """How to install an extra (or, with none, the bare packages `names`): one phrase."""
    if extra is None:
        return f"pip install {' '.join(names)}"
    target = TARGETS.get(extra)
    return f"pip install -e '.[{extra}]'" + (f" (or make {target})" if target else "")


def missing(what: str, names, extra: str | None = None) -> str | None:
    """None when every module of `names` is present; else one line: `what` needs them, why each is
    not usable, and what installs them (`extra`, else the extra EXTRAS names for the first)."""
    absent = [n for n in names if problem(n) is not None]
    if not absent:
        return None
    hint = install_hint(extra or EXTRAS.get(absent[0].split(".")[0]), absent)
    if all(problem(n) == f"{n} is not installed" for n in absent):
        return f"{what} needs {', '.join(absent)}, which is not installed: {hint}"
    return f"{what} needs {'; '.join(f'{n}, which {problem(n)[len(n) + 1:]}' for n in absent)}: {hint}"
