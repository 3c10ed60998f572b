"""The suite's order (tests/conftest.py): the tests of ``LONGEST_FIRST`` head each worker's share
of the collection, dealt in turn, and every name in the list still names a test."""

import tomllib
from pathlib import Path
from types import SimpleNamespace

import conftest

ROOT = Path(__file__).resolve().parent.parent


def _ordered(nodeids: list[str], workers: int | None) -> list[str]:
    config = SimpleNamespace() if workers is None else SimpleNamespace(workerinput={"workercount": workers})
    items = [SimpleNamespace(nodeid=nodeid) for nodeid in nodeids]
    conftest.pytest_collection_modifyitems(config, items)
    return [item.nodeid for item in items]


def test_every_long_test_named_exists():
    for prefix in conftest.LONGEST_FIRST:
        path, _, test = prefix.partition("::")
        assert (ROOT / path).is_file(), prefix
        name = test.partition("[")[0]
        assert not name or f"def {name}(" in (ROOT / path).read_text(), prefix


def test_the_long_tests_head_each_workers_share(monkeypatch):
    monkeypatch.setattr(conftest, "LONGEST_FIRST", ("b.py::slowest", "c.py", "a.py::slow[2"))
    short = [f"a.py::t{i}" for i in range(8)]
    nodeids = short[:4] + ["a.py::slow[1]", "a.py::slow[2]", "b.py::slowest", "c.py::x", "c.py::y"] + short[4:]
    # worker 0 takes the first 13 // 2 = 6 tests: groups 0 and 2, then short tests in their order
    first = ["b.py::slowest", "a.py::slow[2]", "a.py::t0", "a.py::t1", "a.py::t2", "a.py::t3"]
    second = ["c.py::x", "c.py::y", "a.py::slow[1]", "a.py::t4", "a.py::t5", "a.py::t6", "a.py::t7"]
    assert _ordered(nodeids, workers=2) == first + second
    # in one process the long tests run first, longest first
    assert _ordered(nodeids, workers=None)[:4] == ["b.py::slowest", "c.py::x", "c.py::y", "a.py::slow[2]"]
    assert sorted(_ordered(nodeids, workers=3)) == sorted(nodeids)


def test_the_workers_steal_work():
    """The shares above are worksteal's: without it each worker would get chunks in turn."""
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "--dist worksteal" in options["addopts"]
