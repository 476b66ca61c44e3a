"""Every failure a reader can cause, run as a real command: one line on stderr, the documented exit
status (2 bad input, 1 failed run, 130 interrupt), no traceback, and nothing finished lost."""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import torch

from identlib import cache, experiments
from identlib.config import RunConfig
from test_chapters import write_chapter

TINY = ["-p", "depth", "2", "-p", "width", "8", "-p", "steps", "5"]


def identlib(*args, env=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "identlib", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, **kwargs)


def last_line(proc) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines, "nothing printed"
    identlib_lines = [line for line in lines if line.startswith("identlib: ")]
    assert len(identlib_lines) == 1, proc.stderr                 # one line of ours
    return identlib_lines[0]


def test_data_folder_without_the_data(tmp_path):
    empty = tmp_path / "nodata"
    empty.mkdir()
    proc = identlib("train", *TINY, env={"IDENTLIB_DATA_DIR": str(empty)})
    assert proc.returncode == 2
    line = last_line(proc)
    assert "IDENTLIB_DATA_DIR" in line and "mnist" in line


def test_corrupt_data_file(tmp_path, data_dir):
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    target = copy / "mnist" / "train-images-idx3-ubyte.gz"
    target.write_bytes(target.read_bytes()[:-100])
    proc = identlib("train", *TINY, env={"IDENTLIB_DATA_DIR": str(copy)})
    assert proc.returncode == 2
    assert "md5" in last_line(proc).lower()


def test_diverging_training():
    proc = identlib("train", "-p", "lr", "100", "-p", "optimizer", "gd", "-p", "steps", "200", "-p", "width", "8",
                    "-p", "depth", "2")
    assert proc.returncode == 1
    assert "training diverged" in last_line(proc) and "smaller lr" in last_line(proc)


def test_cache_folder_under_a_plain_file(tmp_path):
    plain = tmp_path / "file"
    plain.write_text("not a folder")
    proc = identlib("train", *TINY, env={"IDENTLIB_CACHE_DIR": str(plain / "cache")})
    assert proc.returncode == 2
    assert "IDENTLIB_CACHE_DIR" in last_line(proc)


@pytest.mark.parametrize("args, status, words", [
    (["train", "-p", "lr", "-1"], 2, "lr must be > 0"),
    (["train", "-p", "colour", "red"], 2, "unknown config field"),
    (["params", "no_chapter"], 2, "unknown chapter"),
    (["run", "linear_fcn", "-p", "depth", "0"], 2, "did you mean 'depths'"),
    (["refresh", "--jobs", "0"], 2, "--jobs must be >= 1"),
    (["claims", "missing.ipynb"], 2, "no notebook at"),
])
def test_bad_input(args, status, words):
    proc = identlib(*args)
    assert proc.returncode == status
    assert words in last_line(proc)


def test_debug_shows_the_traceback(tmp_path):
    empty = tmp_path / "nodata"
    empty.mkdir()
    proc = identlib("--debug", "train", *TINY, env={"IDENTLIB_DATA_DIR": str(empty)})
    assert proc.returncode == 1 and "Traceback" in proc.stderr
    proc = identlib("train", *TINY, env={"IDENTLIB_DATA_DIR": str(empty), "IDENTLIB_DEBUG": "1"})
    assert "Traceback" in proc.stderr


def _no_temporary_files(root: Path):
    left = [p for p in root.rglob("*") if p.name.startswith(".")]
    assert left == [], left


def test_interrupt_keeps_finished_networks(tmp_path):
    """SIGINT (Ctrl-C reaches the whole process group) while a long network trains: exit 130, one
    line that says how many networks were kept and how to resume; the cache holds only whole
    entries."""
    env = {**os.environ, "IDENTLIB_CACHE_DIR": str(tmp_path / "cache")}
    done = identlib("train", *TINY, env={"IDENTLIB_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr
    long = RunConfig(model="cnn", depth=4, channels=8, steps=200000)
    proc = subprocess.Popen([sys.executable, "-m", "identlib", "train", "-p", "model", "cnn", "-p", "depth", "4",
                             "-p", "channels", "8", "-p", "steps", "200000"], env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, start_new_session=True,
                            # as from a terminal: a test process that ignores SIGINT (an earlier test
                            # in the same pytest-xdist worker may leave it so) would pass that on, and
                            # Python then installs no KeyboardInterrupt handler in the child
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lock = tmp_path / "cache" / "locks" / f"{long.digest()}.lock"   # taken just before it trains
    deadline = time.monotonic() + 180                          # a loaded machine imports slowly
    while not lock.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert lock.exists(), "the long network never started training"
    time.sleep(2)                                              # inside training by now
    os.killpg(proc.pid, signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        pytest.fail(f"still running 120 s after SIGINT; its stderr: {err[-2000:]!r}")
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    line = [t for t in err.splitlines() if t.startswith("identlib: ")][-1]
    assert "interrupted" in line and "run the same command again to resume" in line
    root = tmp_path / "cache" / "results"
    entries = list(root.iterdir())
    assert len(entries) == 1                                   # the finished network, nothing else
    assert torch.load(entries[0] / "result.pt", weights_only=True)["format"] == cache.FORMAT
    _no_temporary_files(root)


def test_a_failing_chapter_ends_with_its_name_and_cell(tmp_path):
    book = tmp_path / "book"
    write_chapter(book / "broken.ipynb", "lr = 100.0  # choice: far too large",
                  "import identlib as il\nil.run(il.RunConfig(depth=2, width=8, lr=lr, steps=200))")
    proc = identlib("run", "broken", "--no-progress", "-o", str(tmp_path / "out.ipynb"),
                    env={"IDENTLIB_BOOK_DIR": str(book), "IDENTLIB_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 1
    line = last_line(proc)
    assert line.startswith("identlib: chapter broken failed in cell 2: TrainingDiverged: ")
    assert "out.ipynb" in line                                 # where the full traceback is
    proc = identlib("refresh", "broken", "--no-progress",
                    env={"IDENTLIB_BOOK_DIR": str(book), "IDENTLIB_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 1
    assert "keeps its stored outputs" in last_line(proc)
    assert (book / ".broken.failed.ipynb").exists()


# --- a damaged cache entry is not fatal ------------------------------------------------------------

CONFIG = RunConfig(depth=2, width=8, steps=5)


@pytest.mark.parametrize("damage", ["truncated", "no config", "old format", "other config"])
def test_a_damaged_entry_is_reported_and_retrained(damage):
    first = experiments.run(CONFIG)
    folder = cache.entry(CONFIG)
    if damage == "truncated":
        data = (folder / "result.pt").read_bytes()
        (folder / "result.pt").write_bytes(data[: len(data) // 2])
    elif damage == "no config":
        (folder / "config.json").unlink()
    elif damage == "old format":
        payload = torch.load(folder / "result.pt", weights_only=True)
        del payload["format"]
        torch.save(payload, folder / "result.pt")
    else:
        (folder / "config.json").write_text(json.dumps(CONFIG.replace(seed=9).to_dict()))
    with pytest.warns(cache.DamagedEntry, match="damaged cache entry .* training it again"):
        again = experiments.run(CONFIG)
    for k, v in first.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[k], v)
    assert cache.load_result(CONFIG) is not None                # stored whole again


def test_a_full_disk_while_storing_leaves_the_cache_as_it_was(monkeypatch):
    experiments.run(CONFIG)
    before = sorted(p.relative_to(cache.root()) for p in cache.root().rglob("*"))
    other = CONFIG.replace(seed=1)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match="No space left"):
        experiments.run(other)
    with pytest.raises(OSError, match="No space left"):
        cache.write_artifact(CONFIG, "layer-maps-x.pt", lambda f: torch.save({}, f))
    assert sorted(p.relative_to(cache.root()) for p in cache.root().rglob("*")) == before
