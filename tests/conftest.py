"""Shared test setup: a private cache per test, the offline copy of the raw data, few threads."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def _data_dir() -> Path | None:
    """Where the raw MNIST / Fashion-MNIST files are: $IDENTLIB_DATA_DIR, else ../shared/data."""
    env = os.environ.get("IDENTLIB_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return SHARED_DATA if SHARED_DATA.is_dir() else None


DATA_DIR = _data_dir()

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Every test gets its own IDENTLIB_CACHE_DIR and reads raw data from the offline copy."""
    monkeypatch.setenv("IDENTLIB_CACHE_DIR", str(tmp_path / "cache"))
    if DATA_DIR is not None:
        monkeypatch.setenv("IDENTLIB_DATA_DIR", str(DATA_DIR))
    monkeypatch.delenv("IDENTLIB_PROGRESS", raising=False)
    monkeypatch.delenv("IDENTLIB_THREADS", raising=False)
    monkeypatch.delenv("IDENTLIB_GROUP", raising=False)
    monkeypatch.setenv("IDENTLIB_WORKERS", "0")        # tests train in their own process unless they ask


@pytest.fixture
def data_dir() -> Path:
    """The folder holding the real raw files (skips the test where there is none)."""
    if DATA_DIR is None or not (DATA_DIR / "mnist").is_dir():
        pytest.skip("no local copy of the raw data (set IDENTLIB_DATA_DIR)")
    return DATA_DIR

