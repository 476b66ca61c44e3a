"""Doctests in identlib/ run with a private results cache and the offline data copy where there is
one (tests/ has its own fixtures; nbval's notebook kernels are not affected)."""
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parent.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _doctest_environment(request, tmp_path_factory, monkeypatch):
    if isinstance(request.node, pytest.DoctestItem):
        monkeypatch.setenv("IDENTLIB_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        if not __import__("os").environ.get("IDENTLIB_DATA_DIR") and SHARED_DATA.is_dir():
            monkeypatch.setenv("IDENTLIB_DATA_DIR", str(SHARED_DATA))
