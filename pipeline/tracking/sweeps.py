"""MLflow runs of a sweep: one parent run, one nested run per trial, the outcome on the parent."""

from __future__ import annotations

import json
from pathlib import Path

from mlflow import MlflowClient

from pipeline.registry.store import configure_tracking
from pipeline.settings import Settings
from pipeline.tracking.runs import config_params
from pipeline.tuning.sweep import Objective, TrialResult


def start_sweep_run(settings: Settings, data_dir: Path, space: dict[str, list], model: str) -> str:
    experiment_id = configure_tracking(settings, settings.sweep_experiment_name)
    run = MlflowClient().create_run(experiment_id, tags={"data_dir": str(data_dir), "swept_model": model,
                                                         "dataset": settings.dataset_name},
                                    run_name=f"sweep {model} {settings.dataset_name}")
    MlflowClient().log_text(run.info.run_id, json.dumps(space, indent=2), "sweep_space.json")
    return run.info.run_id


def log_trial(parent_run_id: str, result: TrialResult, objective: Objective) -> str:
    """One nested run per trial: its whole configuration as params, its validation score as metrics."""
    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    name = " ".join(f"{key}={value}" for key, value in sorted(result.changed.items()))
    run_id = client.create_run(parent.info.experiment_id, run_name=name,
                               tags={"mlflow.parentRunId": parent_run_id}).info.run_id
    for key, value in config_params(result.config).items():
        client.log_param(run_id, key, value)
    for key, value in {objective.metric: result.validation_score, "fit_seconds": result.fit_seconds,
                       **result.details}.items():
        client.log_metric(run_id, key, float(value))
    client.set_terminated(run_id, "FINISHED")
    return run_id


def log_sweep_outcome(parent_run_id: str, best: TrialResult, objective: Objective, test_score: float,
                      table: str) -> None:
    client = MlflowClient()
    for key, value in config_params(best.config).items():
        client.log_param(parent_run_id, f"best_{key}", value)
    client.log_metric(parent_run_id, f"best_{objective.metric}", best.validation_score)
    client.log_metric(parent_run_id, f"best_{objective.metric.replace('validation', 'test')}", test_score)
    client.log_text(parent_run_id, table, "trials.txt")
