"""Process-wide settings that make a chapter's printed numbers reproducible."""
from __future__ import annotations

import os

import torch

__all__ = ["setup", "workers", "group", "platform"]


def setup(threads: int | None = None, require: str | None = None) -> dict:
    """Fix torch's thread count for evaluation and plotting (``$IDENTLIB_THREADS``, default 2: the
    book's reference machine) and, with ``require``, check that the installed identlib is that
    version. Training always runs on one thread (:func:`identlib.experiments.one_thread`), so the
    trained networks do not depend on this setting.

    Returns what was set, for the chapter's setup cell to print.
    """
    from . import __version__

    if require is not None and require != __version__:
        raise RuntimeError(f"this chapter was written for identlib {require}, but {__version__} is "
                           "installed: run `pip install -e .` in the book's folder")
    n = threads or int(os.environ.get("IDENTLIB_THREADS", "2"))
    torch.set_num_threads(n)
    return {"identlib": __version__, "torch": torch.__version__.split("+")[0], "threads": n,
            "training_threads": 1}


def workers() -> int:
    """How many one-thread training processes :func:`identlib.run_all` and :func:`identlib.sweep`
    use by default (``$IDENTLIB_WORKERS``, default ``$IDENTLIB_THREADS`` or 2; 0 trains in the
    calling process). Results do not depend on it."""
    text = os.environ.get("IDENTLIB_WORKERS", os.environ.get("IDENTLIB_THREADS", "2"))
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        from .config import ConfigError

        raise ConfigError(f"IDENTLIB_WORKERS must be an integer >= 0 (got {text!r})")
    return n


def group() -> bool:
    """Whether :func:`identlib.run_all` and :func:`identlib.sweep` train CNNs that may share a
    group (:func:`identlib.engine.group_key`) together, as one grouped network (``$IDENTLIB_GROUP``: 1, the
    default, or 0 to train every network alone). Results do not depend on it beyond float
    rounding."""
    text = os.environ.get("IDENTLIB_GROUP", "1")
    if text not in ("0", "1"):
        from .config import ConfigError

        raise ConfigError(f"IDENTLIB_GROUP must be 0 or 1 (got {text!r})")
    return text == "1"


def _cpu_model() -> str:
    import platform as _platform

    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return _platform.processor() or _platform.machine()


def platform() -> dict:
    """Where this process trains: CPU model, the instruction set torch's CPU kernels use (AVX2,
    AVX-512, ...; ``ATEN_CPU_CAPABILITY`` can lower it), torch version and device. Stored beside
    every cached network (not in its key).

    >>> sorted(platform())
    ['cpu', 'device', 'instruction_set', 'torch']
    """
    return {"cpu": _cpu_model(), "instruction_set": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__, "device": "cpu"}
