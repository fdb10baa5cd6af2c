"""The layout registry: every registered layout comes with its writer, reader, suites and golden
corpus, and everything that needs "all layouts" derives from the registry."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from conformance import ReaderSuite, WriterSuite

from generator.errors import UsageError
from generator.layouts import Layout, LayoutWriter, get_layout, layout_ids, layouts, register, unregister
from loaders.base import Reader
from loaders.registry import readers

TESTS = Path(__file__).parent


def _suites() -> dict[type, set[str]]:
    """The layouts each suite is subclassed for, over every test module."""
    for path in sorted(TESTS.glob("test_*.py")):
        importlib.import_module(path.stem)  # tests/ is on sys.path; pytest may have imported it already
    return {suite: {cls.layout for cls in suite.__subclasses__()} for suite in (ReaderSuite, WriterSuite)}


def test_every_layout_has_a_writer_a_reader_and_both_suites():
    suites = _suites()
    for layout_id, layout in layouts().items():
        writer, reader = layout.writer_class(), layout.reader_class()
        assert issubclass(writer, LayoutWriter) and writer.name == layout_id
        assert issubclass(reader, Reader) and reader.layout == layout_id
        assert layout.description and "\n" not in layout.description
        for suite, covered in suites.items():
            assert layout_id in covered, f"no test module subclasses {suite.__name__} for the {layout_id} layout"


def test_the_registry_is_the_one_list():
    assert list(readers()) == list(layout_ids())
    assert set(layout_ids(available=True)) <= set(layout_ids())
    assert {"files", "hdf5", "lmdb"} <= set(layout_ids())


def test_a_missing_library_is_one_line_naming_the_extra():
    gone = Layout("gone", "needs a library that is not there", "generator.layouts.files:FilesWriter",
                  "loaders.files:FilesReader", libraries=("no_such_module_xyz",), extra="gone")
    register(gone)
    try:
        assert "gone" not in layout_ids(available=True)
        why = gone.missing()
        assert why == "the gone layout needs no_such_module_xyz, which is not installed: pip install -e '.[gone]'"
        from generator.build import parse_layouts

        with pytest.raises(UsageError, match="no_such_module_xyz, which is not installed"):
            parse_layouts("files,gone")
    finally:
        unregister("gone")


def test_registering_twice_or_a_bad_id_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register(get_layout("files"))
    with pytest.raises(ValueError, match="letters, digits"):
        register(Layout("a b", "x", "m:W", "m:R"))
    with pytest.raises(UsageError, match="unknown layout 'nope'; choose from: files"):
        get_layout("nope")


def test_capabilities_are_flags_on_the_classes():
    caps = get_layout("files").capabilities()
    assert caps["supports_parallel_write"] is True and caps["supports_random_access"] is True
    assert get_layout("hdf5").capabilities()["supports_parallel_write"] is False


def test_list_layouts_prints_each_id_and_description(capsys):
    from generator.__main__ import main

    assert main(["--list-layouts"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith(" ")]
    assert [line.split()[0] for line in lines] == list(layout_ids())
    for line, layout in zip(lines, layouts().values()):
        assert line.endswith(layout.description)
        assert line.split()[1] == ("ready" if layout.missing() is None else "missing")
