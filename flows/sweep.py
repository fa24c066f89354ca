"""The `sweep` flow: ingest → validate → utility matrix → one fitting trial per grid point → best on validation.

`--kind rating` sweeps the rating model (validation RMSE), `--kind ranking` the ranking model
(validation NDCG@10). Each trial is a Prefect task and an MLflow run nested under the sweep's run
(experiment `<name>-sweep`), with its configuration as params and its validation score as a metric. The
winner is chosen on validation only; its test score is reported, never used. Run it with
`make sweep DATA=DIR [KIND=ranking]` (`animerec sweep`): its trials run as tasks on a Dask cluster (flows/cluster.py),
a local one by default, an existing one with `DASK=tcp://host:8786`, and so do its validation batches; called
directly, `sweep` runs them one after the other. Trials only fit: the flow logs each to MLflow as it comes back, so
workers need the matrix folder (a shared file system on a real cluster), not the MLflow store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel

from flows.cluster import on_dask
from flows.retrain import build_matrix_task, generate_demo_data_task, ingest_task, validate_stage
from pipeline.data.dataset_config import for_dataset
from pipeline.matrix.utility_matrix import UtilityMatrix
from pipeline.settings import Settings
from pipeline.tracking.runs import ended
from pipeline.tracking.sweeps import log_sweep_outcome, log_trial, start_sweep_run
from pipeline.tuning.summary import SweepSummary, format_trials, trial_line
from pipeline.tuning.sweep import (
    OBJECTIVES,
    SweptModel,
    TrialResult,
    base_config,
    best_trial,
    grid_configs,
    run_trial,
    score_on_test,
)


@task(name="trial", cache_policy=NO_CACHE, task_run_name="trial {changed}")
def trial_task(matrix: UtilityMatrix, changed: dict[str, Any], config: BaseModel,
               settings: Settings) -> tuple[TrialResult, Any]:
    return run_trial(matrix, changed, config, settings)


@flow(name="sweep", task_runner=ThreadPoolTaskRunner(max_workers=1))
def sweep(data_dir: Path | None = None, settings: Settings | None = None,
          space: dict[str, list[Any]] | None = None, model: SweptModel = "rating",
          rating_scale: str | None = None, dataset_name: str | None = None) -> SweepSummary:
    """Grid search over the rating or ranking model's configuration (settings.sweep_space or
    settings.ranking_sweep_space unless `space` is given)."""
    settings = settings or Settings()
    space = space or (settings.ranking_sweep_space if model == "ranking" else settings.sweep_space)
    objective = OBJECTIVES[model]
    data_dir = Path(data_dir) if data_dir else generate_demo_data_task(settings.demo_data_dir)
    settings = for_dataset(settings, data_dir, rating_scale, dataset_name)[0]
    with ended(start_sweep_run(settings, data_dir, space, model)) as run_id:
        raw = ingest_task(data_dir, settings)
        matrix = build_matrix_task(validate_stage(raw, settings), settings, raw.source_sha256, run_id)
        trials = [trial_task.submit(matrix, changed, config, settings)
                  for changed, config in grid_configs(base_config(settings, model), space)]
        results, best_fitted = [], None
        while trials:  # each future dropped once read: its fitted model is freed unless it is the best so far
            result, fitted = trials.pop(0).result()
            log_trial(run_id, result, objective)
            get_run_logger().info(trial_line(result, objective))
            results.append(result)
            if best_trial(results, objective) is result:
                best_fitted = fitted  # only the best model so far stays in memory
        best = best_trial(results, objective)
        summary = SweepSummary(model, results, best, score_on_test(best_fitted, matrix, settings), run_id)
        log_sweep_outcome(run_id, best, objective, summary.test_score, format_trials(results, best, objective))
        create_markdown_artifact(key="sweep-result", description="Sweep trials, best on validation",
                                 markdown=summary.markdown())
    return summary


def sweep_on_dask(settings: Settings, **arguments: Any) -> SweepSummary:
    """`sweep` with its trials on the Dask cluster the settings name (a local one by default)."""
    return on_dask(sweep, settings)(settings=settings, **arguments)
