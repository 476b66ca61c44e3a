"""The results cache: one folder per trained network, and what is computed from it.

The cache lives in ``$IDENTLIB_CACHE_DIR/results`` (default ``~/.cache/identlib/results``). Each
entry is a folder named by :meth:`RunConfig.digest() <identlib.config.RunConfig.digest>` holding

- ``config.json``: the run's config;
- ``platform.json``: where it was trained (CPU, instruction set, torch, device). It is a record,
  not part of the key: an entry trained on another machine is valid here;
- ``result.pt``: the trained weights, loss history and whether training converged;
- artifacts computed from the network, each under a name that carries the digest of the code that
  computes it (:func:`artifact_name`): score tables, layer maps, a divergence marker.

Everything is written into a temporary file or folder and renamed into place in one step, so an
interrupted or failed write (a full disk, Ctrl-C) leaves the cache as it was, and two processes that
race on the same entry leave one valid result. They do not race, where the system has ``flock``: a
process that trains a network holds its lock (:func:`claim`, in ``$IDENTLIB_CACHE_DIR/locks``), so
that another process that needs it (a chapter executed side by side) waits and loads it rather than
training it again; the lock goes with the process, however it ends. An entry that cannot be read (a truncated
``result.pt``, a missing ``config.json``, another format) is reported in one warning line, moved out
of the way and trained again; it is never loaded.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

from .config import RunConfig, source_digest

__all__ = ["root", "entry", "stored_since", "ensure_writable", "load_result", "store_result", "platform_of", "artifact_name",
           "read_artifact", "write_artifact", "has", "claim", "DamagedEntry", "FORMAT"]

FORMAT = 2          # of result.pt; an entry of another format is retrained


class DamagedEntry(UserWarning):
    """A cache entry that could not be read; it is retrained."""


def root() -> Path:
    """``$IDENTLIB_CACHE_DIR/results``."""
    return Path(os.environ.get("IDENTLIB_CACHE_DIR", "~/.cache/identlib")).expanduser() / "results"


def stored_since(start: float) -> set[str]:
    """The digests of the networks stored in the results cache at or after ``start`` (epoch
    seconds; a second of slack for coarse file times)."""
    try:
        return {p.parent.name for p in root().glob("*/result.pt") if p.stat().st_mtime >= start - 1}
    except OSError:
        return set()


def entry(config: RunConfig) -> Path:
    return root() / config.digest()


def has(config: RunConfig) -> bool:
    """Whether a trained network of ``config`` is stored (not checked for damage)."""
    return (entry(config) / "result.pt").exists()


def ensure_writable() -> Path:
    """The cache folder, created if needed; an :class:`OSError` that names it and the fix if it
    cannot be."""
    path = root()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(err.errno, f"cannot create the results cache {path} ({err.strerror}); set "
                      "IDENTLIB_CACHE_DIR to a writable folder") from None
    return path


class claim(contextlib.AbstractContextManager):
    """The lock under which one process trains the network of ``config``. ``wait=False`` takes it
    only if it is free (``held`` says whether it was); ``wait=True`` waits for the process that
    holds it. Without ``fcntl`` (Windows) every claim is granted, and so is one in a training
    worker (:func:`identlib.run_all`'s processes), whose parent holds the claims: processes may
    then train a network twice, and the atomic writes keep one.

    >>> with claim(RunConfig(), wait=False) as mine:
    ...     with claim(RunConfig(), wait=False) as other:
    ...         mine.held, other.held
    (True, False)
    """

    def __init__(self, config: RunConfig, wait: bool = True):
        self.held, self._file = True, None
        try:
            import fcntl
        except ImportError:                              # no flock: nothing to hold
            return
        import multiprocessing

        # A training worker, or (while it starts, "inheriting") the caller's script it imports:
        # its parent holds the claims of what it trains.
        me = multiprocessing.current_process()
        if multiprocessing.parent_process() is not None or getattr(me, "_inheriting", False):
            return
        folder = ensure_writable().parent / "locks"
        folder.mkdir(exist_ok=True)
        self._file = open(folder / f"{config.digest()}.lock", "a+b")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            self.held = False
            self.release()

    def release(self) -> None:
        if self._file is not None:
            self._file.close()                           # closing the file drops the lock
            self._file = None

    def __exit__(self, *exc) -> None:
        self.release()


def _discard(path: Path, why: str) -> None:
    """Warn in one line and move a damaged entry aside (then remove it)."""
    warnings.warn(f"identlib: damaged cache entry {path.name} ({why}); training it again",
                  DamagedEntry, stacklevel=3)
    aside = path.with_name(f".damaged-{path.name}-{os.getpid()}")
    try:
        os.rename(path, aside)
        shutil.rmtree(aside, ignore_errors=True)
    except OSError:
        pass


def load_result(config: RunConfig) -> dict | None:
    """The stored payload of ``config`` (``state_dict``, ``loss``, ``converged``, maybe
    ``init_state``), or None if there is none or it is damaged (then it is discarded)."""
    import torch

    path = entry(config)
    if not (path / "result.pt").exists():
        return None
    try:
        stored = json.loads((path / "config.json").read_text())
        if stored != config.to_dict():
            raise ValueError("its config.json is of another config")
        payload = torch.load(path / "result.pt", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ValueError("written by another version of identlib")
        if not {"state_dict", "loss", "converged"} <= set(payload):
            raise ValueError("incomplete result.pt")
    except Exception as err:                      # noqa: BLE001 - any unreadable entry is retrained
        _discard(path, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'unreadable'}")
        return None
    return payload


def platform_of(config: RunConfig) -> dict | None:
    """Where the stored network of ``config`` was trained (``platform.json``), if it is stored."""
    path = entry(config) / "platform.json"
    return json.loads(path.read_text()) if path.exists() else None


def store_result(config: RunConfig, result: dict, init_state: dict | None = None, group: int = 1,
                 train_cpu_s: float | None = None) -> None:
    """Store a trained network (``result`` as :func:`load_result` returns it) with its config and
    platform, atomically; ``group`` is the number of networks it was trained with (1: alone) and
    ``train_cpu_s`` the CPU seconds its training took (its share of its group's), both recorded in
    ``platform.json`` (how the Runtime chapter splits a chapter's time between training and the
    rest). An existing entry gains ``init_state`` if it lacked it."""
    import torch

    from .runtime import platform

    path = ensure_writable() / config.digest()
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}-"))
    try:
        (tmp / "config.json").write_text(json.dumps(config.to_dict(), indent=1, sort_keys=True))
        record = dict(platform(), group=group)
        if train_cpu_s is not None:
            record["train_cpu_s"] = round(float(train_cpu_s), 3)
        (tmp / "platform.json").write_text(json.dumps(record, indent=1, sort_keys=True))
        payload = dict(result, format=FORMAT)
        if init_state is not None:
            payload["init_state"] = init_state
        torch.save(payload, tmp / "result.pt")
        if (path / "result.pt").exists():          # enriching an entry (adding init_state)
            os.replace(tmp / "result.pt", path / "result.pt")
        else:
            path.mkdir(exist_ok=True)              # an entry may hold artifacts before its network
            for name in ("config.json", "platform.json", "result.pt"):   # result.pt last: it marks
                os.replace(tmp / name, path / name)                      # the entry complete
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def artifact_name(stem: str, kind: str, key: bytes | str = b"", suffix: str = ".pkl") -> str:
    """The file name of an artifact: ``stem``, a digest of ``key`` (what it was computed from) and
    of the source of the code of ``kind`` that computes it (:data:`identlib.config.DIGEST_MODULES`).
    """
    h = hashlib.sha256(key.encode() if isinstance(key, str) else key)
    return f"{stem}-{h.hexdigest()[:16]}-{source_digest(kind)}{suffix}"


def read_artifact(config: RunConfig, name: str, load):
    """``load(path)`` of a stored artifact, or None if it is missing or unreadable (then removed)."""
    path = entry(config) / name
    if not path.exists():
        return None
    try:
        return load(path)
    except Exception as err:                      # noqa: BLE001
        warnings.warn(f"identlib: damaged cache file {path.parent.name}/{name} ({type(err).__name__}); "
                      "computing it again", DamagedEntry, stacklevel=2)
        path.unlink(missing_ok=True)
        return None


def write_artifact(config: RunConfig, name: str, write) -> None:
    """Write an artifact atomically: ``write(f)`` fills a binary file object."""
    folder = ensure_writable() / config.digest()
    folder.mkdir(exist_ok=True)
    if not (folder / "config.json").exists():
        _atomic(folder / "config.json", lambda f: f.write(json.dumps(config.to_dict(), indent=1,
                                                                        sort_keys=True).encode()))
    _atomic(folder / name, write)


def _atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
