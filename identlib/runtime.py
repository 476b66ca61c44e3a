"""Process-wide settings that make a chapter's printed numbers reproducible."""
from __future__ import annotations

import os

import torch

__all__ = ["setup", "workers", "side_by_side", "scheduler", "executor", "group", "device", "platform",
           "native_precision", "DEVICES"]

DEVICES = ("auto", "cpu", "cuda")


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
    device()                           # a wrong $IDENTLIB_DEVICE fails here, before any training
    return {"identlib": __version__, "torch": torch.__version__.split("+")[0], "threads": n,
            "training_threads": 1}


def workers() -> int:
    """How many one-thread training processes :func:`identlib.run_all` and :func:`identlib.sweep`
    use by default (``$IDENTLIB_WORKERS``, default ``$IDENTLIB_THREADS`` or 2; 0 trains in the
    calling process; ``$IDENTLIB_SCHEDULER=local:N`` sets N). Results do not depend on it."""
    local = _local_workers(scheduler())
    if local is not None:
        return local
    text = os.environ.get("IDENTLIB_WORKERS", os.environ.get("IDENTLIB_THREADS", "2"))
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        from .config import ConfigError

        raise ConfigError(f"IDENTLIB_WORKERS must be an integer >= 0 (got {text!r})")
    return n


def side_by_side(jobs: int, env: dict | None = None) -> dict:
    """The environment for ``jobs`` chapters executed at a time (``env``, default this process's):
    each evaluates on its share of ``$IDENTLIB_THREADS`` (at least one thread), and trains in as
    many one-thread processes as one chapter alone would. A two-thread evaluation beside another
    chapter's training stalls: its OpenMP threads wait for each other at every operation while the
    cores run someone else (a deep CNN's orbits, 3.6 s alone, take 19 s beside two busy
    processes; on one thread, 5.5 s and 6 s). Thread counts change no stored output beyond float
    rounding, and training always runs on one thread. ``$IDENTLIB_WORKERS``, if set, is kept.

    >>> e = side_by_side(2, {})
    >>> e["IDENTLIB_THREADS"], e["IDENTLIB_WORKERS"]
    ('1', '2')
    >>> e = side_by_side(2, {"IDENTLIB_THREADS": "8", "IDENTLIB_WORKERS": "3"})
    >>> e["IDENTLIB_THREADS"], e["IDENTLIB_WORKERS"]
    ('4', '3')
    """
    env = dict(os.environ if env is None else env)
    if jobs > 1:
        threads = int(env.get("IDENTLIB_THREADS", "2"))
        env.setdefault("IDENTLIB_WORKERS", str(threads))
        env["IDENTLIB_THREADS"] = str(max(1, threads // jobs))
    return env


SCHEDULER_TIMEOUT = float(os.environ.get("IDENTLIB_SCHEDULER_TIMEOUT", "10"))   # seconds to reach one
_CLIENTS: dict = {}


def scheduler() -> str:
    """Where :func:`identlib.run_all` and :func:`identlib.sweep` train (``$IDENTLIB_SCHEDULER``):
    "" (the default), local one-thread worker processes (:func:`workers`); ``local:N``, N of them;
    the address of a Dask scheduler (``tcp://host:8786``), that cluster's workers, which write into
    the same results cache (a shared filesystem). A chapter picks it up with no change to its code."""
    text = os.environ.get("IDENTLIB_SCHEDULER", "").strip()
    if text and _local_workers(text) is None and "://" not in text:
        from .config import ConfigError

        raise ConfigError(f"IDENTLIB_SCHEDULER must be local:N or a Dask scheduler address such as "
                          f"tcp://host:8786 (got {text!r})")
    return text


def _local_workers(text: str) -> int | None:
    if not text.startswith("local:"):
        return None
    n = text[len("local:"):]
    if not n.isdigit():
        from .config import ConfigError

        raise ConfigError(f"IDENTLIB_SCHEDULER=local:N needs an integer N >= 0 (got {text!r})")
    return int(n)


def executor():
    """The executor of :func:`scheduler`, or None for local worker processes: for a Dask address,
    the executor of a :class:`distributed.Client` connected to it (one per process, kept open).
    An address that cannot be reached within ``$IDENTLIB_SCHEDULER_TIMEOUT`` seconds (10) is a
    :class:`~identlib.ConfigError` that says what to do."""
    address = scheduler()
    if not address or _local_workers(address) is not None:
        return None
    from .config import ConfigError

    client = _CLIENTS.get(address)
    if client is None or client.status not in ("running", "connecting"):
        try:
            from distributed import Client
        except ImportError:
            raise ConfigError("IDENTLIB_SCHEDULER names a Dask scheduler but dask.distributed is "
                              "not installed: pip install 'identlib[dask]'") from None
        try:
            client = Client(address, timeout=f"{SCHEDULER_TIMEOUT:g}s", set_as_default=False)
        except (OSError, TimeoutError, ValueError) as err:
            raise ConfigError(f"cannot reach the Dask scheduler at {address} "
                              f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no answer'}); "
                              "start it (`dask scheduler`) or unset IDENTLIB_SCHEDULER to train on "
                              "this machine") from None
        _CLIENTS[address] = client
    return client.get_executor()


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


def device() -> torch.device:
    """Where networks are trained and evaluated (``$IDENTLIB_DEVICE``): "auto", the default, uses
    CUDA when torch finds a GPU and the CPU otherwise; "cpu" and "cuda" force one. Weights are
    drawn on the CPU from the config's seed, so a network starts from the same weights on every
    device, and stored results always hold CPU tensors.

    On CUDA, float32 means float32: TF32 is off for matrix products and convolutions, and cuDNN
    picks deterministic convolution algorithms without benchmarking (:func:`cuda_policy`).
    ``precision="bf16"`` runs the forward pass under CUDA's bfloat16 autocast, as on the CPU.

    >>> import os; os.environ["IDENTLIB_DEVICE"] = "cpu"
    >>> device()
    device(type='cpu')
    >>> del os.environ["IDENTLIB_DEVICE"]
    """
    from .config import ConfigError

    text = os.environ.get("IDENTLIB_DEVICE", "auto").strip().lower() or "auto"
    if text not in DEVICES:
        raise ConfigError(f"IDENTLIB_DEVICE must be one of {', '.join(DEVICES)} (got {text!r})")
    if text == "cpu" or (text == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("IDENTLIB_DEVICE=cuda, but torch finds no CUDA GPU here: install a CUDA "
                          "build of torch, or set IDENTLIB_DEVICE=auto (or cpu) to train on the CPU")
    cuda_policy()
    return torch.device("cuda")


def native_precision(dev: torch.device | None = None) -> str:
    """The precision a config's ``precision="auto"`` becomes: "bf16" where the device computes
    bfloat16 products in hardware (a CUDA GPU that supports bfloat16; a CPU with AVX512-BF16 or AMX
    whose oneDNN kernels are not limited below them by ``ONEDNN_MAX_CPU_ISA``), "float32" elsewhere.
    Without those instructions oneDNN emulates bfloat16, and a deep CNN's step is several times
    slower than in float32 (a 20-layer, 128-channel one on an AVX-512 CPU without BF16: 1.1 s
    against 0.23 s), so "auto" is what the paper profiles ask for.

    >>> native_precision(torch.device("cpu")) in ("bf16", "float32")
    True
    """
    dev = device() if dev is None else dev
    if dev.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "float32"
    cpu = torch.cpu
    native = any(getattr(cpu, f, lambda: False)()
                 for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    if isa not in ("ALL", "DEFAULT") and not any(tag in isa for tag in ("BF16", "AMX", "FP16", "AVX10")):
        native = False
    return "bf16" if native else "float32"


def cuda_policy() -> dict:
    """The CUDA settings every run uses, set and returned: no TF32 (float32 products stay float32,
    so a float32 run computes what it says), cuDNN's deterministic convolution algorithms and no
    autotuning (one algorithm per shape on every run; costs little for the book's small
    convolutions)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    return {"tf32": False, "cudnn_deterministic": True, "cudnn_benchmark": False}


def device_name(dev: torch.device | None = None) -> str:
    """"cpu", or "cuda (<GPU name>)"."""
    dev = device() if dev is None else dev
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    return dev.type


def platform() -> dict:
    """Where this process trains: CPU model, the instruction set torch's CPU kernels use (AVX2,
    AVX-512, ...; ``ATEN_CPU_CAPABILITY`` can lower it), torch version and device (:func:`device`:
    "cpu" or "cuda (<GPU name>)"). Stored beside every cached network (not in its key).

    >>> sorted(platform())
    ['cpu', 'device', 'instruction_set', 'torch']
    """
    return {"cpu": _cpu_model(), "instruction_set": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__, "device": device_name()}
