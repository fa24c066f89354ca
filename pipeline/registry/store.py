"""The MLflow store the runs and the registry share: a sqlite database under `mlruns/`, artifacts beside it."""

from __future__ import annotations

import mlflow

from pipeline.settings import Settings


def configure_tracking(settings: Settings, experiment_name: str | None = None) -> str:
    """Point MLflow at the sqlite store under `mlruns/` and return the experiment id (the retrain
    experiment unless another is named)."""
    settings.mlruns_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    name = experiment_name or settings.experiment_name
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return mlflow.create_experiment(name, artifact_location=settings.artifact_root.as_uri())
