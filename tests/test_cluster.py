"""Training sweeps on a Dask cluster (a real LocalCluster of 2 one-thread worker processes), and
on any executor: the same networks as local training, no finished result lost when a worker dies,
and a bad scheduler address refused at once."""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import identlib as il
from identlib import cache, runtime
from identlib.config import ConfigError, RunConfig

distributed = pytest.importorskip("distributed")

CONFIGS = [RunConfig(model="cnn", depth=d, channels=4, steps=40, lr=0.01, momentum=0.9, bias=True, seed=s)
           for d in (2, 3) for s in (0, 1)]


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=50) as c:
        yield c


@pytest.fixture
def client(cluster):
    with distributed.Client(cluster) as c:
        yield c


def _same(a, b):
    return all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a)


def test_a_sweep_on_the_cluster_equals_local_training(client, tmp_path, monkeypatch):
    runs = il.run_all(CONFIGS, executor=client.get_executor(), group=False)
    assert all(cache.has(c) for c in CONFIGS)
    assert {cache.platform_of(c)["group"] for c in CONFIGS} == {1}
    monkeypatch.setenv("IDENTLIB_CACHE_DIR", str(tmp_path / "local"))
    for r in runs:
        here = il.run(r.config, cache=False)
        assert _same(r.model.state_dict(), here.model.state_dict())
        assert abs(r.final_loss - here.final_loss) <= 1e-6 * max(1.0, here.final_loss)


def test_the_environment_variable_selects_the_cluster(cluster, monkeypatch):
    monkeypatch.setenv("IDENTLIB_SCHEDULER", cluster.scheduler_address)
    seen = []
    monkeypatch.setattr(il.experiments, "_train_in_pool", lambda *a: seen.append("local pool"))
    runs = il.run_all(CONFIGS[:2], workers=2)                   # as a chapter calls it
    assert not seen and all(cache.has(c) for c in CONFIGS[:2]) and len(runs) == 2
    assert runtime.executor() is not None


def test_a_sweep_of_the_deep_cnn_chapter_runs_on_the_cluster(cluster, tmp_path, monkeypatch):
    from identlib import chapters as ch
    from test_chapter_deep import SMALL

    monkeypatch.setenv("IDENTLIB_SCHEDULER", cluster.scheduler_address)
    ch.execute("deep_cnn", tmp_path / "deep_cnn.ipynb", SMALL, progress=False)
    assert len(list(cache.root().glob("*/result.pt"))) > 17      # Fig. 3, the study, the map, ...
    assert "train_job_at" in cluster.scheduler.task_prefixes       # trained by the cluster's workers


def test_a_dead_worker_loses_no_finished_result_and_a_rerun_trains_only_the_rest(cluster, monkeypatch):
    configs = [c.replace(steps=400) for c in CONFIGS]
    with distributed.Client(cluster) as client:
        errors = []

        def sweep():
            try:
                il.run_all(configs, executor=client.get_executor(), group=False)
            except RuntimeError as err:
                errors.append(err)

        t = threading.Thread(target=sweep)
        t.start()
        deadline = time.time() + 120
        while not any(cache.has(c) for c in configs) and time.time() < deadline:
            time.sleep(0.1)
        victim = list(client.scheduler_info()["workers"])[0]
        try:
            client.run(os._exit, 1, workers=[victim])
        except Exception:                            # noqa: BLE001 - the worker died mid-call
            pass
        t.join(300)
        assert not t.is_alive()
    if errors:                                      # dask gave up on the task: one clear line
        assert "running again trains only the rest" in str(errors[0])
    finished = [c for c in configs if cache.has(c)]
    assert finished and all(cache.load_result(c) is not None for c in finished)
    trained = []
    real = il.experiments.fit
    monkeypatch.setattr(il.experiments, "fit", lambda c, **k: trained.append(c) or real(c, **k))
    il.run_all(configs, workers=0, group=False)
    assert sorted(map(str, trained)) == sorted(str(c) for c in configs if c not in finished)
    cluster.wait_for_workers(2, timeout=60)          # the nanny restarts the dead worker


def test_two_workers_racing_on_one_config_leave_one_valid_result(client):
    c = CONFIGS[0].replace(steps=200)
    ex = client.get_executor()
    root = str(cache.root().parent)
    futures = [ex.submit(il.experiments._train_job_at, root, os.environ.get("IDENTLIB_DATA_DIR"), [c], False)
               for _ in range(2)]
    assert [f.result() for f in futures] == [[c.digest()], [c.digest()]]
    assert cache.load_result(c) is not None
    assert [p.name for p in cache.root().iterdir() if p.name.startswith(".")] == []   # no leftovers


def test_any_executor_works_for_example_threads():
    with ThreadPoolExecutor(2) as ex:
        runs = il.run_all(CONFIGS[:2], executor=ex, group=False)
    assert [r.config for r in runs] == CONFIGS[:2] and all(cache.has(c) for c in CONFIGS[:2])


def test_a_bad_scheduler_address_fails_at_once_in_one_line(monkeypatch):
    monkeypatch.setenv("IDENTLIB_SCHEDULER", "tcp://127.0.0.1:9")
    monkeypatch.setattr(runtime, "SCHEDULER_TIMEOUT", 2.0)
    start = time.time()
    with pytest.raises(ConfigError, match=r"cannot reach the Dask scheduler at tcp://127\.0\.0\.1:9 .*unset IDENTLIB_SCHEDULER"):
        il.run_all(CONFIGS[:1])
    assert time.time() - start < 30
    monkeypatch.setenv("IDENTLIB_SCHEDULER", "somewhere")
    with pytest.raises(ConfigError, match="IDENTLIB_SCHEDULER must be local:N or a Dask scheduler address"):
        runtime.scheduler()
    monkeypatch.setenv("IDENTLIB_SCHEDULER", "local:2")
    assert runtime.workers() == 2 and runtime.executor() is None


def test_the_command_line_refuses_a_malformed_scheduler_before_running(capsys):
    from identlib import cli

    assert cli.main(["--scheduler", "somewhere", "chapters"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "IDENTLIB_SCHEDULER must be local:N or a Dask scheduler address" in err[0]
    assert cli.main(["--scheduler", "local:1", "chapters"]) == 0
    assert os.environ["IDENTLIB_SCHEDULER"] == "local:1"
    os.environ.pop("IDENTLIB_SCHEDULER")
