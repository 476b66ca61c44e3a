"""Doctests in identlib/ run with a private results cache and the offline data copy where there is
one (tests/ has its own fixtures; nbval's notebook kernels are not affected)."""
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parent.parent / "shared" / "data"

# The pages at the paper's scale (book/paper/) took hours to execute: nbval never re-executes them;
# tests/test_paper.py checks their stored claims and how they were made.
collect_ignore = ["book/paper"]


@pytest.fixture(autouse=True)
def _doctest_environment(request, tmp_path_factory, monkeypatch):
    if isinstance(request.node, pytest.DoctestItem):
        monkeypatch.setenv("IDENTLIB_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        monkeypatch.setenv("IDENTLIB_WORKERS", "0")
        if not __import__("os").environ.get("IDENTLIB_DATA_DIR") and SHARED_DATA.is_dir():
            monkeypatch.setenv("IDENTLIB_DATA_DIR", str(SHARED_DATA))


# nbval compares what is stable across machines. Glued values (MyST-NB's mime keys under
# application/papermill.record/) are results whose digits depend on the CPU's kernels: the claims
# that cover them are compared instead. HTML tables repeat their text/plain form, and the claims
# table's HTML and JSON carry the measured values that its compared plain text leaves out.
GLUE = "application/papermill.record/"
NOT_COMPARED = ("text/html", "application/vnd.identlib.claims+json",
                *(GLUE + kind for kind in ("text/plain", "text/html", "text/markdown", "text/latex",
                                            "image/png", "image/svg+xml", "application/json")))


def pytest_collectstart(collector):
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += NOT_COMPARED
