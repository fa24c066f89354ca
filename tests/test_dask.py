"""Sweep trials on Dask through Prefect's DaskTaskRunner: a local cluster of 2 worker processes, and a real
`dask scheduler` + 2 `dask worker` processes on 127.0.0.1, each giving what the single-process sweep gives."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port
from distributed import Client

import flows.sweep
from flows.sweep import sweep, sweep_on_dask

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]
SPACE = {"rating_weight_power": [0, 2], "neighbours": [5, 100]}  # the ranking model: quick trials
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _scores(summary) -> dict[tuple, float]:
    return {tuple(sorted(t.changed.items())): t.validation_score for t in summary.trials}


def _same_sweep(summary, reference) -> None:
    assert _scores(summary) == pytest.approx(_scores(reference), rel=1e-6)
    assert summary.best.changed == reference.best.changed
    assert summary.test_score == pytest.approx(reference.test_score, rel=1e-6)


def _tasks_seen(client: Client) -> int:
    """Tasks the cluster's scheduler has handled so far (in any state)."""
    return client.run_on_scheduler(lambda dask_scheduler: sum(
        sum(prefix.state_counts.values()) for prefix in dask_scheduler.task_prefixes.values()))


@pytest.fixture
def dask_cluster():
    """A real Dask scheduler and two single-threaded workers, each its own process, on loopback only."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = [str(Path(sys.executable).parent / "dask")]
    processes = [subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                   "--no-dashboard"], start_new_session=True, stderr=subprocess.DEVNULL)]
    processes += [subprocess.Popen([*dask, "worker", address, "--host", "127.0.0.1", "--nthreads", "1",
                                    "--no-dashboard"], cwd=PROJECT_ROOT, start_new_session=True,
                                   stderr=subprocess.DEVNULL) for _ in range(2)]
    try:
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            yield address, client
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


def test_sweep_trials_on_a_local_cluster_and_on_a_real_one_give_the_single_process_results(
        small_data, settings, dask_cluster, monkeypatch):
    settings.ranking.l2_max_trials = 2
    reference = sweep(data_dir=small_data, settings=settings, space=SPACE, model="ranking")

    test_process, run_trial = os.getpid(), flows.sweep.run_trial

    def not_in_this_process(*args, **kwargs):  # travels to the workers with the task (cloudpickle, by value)
        assert os.getpid() != test_process, "a trial ran in the test process, not on a Dask worker"
        return run_trial(*args, **kwargs)

    monkeypatch.setattr(flows.sweep, "run_trial", not_in_this_process)

    settings.dask_workers = 2
    local = sweep_on_dask(settings, data_dir=small_data, space=SPACE, model="ranking")
    _same_sweep(local, reference)

    address, client = dask_cluster
    settings.dask_address = address
    before = _tasks_seen(client)
    remote = sweep_on_dask(settings, data_dir=small_data, space=SPACE, model="ranking")
    _same_sweep(remote, reference)
    assert _tasks_seen(client) - before >= len(reference.trials)  # the trials went through this scheduler
