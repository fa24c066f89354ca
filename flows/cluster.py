"""Dask as the scale-out engine, through Prefect's DaskTaskRunner: which cluster a flow's tasks go to, and the
validation batches as tasks on it. Training stays in the flow's process (Keras has no multi-worker path)."""

from __future__ import annotations

import functools
import os
from collections import deque
from collections.abc import Iterator
from typing import TypeVar

from distributed import LocalCluster
from prefect import Flow, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect_dask import DaskTaskRunner

from pipeline.settings import Settings
from pipeline.validation.suites import BatchMap, BatchOutcome, SuiteBatch, validate_batch

LOCAL = "local"  # DASK=local: a local cluster (the default of `sweep`)
F = TypeVar("F", bound=Flow)


def _local_cluster(**cluster_kwargs) -> LocalCluster:
    """A LocalCluster whose workers report their task runs to the flow's own Prefect API: with no server configured,
    the flow runs on a temporary one, which workers would not know of (each would start one of its own, and the
    Prefect UI would not show their task runs)."""
    with get_client(sync_client=True) as client:
        api_url = str(client.api_url)
    return LocalCluster(env={"PREFECT_API_URL": api_url}, **cluster_kwargs)


def dask_task_runner(settings: Settings) -> DaskTaskRunner:
    """The cluster at `settings.dask_address` (its workers need PREFECT_API_URL of a Prefect server), or a local one
    on 127.0.0.1 (no dashboard): one single-threaded worker process per core unless `settings.dask_workers` says
    otherwise."""
    if settings.dask_address and settings.dask_address != LOCAL:
        return DaskTaskRunner(address=settings.dask_address)
    return DaskTaskRunner(cluster_class=_local_cluster,
                          cluster_kwargs={"n_workers": settings.dask_workers or os.cpu_count() or 1,
                                          "threads_per_worker": 1, "processes": True, "host": "127.0.0.1",
                                          "dashboard_address": None})


def on_dask(flow: F, settings: Settings) -> F:
    """The flow with its submitted tasks on the Dask cluster the settings name (a local one by default)."""
    return flow.with_options(task_runner=dask_task_runner(settings))


@task(name="validate-batch", cache_policy=NO_CACHE, task_run_name="validate {batch.label}")
def validate_batch_task(batch: SuiteBatch) -> BatchOutcome:
    return validate_batch(batch)


def _validate_batches_as_tasks(batches: Iterator[SuiteBatch], in_flight: int) -> list[BatchOutcome]:
    """Each batch a task; at most `in_flight` submitted and not yet read, so that this process and the workers hold
    a few batches at a time, not a copy of the whole table. Results in batch order: the first failing batch's error
    is the one raised."""
    pending: deque = deque()
    results = []
    for batch in batches:
        if len(pending) >= in_flight:
            results.append(pending.popleft().result())
        pending.append(validate_batch_task.submit(batch))
    return results + [future.result() for future in pending]


def on_cluster() -> bool:
    """Whether the running flow's tasks go to a Dask cluster."""
    context = FlowRunContext.get()
    return context is not None and isinstance(context.task_runner, DaskTaskRunner)


def batches_as_tasks(settings: Settings) -> BatchMap:
    """Validation batches as tasks on the flow's Dask cluster. Call it from the flow, not from inside a task: a task
    submitted from another carries the outer task's parameters (the whole table) to every worker."""
    return functools.partial(_validate_batches_as_tasks, in_flight=settings.validation_batches_in_flight)
