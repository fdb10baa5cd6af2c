"""Small helpers shared by test modules."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def load_script(path: Path):
    """The module of a script file (tests/golden/make.py, ...) loaded by its path, under a name of its
    own, without putting its folder on sys.path (where tests/golden's layout folders, zarr/ and
    tfrecord/, would pass for the libraries of those names)."""
    name = f"_script_{path.parent.name}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def need_layout(layout_id: str) -> None:
    """Skip the calling test, naming what to install, where the layout's libraries do not import."""
    import pytest

    from generator.layouts import get_layout

    if (why := get_layout(layout_id).missing()) is not None:
        pytest.skip(why)
