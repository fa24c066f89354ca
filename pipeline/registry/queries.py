"""What the registry is asked: a registered model's champion, a version's scores as tagged, its run's tags."""

from __future__ import annotations

import math

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline.registry.scores import CHAMPION, VersionScores, tagged_score


def current_champion(name: str) -> mlflow.entities.model_registry.ModelVersion | None:
    try:
        return MlflowClient().get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def run_tags(run_id: str | None) -> dict[str, str]:
    """The tags of a version's training run (none if that run was deleted)."""
    try:
        return MlflowClient().get_run(run_id).data.tags if run_id else {}
    except MlflowException:
        return {}


def tagged_scores(version: mlflow.entities.model_registry.ModelVersion) -> VersionScores:
    """A version's scores as registered (its tags): on its own test split."""
    ndcg = tagged_score(version.tags.get("ndcg_at_10"))
    return VersionScores(tagged_score(version.tags["test_rmse"]), None if math.isnan(ndcg) else ndcg)
