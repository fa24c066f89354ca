"""Child process of the bench's `stages` part: run the retrain flow on the demo data, print task timings as JSON."""

from __future__ import annotations

import json
import time

from flows.retrain import retrain  # first: flows/ sets Prefect's environment defaults before Prefect reads them


def main() -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    started = time.perf_counter()
    retrain()
    flow_seconds = time.perf_counter() - started
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)[0]
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
    task_runs.sort(key=lambda run: run.start_time)
    tasks = [(run.name.rsplit("-", 1)[0], run.total_run_time.total_seconds()) for run in task_runs]
    print(json.dumps({"flow_seconds": flow_seconds, "tasks": tasks}))


if __name__ == "__main__":
    main()
