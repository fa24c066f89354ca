"""Sweep trials and validation batches on Dask through Prefect's DaskTaskRunner, giving what the single-process path
gives: validation on a local cluster of 2 worker processes (the default) and, like the sweep's trials, on a real
`dask scheduler` + 2 `dask worker` processes on 127.0.0.1 (a cluster given by address)."""

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from conftest import PROJECT_ROOT, free_port
from distributed import Client
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

import flows.cluster
import flows.sweep
import pipeline.validation.results
import pipeline.validation.suites
import pipeline.validation.validate
from flows.cluster import on_dask
from flows.retrain import ingest_task, retrain, validate_stage
from flows.sweep import sweep, sweep_on_dask
from pipeline.data.ingest import ingest
from pipeline.validation.suites import validate_batches_here
from pipeline.validation.validate import validate

# one worker process runs both tests (make test's --dist loadgroup), so they share the real cluster
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server"), pytest.mark.xdist_group("dask")]
SPACE = {"rating_weight_power": [0, 2], "neighbours": [5, 100]}  # the ranking model: quick trials


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


@pytest.fixture(scope="module")
def dask_cluster():
    """A real Dask scheduler and two single-threaded workers, each its own process, on loopback only; shared by the
    tests of this module (each counts the tasks it adds)."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = [str(Path(sys.executable).parent / "dask")]
    processes = [subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                   "--no-dashboard"], start_new_session=True, stderr=subprocess.DEVNULL)]
    processes += [subprocess.Popen([*dask, "worker", address, "--host", "127.0.0.1", "--nthreads", "1",
                                    "--no-nanny", "--no-dashboard"], cwd=PROJECT_ROOT, start_new_session=True,
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


def test_sweep_trials_on_a_real_cluster_give_the_single_process_results(
        small_data, settings, dask_cluster, monkeypatch):
    settings.ranking.l2_max_trials = 2
    reference = sweep(data_dir=small_data, settings=settings, space=SPACE, model="ranking")

    test_process, run_trial = os.getpid(), flows.sweep.run_trial

    def not_in_this_process(*args, **kwargs):  # travels to the workers with the task (cloudpickle, by value)
        assert os.getpid() != test_process, "a trial ran in the test process, not on a Dask worker"
        return run_trial(*args, **kwargs)

    monkeypatch.setattr(flows.sweep, "run_trial", not_in_this_process)
    address, client = dask_cluster
    settings.dask_address = address
    before = _tasks_seen(client)
    remote = sweep_on_dask(settings, data_dir=small_data, space=SPACE, model="ranking")
    _same_sweep(remote, reference)
    assert _tasks_seen(client) - before >= len(reference.trials)  # the trials went through this scheduler


def _with_bad_rows(source: Path, folder: Path) -> Path:
    """The small data set plus rows each expectation quarantines (the bad-input cases of tests/reliability)."""
    shutil.copytree(source, folder)
    anime = pacsv.read_csv(folder / "anime.csv")["anime_id"].to_pylist()
    bad = [[-4, anime[0], 5], [4, -10, 5], [5, anime[1], 11], [5, anime[2], 0], [6, anime[3], ""],
           [6, anime[4], "abc"], [7, anime[5], 7], [7, anime[5], 9], [8, "10.5", 5], [9, anime[6], "7.5"]]
    with (folder / "rating.csv").open("a") as handle:
        handle.writelines(",".join(map(str, row)) + "\n" for row in bad)
    return folder


@flow
def validation_flow(data_dir: Path, settings):
    return validate_stage(ingest_task(data_dir, settings), settings)


def _same_validation(counts, data_version, quarantine, reference) -> None:
    assert dataclasses.asdict(counts) == dataclasses.asdict(reference.counts)
    assert data_version == reference.data_version
    assert quarantine.sort_by([("source", "ascending"), ("row_number", "ascending")]).equals(
        reference.quarantine.sort_by([("source", "ascending"), ("row_number", "ascending")]))


def test_validation_batches_on_a_local_cluster_and_on_a_real_one_give_the_single_process_result(
        small_data, settings, tmp_path, dask_cluster, monkeypatch):
    data = _with_bad_rows(small_data, tmp_path / "with-bad-rows")
    settings.max_quarantine_share = 1.0
    settings.validation_batch_rows = 3_000  # 12k rows: several batches
    reference = validate(ingest(data), settings, validate_batches_here)  # this process, one batch after another
    assert reference.counts.quarantined >= 10 and len(reference.reports[0].gx_result["batches"]) >= 4

    test_process, validate_batch = os.getpid(), flows.cluster.validate_batch

    def not_in_this_process(batch):  # travels to the workers with the task (cloudpickle, by value)
        assert os.getpid() != test_process, "a validation batch ran in the test process, not on a Dask worker"
        return validate_batch(batch)

    monkeypatch.setattr(flows.cluster, "validate_batch", not_in_this_process)
    monkeypatch.setattr(pipeline.validation.suites, "validate_batch", not_in_this_process)  # the in-process path fails

    settings.dask_address, settings.dask_workers = "local", 2
    state = on_dask(validation_flow, settings)(data, settings, return_state=True)
    local = state.result()
    _same_validation(local.counts, local.data_version, local.quarantine, reference)
    assert local.summary() == reference.summary()
    with get_client(sync_client=True) as client:  # the workers' task runs are in the flow's Prefect API (its UI)
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(
            any_=[state.state_details.flow_run_id])))
    batches = [run for run in task_runs if run.name.startswith("validate rating.csv, batch")]
    assert len(batches) == len(reference.reports[0].gx_result["batches"])
    assert all(run.state.is_completed() for run in batches)

    address, client = dask_cluster
    settings.dask_address = address
    before = _tasks_seen(client)
    summary = on_dask(retrain, settings)(data_dir=data, settings=settings)  # the whole flow, as `make pipeline DASK=`
    quarantine = pq.read_table(summary.outcome.run.matrix.path / "quarantine.parquet")
    _same_validation(summary.data.counts, summary.data.data_version, quarantine, reference)
    assert _tasks_seen(client) - before >= len(reference.reports[0].gx_result["batches"])
