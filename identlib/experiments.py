"""Runs and sweeps over the results cache (:mod:`identlib.cache`).

``run(config)`` loads the trained network from the cache if this exact config (by content digest)
was trained before, and trains and stores it otherwise. A sweep is a list of configs from
:func:`grid`; :func:`evaluate` turns trained runs and test inputs into a tidy table (one row per
run × input) that seaborn plots directly, and :func:`sweep` caches that table beside each network.

:func:`run_all` and :func:`sweep` train their uncached configs first, as jobs
(:func:`training_jobs`), the costliest first, in ``workers`` processes of one thread each, kept
between calls (:func:`worker_pool`): on a small CPU two one-thread processes train about twice as
fast as one process with two threads (small convolutions do not split well over threads, and
threads that wait on each other stall badly when the machine is busy). A job is one network, or a
group of CNNs that differ only in seed, initialization, depth, steps, loss or (for gradient
descent) learning rate and momentum, trained together as one grouped network
(:func:`identlib.engine.fit_configs`): a deep-CNN step is mostly per-operation overhead, which a
group shares (the Runtime chapter measures how much it saves).

A network is trained on one thread, alone or in a group. Either way it learns what it would learn
alone up to float rounding, and it depends on the CPU's kernels (AVX2 or AVX-512) and the device
to the same degree, as every floating-point computation does: the book states its results as
claims that hold across all of these (:mod:`identlib.claims`), and each cached network records
where and how it was trained (:func:`identlib.cache.platform_of`). ``$IDENTLIB_GROUP=0`` trains
every network alone.
"""
from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import cache, data
from .config import RunConfig
from .metrics import score_frame
from .models import build_model, layer_sizes, predict
from .train import TrainingDiverged, fit, one_thread

__all__ = ["Run", "cache_dir", "run", "run_all", "grid", "predict", "evaluate", "sweep",
           "training_set", "one_thread"]

training_set = data.training_set

# Trained weights larger than this are not stored (a width-4096 FCN of depth 8 is 500 MB); their
# scores still are, by :func:`sweep`.
MAX_STORED_MB = float(os.environ.get("IDENTLIB_CACHE_MAX_MB", "200"))


@dataclass
class Run:
    config: RunConfig
    model: nn.Module          # trained, in eval mode
    loss: np.ndarray          # training loss history
    converged: bool
    init_state: dict | None = None  # initial weights, kept only when asked for (theory checks)
    platform: dict | None = None    # where it was trained (CPU, instruction set, torch, device)

    @property
    def final_loss(self) -> float:
        return float(self.loss[-1])


def cache_dir() -> Path:
    """The results cache folder (:func:`identlib.cache.root`)."""
    return cache.root()


def _train(config: RunConfig, progress) -> tuple[dict, dict]:
    """Train a config: its cache payload and its initial weights."""
    model, out, init_state = fit(config, progress=progress)
    result = {"state_dict": model.state_dict(), "loss": torch.from_numpy(out.loss),
              "converged": out.converged}
    return result, init_state


def initial_state(config: RunConfig) -> dict:
    """The initial weights of ``config``'s network, drawn as :func:`identlib.train.fit` draws them
    (from a generator seeded with ``config.seed``; the same on every CPU)."""
    model = build_model(config, torch.Generator().manual_seed(config.seed))
    return {k: v.clone() for k, v in model.state_dict().items()}


def load_model(config: RunConfig, state_dict: dict, copy: bool = True) -> nn.Module:
    """The network of ``config`` holding the weights ``state_dict`` (copies of them, or, with
    ``copy=False``, those tensors themselves), built without drawing initial weights:
    :func:`~identlib.models.build_model` draws every weight twice (the layers' own draw and the
    config's initialization), which was most of the time a warm chapter took to load its
    FCNs (the Runtime chapter measures both ways). The architecture is the one ``build_model``
    builds, on the meta device, where its draws do nothing; this function lives here, not in
    :mod:`identlib.models`, whose source the results cache's keys digest.

    >>> c = RunConfig(model="cnn", depth=3, channels=8)
    >>> net = build_model(c)
    >>> same = load_model(c, net.state_dict())
    >>> torch.equal(same(torch.ones(1, 1, 28, 28)), net(torch.ones(1, 1, 28, 28)))
    True
    """
    with torch.device("meta"):
        net = build_model(config)
    net.load_state_dict({k: v.clone() if copy else v for k, v in state_dict.items()}, assign=True)
    return net


def _stored_mb(config: RunConfig) -> float:
    """Size of a config's trained weights, from its shape alone."""
    c = config
    sizes = layer_sizes(c)
    per_weight = 1 if c.model == "fcn" else c.kernel_size ** 2
    n = sum(a * b * per_weight + (b if c.bias else 0) for a, b in zip(sizes, sizes[1:]))
    return n * (8 if c.dtype == "float64" else 4) / 2**20


def training_jobs(configs, workers: int = 1, group: bool = True) -> list[list[RunConfig]]:
    """The jobs that train ``configs``, costliest first: each job one network, or a group of CNNs
    trained together (:func:`identlib.engine.fit_configs`) where ``group`` is on. Configs of one
    :func:`identlib.engine.group_key` form ⌈n / MAX_GROUP⌉ groups, dealt costliest first to the
    cheapest; while there are fewer jobs than ``workers``, the costliest group is split in two, so
    that every worker has work.

    >>> cs = [RunConfig(model="cnn", depth=d, channels=4) for d in (1, 5, 9, 20)]
    >>> [[c.depth for c in job] for job in training_jobs(cs, workers=2)]
    [[20], [9, 5, 1]]
    >>> [[c.model for c in job] for job in training_jobs(cs + [RunConfig()], workers=2)]
    [['fcn'], ['cnn', 'cnn', 'cnn', 'cnn']]
    >>> [[c.depth for c in job] for job in training_jobs(cs, group=False)]
    [[20], [9], [5], [1]]
    """
    from .engine import MAX_GROUP, group_key

    configs = list(dict.fromkeys(configs))
    by_key: dict = {}
    for i, c in enumerate(configs):
        key = group_key(c) if group else None
        by_key.setdefault(("alone", i) if key is None else key, []).append(c)
    jobs = []
    for members in by_key.values():
        jobs += _deal(members, -(-len(members) // MAX_GROUP))
    while len(jobs) < workers and any(len(job) > 1 for job in jobs):
        big = max((job for job in jobs if len(job) > 1), key=_job_cost)
        jobs.remove(big)
        jobs += _deal(big, 2)
    return sorted(jobs, key=lambda job: -_job_cost(job))


def _deal(members, n: int) -> list[list[RunConfig]]:
    """``members`` dealt into ``n`` groups of similar cost: each, costliest first, to the cheapest."""
    from .engine import MAX_GROUP

    groups, costs = [[] for _ in range(n)], [0.0] * n
    for c in sorted(members, key=lambda c: -_step_cost(c)):
        g = min((g for g in range(n) if len(groups[g]) < MAX_GROUP), key=costs.__getitem__)
        groups[g].append(c)
        costs[g] += _step_cost(c)
    return [g for g in groups if g]


def _job_cost(job) -> float:
    return sum(map(_step_cost, job))


def _train_uncached(configs, keep_init: bool = False, workers: int | None = 0,
                    group: bool | None = None, executor=None) -> None:
    """Train the uncached configs and store each as :func:`run` would (:func:`run` then loads
    them): the jobs of :func:`training_jobs`, in a pool of ``workers`` one-thread processes, or
    in this process without workers (where a lone config is left to :func:`run`). Configs whose
    weights are too large to store are left to :func:`run`, and so is a config that diverges
    (:func:`_train_and_store`)."""
    if workers is None:
        from .runtime import workers as runtime_workers

        workers = runtime_workers()
    if group is None:
        from .runtime import group as runtime_group

        group = runtime_group()
    todo = [c for c in dict.fromkeys(configs) if not cache.has(c) and _stored_mb(c) <= MAX_STORED_MB]
    if not todo:
        return
    if executor is None:
        from .runtime import executor as runtime_executor

        executor = runtime_executor()
    cache.ensure_writable()
    with _claimed(todo) as mine:                            # what another process trains, run()
        todo = [c for c in mine if not cache.has(c)]        # waits for and loads
        jobs = training_jobs(todo, max(workers, 1), group)
        if executor is not None and jobs:
            _train_on(executor, jobs, keep_init)
        elif workers < 1:
            for job in jobs:
                if len(job) > 1:                            # a lone config is left to run()
                    _train_and_store(job, keep_init)
        elif jobs:
            _train_in_pool(jobs, keep_init, workers)


@contextlib.contextmanager
def _claimed(configs):
    """The configs among ``configs`` whose training lock this process took without waiting (the
    others are being trained by another process, for which :func:`run` waits); the locks are
    released on leaving."""
    claims = [cache.claim(c, wait=False) for c in configs]
    try:
        yield [c for c, mine in zip(configs, claims) if mine.held]
    finally:
        for mine in claims:
            mine.release()


def _train_in_pool(jobs, keep_init: bool, workers: int) -> None:
    in_pool(_train_and_store, [(job, keep_init) for job in jobs], workers)


# The environment a worker inherits when it is spawned and reads afterwards: where the results cache
# and the data are, the device, and the kernels torch, oneDNN and MKL may use.
_WORKER_ENV = ("IDENTLIB_", "ATEN_", "ONEDNN_", "DNNL_", "MKL_", "OMP_", "CUDA_")
_POOL: dict = {}          # the process's pool of training workers, kept between calls of in_pool


def _pool_key(workers: int) -> tuple:
    return workers, tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_WORKER_ENV)))


def worker_pool(workers: int):
    """The pool of ``workers`` spawned one-thread processes that :func:`in_pool` runs tasks in,
    started on first use and kept for the next call: a worker that starts imports torch and
    identlib and reads the data (a few CPU-seconds; the Runtime chapter measures it), which a
    chapter that trains in many small rounds (the phase diagram's depth searches, a sweep and its
    scores) paid at every call. A pool started under other ``$IDENTLIB_*`` (or kernel) settings,
    or of another size, is shut down and a new one started, so that a worker never trains into
    another cache than the caller's."""
    from concurrent.futures import ProcessPoolExecutor

    key = _pool_key(workers)
    if _POOL.get("key") != key:
        shutdown_pool()
        if not _POOL.get("atexit"):                 # stopped before the interpreter tears down
            atexit.register(shutdown_pool)          # the modules its clean-up needs
            _POOL["atexit"] = True
        ctx = multiprocessing.get_context("spawn")
        _POOL.update(key=key, pool=ProcessPoolExecutor(workers, mp_context=ctx,
                                                       initializer=torch.set_num_threads, initargs=(1,)))
    return _POOL["pool"]


def shutdown_pool(kill: bool = False) -> None:
    """Stop the training workers that :func:`in_pool` keeps (at once with ``kill``), if any."""
    _POOL.pop("key", None)
    pool = _POOL.pop("pool", None)
    if pool is None:
        return
    if kill:
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            proc.terminate()
    pool.shutdown(wait=not kill, cancel_futures=True)


def in_pool(fn, tasks, workers: int) -> None:
    """``fn(*args)`` for each ``args`` in ``tasks``, in ``workers`` spawned processes of one torch
    thread each (:func:`worker_pool`, kept between calls), waiting for all; ``fn`` stores what it
    computes (in the results cache), so that a task finished before an interrupt, an error or a
    dead worker is kept. Ctrl-C stops the workers at once; a worker that dies raises a
    :class:`RuntimeError` that says why it may have."""
    from concurrent.futures import FIRST_EXCEPTION, wait
    from concurrent.futures.process import BrokenProcessPool

    tasks = list(tasks)
    if not tasks:
        return
    try:
        pool = worker_pool(workers)
        futures = [pool.submit(fn, *args) for args in tasks]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        if pending:                                 # a task failed: the others not begun are
            for f in pending:                       # dropped, those running finish and are kept
                f.cancel()
            wait(pending)
        for f in futures:
            if not f.cancelled():
                f.result()
    except KeyboardInterrupt:
        # Stop the workers at once: what they finished is in the cache, what they were writing was
        # going to a temporary file that is not part of it.
        shutdown_pool(kill=True)
        raise
    except BrokenProcessPool as err:
        shutdown_pool(kill=True)
        raise RuntimeError(
            "a training worker process died. Networks finished before it are in the cache. Either it "
            "was killed (out of memory: use fewer workers), or the script that called run_all/sweep "
            "with workers lacks an `if __name__ == \"__main__\":` guard (each worker starts by "
            "importing that script); or pass workers=0 to train in this process") from err


def _train_on(executor, jobs, keep_init: bool) -> list[str]:
    """Train ``jobs`` as tasks of ``executor`` (anything with ``submit(fn, *args)`` whose future
    has ``.result()``: a process pool, a Dask client's executor, MPI's, submitit's). Each task
    trains one job on one thread and stores its networks in this process's results cache (a
    shared filesystem for a cluster), atomically; the digests stored come back. A task that fails
    or a worker that dies raises one line that says what is kept."""
    root = str(cache.root().parent)
    data_dir = os.environ.get("IDENTLIB_DATA_DIR")
    futures = [executor.submit(_train_job_at, root, data_dir, job, keep_init) for job in jobs]
    stored = []
    try:
        for future in futures:
            stored += future.result()
    except KeyboardInterrupt:
        for future in futures:
            future.cancel()
        raise
    except Exception as err:                          # noqa: BLE001 - any failure of a foreign task
        for future in futures:
            future.cancel()
        raise RuntimeError(
            f"a training task failed on the executor ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no message'}). The networks finished before "
            "it are in the results cache; running again trains only the rest") from err
    return stored


def _train_job_at(cache_dir: str, data_dir: str | None, job: list[RunConfig], keep_init: bool) -> list[str]:
    """A task of :func:`_train_on`, run by a worker: train ``job`` into the results cache under
    ``cache_dir`` (and read the data from ``data_dir`` where the worker has it), on one thread;
    the digests of the networks stored."""
    env = {"IDENTLIB_CACHE_DIR": cache_dir}
    if data_dir and os.path.isdir(data_dir):
        env["IDENTLIB_DATA_DIR"] = data_dir
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with one_thread():
            _train_and_store(job, keep_init)
        return [c.digest() for c in job if cache.has(c)]
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _train_and_store(job: list[RunConfig], keep_init: bool) -> None:
    """Train one job (in a worker or here) and store its networks. A network that diverges is
    left to :func:`run`, which trains it again alone and reports it; in a group, the others train
    on."""
    from .engine import fit_configs

    start = time.process_time()
    if len(job) > 1:
        members = fit_configs(job, progress=False, diverged="drop")
        share = (time.process_time() - start) / len(job)
        for c, member in zip(job, members):
            if member is not None:                  # a diverged member is left to run()
                cache.store_result(c, member[0], member[1] if keep_init else None, group=len(job),
                                   train_cpu_s=share)
        return
    try:
        result, init_state = _train(job[0], False)
    except TrainingDiverged:
        return
    cache.store_result(job[0], result, init_state if keep_init else None,
                       train_cpu_s=time.process_time() - start)


def _step_cost(c: RunConfig) -> float:
    """Relative cost of training a config (arithmetic per step times steps), to schedule the
    longest jobs first."""
    if c.model == "fcn":
        per_step = c.depth * c.width ** 2 * max(1, c.batch_size or c.n_train)
    else:
        per_step = c.depth * (c.channels ** 2 + 32) * c.kernel_size ** 2   # + per-layer overhead
    return float(per_step * c.steps)


def run(config: RunConfig, *, cache: bool = True, keep_init: bool = False,
        progress: bool | None = None) -> Run:
    """The trained network of ``config``: from the cache if present, else trained (and stored).

    ``keep_init`` also returns (and stores) the initial weights, for comparisons with theory.
    ``cache=False`` neither reads nor writes the cache.
    """
    _trace(config)
    return _run(config, use_cache=cache, keep_init=keep_init, progress=progress)


def _trace(config: RunConfig) -> None:
    """Append the digest of a config this process uses to ``$IDENTLIB_TRACE``, if set: how the
    chapter benchmark (``bench/chapters.py``) learns which networks each chapter needs."""
    path = os.environ.get("IDENTLIB_TRACE")
    if path:
        with open(path, "a") as f:
            f.write(config.digest() + "\n")


def _run(config: RunConfig, *, use_cache: bool, keep_init: bool, progress) -> Run:
    payload, where = _cached(config, keep_init) if use_cache else (None, None)
    if payload is None:
        from .runtime import platform

        mine = contextlib.nullcontext()
        if use_cache:
            cache.ensure_writable()                          # fail before training, not after
            mine = cache.claim(config)                       # wait while another process trains it
        with mine:
            if use_cache:
                payload, where = _cached(config, keep_init)  # it may have
            if payload is None:
                start = time.process_time()
                result, init_state = _train(config, progress)
                payload, where = dict(result, init_state=init_state), platform()
                if use_cache and _stored_mb(config) <= MAX_STORED_MB:
                    cache.store_result(config, result, init_state if keep_init else None,
                                       train_cpu_s=time.process_time() - start)
    model = load_model(config, payload["state_dict"], copy=False)   # the payload is this call's own
    model.eval()
    return Run(config, model, payload["loss"].numpy(), bool(payload["converged"]),
               payload.get("init_state") if keep_init else None, where)


def _cached(config: RunConfig, keep_init: bool) -> tuple[dict | None, dict | None]:
    """The stored payload of ``config`` and where it was trained, or ``(None, None)``; with
    ``keep_init`` a payload stored without its initial weights gains them, drawn again."""
    payload = cache.load_result(config)
    if payload is None:
        return None, None
    if keep_init and "init_state" not in payload:
        payload["init_state"] = initial_state(config)        # drawn again: no training
        try:
            cache.store_result(config, {k: payload[k] for k in ("state_dict", "loss", "converged")},
                               payload["init_state"])
        except OSError:
            pass                                             # a read-only cache: drawn each time
    return payload, cache.platform_of(config)


def grid(base: RunConfig, **axes) -> list[RunConfig]:
    """Every combination of the axes, as configs derived from ``base``.

    >>> [c.depth for c in grid(RunConfig(), depth=[1, 2], seed=[0, 1])]
    [1, 1, 2, 2]
    """
    names = list(axes)
    return [base.replace(**dict(zip(names, values)))
            for values in itertools.product(*(axes[n] for n in names))]


def run_all(configs, *, cache: bool = True, keep_init: bool = False,
            progress: bool | None = None, workers: int | None = None,
            group: bool | None = None, executor=None) -> list[Run]:
    """``run`` over a sweep, in order (each one cached): ``run_all(cs)[i]`` is ``run(cs[i])``. The
    uncached configs are first trained as the jobs of :func:`training_jobs`: CNNs that may share a
    group (:func:`identlib.engine.group_key`) together where ``group`` is on, in ``workers`` one-thread
    processes (0: in this process). The defaults ``None`` take the runtime settings
    (:func:`identlib.runtime.group`, ``$IDENTLIB_GROUP``; :func:`identlib.runtime.workers`,
    ``$IDENTLIB_WORKERS``). Neither changes what a network learns beyond float rounding
    (``tests/test_engine.py``), so the cache does not key on them. ``executor``, any object with
    ``submit(fn, *args)`` whose future has ``.result()`` (a ``ProcessPoolExecutor``, a Dask
    client's ``get_executor()``, ``mpi4py.futures.MPIPoolExecutor``, submitit's), trains the jobs as
    its tasks instead, each storing its networks in the results cache; the default is the one
    ``$IDENTLIB_SCHEDULER`` names (:func:`identlib.runtime.executor`), else local workers.

    >>> runs = run_all(grid(RunConfig(depth=1, steps=5), seed=[0, 1]))
    >>> [r.config.seed for r in runs], len(runs[1].loss)
    ([0, 1], 5)
    """
    configs = list(configs)
    if cache:
        _train_uncached(configs, keep_init, workers, group, executor)
    return [run(c, cache=cache, keep_init=keep_init, progress=progress) for c in configs]


def evaluate(runs, inputs: torch.Tensor, *, x_hat: torch.Tensor | None = None, fields=None,
             **columns) -> "pd.DataFrame":
    """Tidy table of scores: one row per run × input image.

    ``columns`` are per-input labels (e.g. ``name=panel.names, family=panel.families`` or
    ``rho=rhos``); ``fields`` the config fields to include (default: those that differ between the
    runs, plus ``depth``). ``x_hat`` defaults to each run's training image.
    """
    import pandas as pd

    runs = list(runs)
    frames = [_score_frame(r, inputs, x_hat, columns) for r in runs]
    return _with_fields([r.config for r in runs], frames, fields)


def _score_frame(r: Run, inputs, x_hat, columns) -> "pd.DataFrame":
    target = x_hat if x_hat is not None else data.training_image(r.config.train_index)
    return score_frame(predict(r.model, inputs), inputs, target, columns, final_loss=r.final_loss)


def _with_fields(configs, frames, fields) -> "pd.DataFrame":
    """Prefix each run's score table with its label and the config fields of interest."""
    import pandas as pd

    if fields is None:
        dicts = [c.to_dict() for c in configs]
        fields = [k for k in dicts[0] if k == "depth" or len({d[k] for d in dicts}) > 1]
    out = []
    for c, df in zip(configs, frames):
        df = df.copy()
        for f in reversed(fields):
            df.insert(0, f, getattr(c, f))
        df.insert(0, "label", c.label())
        out.append(df)
    return pd.concat(out, ignore_index=True)


def _scores_name(inputs: torch.Tensor, x_hat, columns: dict) -> str:
    """The cache file of a score table: keyed by the inputs, x̂, the labels and the scoring code."""
    key = inputs.float().contiguous().numpy().tobytes()
    if x_hat is not None:
        key += x_hat.float().contiguous().numpy().tobytes()
    key += json.dumps({k: [str(v) for v in vals] for k, vals in columns.items()}, sort_keys=True).encode()
    return cache.artifact_name("scores", "scores", key)


def sweep(configs, inputs: torch.Tensor, *, x_hat: torch.Tensor | None = None, fields=None,
          progress: bool | None = None, workers: int | None = None, group: bool | None = None,
          diverged: str = "raise", executor=None, **columns) -> "pd.DataFrame":
    """Train (or load) every config and score it on ``inputs``: the tidy table of
    :func:`evaluate`, with each run's scores cached beside its result, keyed by the content of the
    inputs. A cached sweep needs neither training nor the stored weights. ``workers``, ``group``
    and ``executor`` as in :func:`run_all`.

    ``diverged="report"`` turns a run whose training diverges into rows with missing scores and
    ``diverged`` True (the outcome is cached too) instead of raising :class:`TrainingDiverged`:
    for maps of settings where divergence is one of the outcomes.
    """
    if diverged not in ("raise", "report"):
        raise ValueError(f'diverged must be "raise" or "report" (got {diverged!r})')
    import pandas as pd

    configs = list(configs)
    name = _scores_name(inputs, x_hat, columns)

    def known(c):
        return (cache.entry(c) / name).exists() or (diverged == "report" and (cache.entry(c) / DIVERGED).exists())

    if workers is None:
        from .runtime import workers as runtime_workers

        workers = runtime_workers()
    _train_uncached([c for c in configs if not known(c)], workers=workers, group=group, executor=executor)
    _score_unstored([c for c in configs if not known(c)], inputs, x_hat, columns, name, diverged, workers)
    frames = []
    for c in configs:
        _trace(c)
        df = cache.read_artifact(c, name, pd.read_pickle)
        if df is None and diverged == "report" and (cache.entry(c) / DIVERGED).exists():
            df = _diverged_frame(len(inputs), columns)
        if df is None:
            try:
                df = _score_frame(run(c, progress=progress), inputs, x_hat, columns)
            except TrainingDiverged as err:
                if diverged == "raise":
                    raise
                cache.write_artifact(c, DIVERGED, lambda f: f.write(str(err).encode()))
                df = _diverged_frame(len(inputs), columns)
            else:
                cache.write_artifact(c, name, lambda f: df.to_pickle(f))
        frames.append(df)
    if diverged == "report":
        frames = [f if "diverged" in f else f.assign(diverged=False) for f in frames]
    return _with_fields(configs, frames, fields)


def _score_unstored(configs, inputs, x_hat, columns: dict, name: str, diverged: str,
                    workers: int) -> None:
    """The score tables of the configs whose weights are too large for the results cache
    (``$IDENTLIB_CACHE_MAX_MB``), computed in ``workers`` one-thread processes where there are two or
    more of each: each worker trains a network, scores it and stores only its score table (or,
    with ``diverged="report"``, its divergence marker), which :func:`sweep` then reads. Otherwise
    :func:`sweep` trains them one at a time in this process. A network that another process
    (a chapter executed side by side) is training is left to it."""
    big = sorted(dict.fromkeys(c for c in configs if _stored_mb(c) > MAX_STORED_MB), key=_step_cost,
                 reverse=True)
    if workers < 2 or len(big) < 2:
        return
    cache.ensure_writable()
    with _claimed(big) as mine:
        if mine:
            in_pool(_score_one, [(c, inputs, x_hat, columns, name, diverged) for c in mine], workers)


def _score_one(config: RunConfig, inputs, x_hat, columns: dict, name: str, diverged: str) -> None:
    """A task of :func:`_score_unstored`, in a worker: train ``config`` (not stored: too large),
    and store its score table under ``name``; a network that diverges stores its marker where
    ``diverged="report"`` and is otherwise left to :func:`sweep`, which trains it again and raises."""
    try:
        df = _score_frame(run(config), inputs, x_hat, columns)
    except TrainingDiverged as err:
        if diverged == "report":
            cache.write_artifact(config, DIVERGED, lambda f: f.write(str(err).encode()))
        return
    cache.write_artifact(config, name, lambda f: df.to_pickle(f))


DIVERGED = "diverged.txt"     # marker of a config whose training diverges (sweep's diverged="report")


def _diverged_frame(n: int, columns: dict) -> "pd.DataFrame":
    import pandas as pd

    df = pd.DataFrame({k: list(v) for k, v in columns.items()}, index=range(n))
    for m in ("corr_identity", "corr_constant", "mse_identity", "mse_constant", "final_loss"):
        df[m] = np.nan
    df["diverged"] = True
    return df
