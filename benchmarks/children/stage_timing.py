"""Child process of the bench's `stages` and `full` parts: run the retrain flow (on the demo data, or on `--data`),
print task timings, peak RSS and the run's scores as JSON."""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

from flows.retrain import retrain
from pipeline.environment import use_local_defaults


def main() -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    from benchmarks.children.data_path import memory_gb

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path)
    args = parser.parse_args()
    samples: list[tuple[float, float]] = []  # (time, RSS GB) every 0.2 s: each stage's peak and end

    def sample_rss() -> None:
        while True:
            samples.append((time.time(), memory_gb("VmRSS")))
            time.sleep(0.2)

    threading.Thread(target=sample_rss, daemon=True).start()
    started = time.perf_counter()
    summary = retrain(data_dir=args.data)
    flow_seconds = time.perf_counter() - started
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)[0]
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
    task_runs.sort(key=lambda run: run.start_time)
    tasks = []  # (name, seconds, peak RSS during it, RSS at its end: what it left for the next stages)
    for run in task_runs:
        during = [rss for at, rss in samples if run.start_time.timestamp() <= at <= run.end_time.timestamp()]
        tasks.append((run.name.rsplit("-", 1)[0], run.total_run_time.total_seconds(), max(during, default=None),
                      during[-1] if during else None))
    outcome = summary.outcome
    scores = {} if outcome is None else {
        "rows_in": summary.data.counts.rows_in, "n_users": outcome.run.matrix.n_users,
        "n_anime": outcome.run.matrix.n_anime, "train": outcome.run.matrix.split_sizes["train"],
        "epochs_run": outcome.trained.epochs_run, "best_epoch": outcome.trained.best_epoch,
        "trainer": outcome.run.settings.training.method, "step_name": outcome.run.settings.training.step_name,
        **outcome.evaluation.as_metrics()}
    print(json.dumps({"flow_seconds": flow_seconds, "tasks": tasks, "peak_rss_gb": memory_gb("VmHWM"),
                      "scores": scores}))


if __name__ == "__main__":
    use_local_defaults()
    main()
