"""The data set's champion scored on this run's test split, so the registry compares it with the challenger on the
same rows: its registered scores when the split is the one it was evaluated on, else the champion loaded and
re-scored on the current split (its lists made from the current users' histories)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline.errors import first_line
from pipeline.evaluation.evaluate import SEEN_SPLITS, served_ranking
from pipeline.evaluation.metrics import rmse
from pipeline.matrix.utility_matrix import UtilityMatrix
from pipeline.registry.promotion import CHAMPION, VersionScores, tagged_score
from pipeline.serving.bundle import load_recommender


@dataclass(frozen=True)
class ChampionScores:
    """The champion the registry decides against: which version, of which data set, and its scores on this split
    (None when there is no champion, it learned from another data set, or it could not be loaded: `missing`)."""

    version: str | None = None
    dataset: str | None = None
    scores: VersionScores | None = None
    rescored: bool = False
    missing: str = "no champion yet"


def current_champion(name: str) -> mlflow.entities.model_registry.ModelVersion | None:
    try:
        return MlflowClient().get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def _run_tags(run_id: str | None) -> dict[str, str]:
    """The tags of a version's training run (none if that run was deleted)."""
    try:
        return MlflowClient().get_run(run_id).data.tags if run_id else {}
    except MlflowException:
        return {}


def tagged_scores(version: mlflow.entities.model_registry.ModelVersion) -> VersionScores:
    """A version's scores as registered (its tags): on its own test split."""
    ndcg = tagged_score(version.tags.get("ndcg_at_10"))
    return VersionScores(tagged_score(version.tags["test_rmse"]), None if math.isnan(ndcg) else ndcg)


def score_version_on_split(name: str, version: str, matrix: UtilityMatrix, relevance_threshold: float
                           ) -> VersionScores:
    """Test RMSE and served NDCG@10 of a registered version on `matrix`'s test split, through that version's
    own id maps: pairs it never saw get its train mean; users' histories are the current matrix's."""
    recommender = load_recommender(f"models:/{name}/{version}")
    test = matrix.split("test")
    return VersionScores.rounded(
        rmse=rmse(test["rating"].to_numpy(), recommender.predict_pairs(test["user_id"].to_numpy(),
                                                                       test["anime_id"].to_numpy())),
        ndcg=served_ranking(recommender.on_matrix(matrix, SEEN_SPLITS), matrix, relevance_threshold).measured_ndcg)


def score_champion(name: str, dataset: str, matrix: UtilityMatrix, relevance_threshold: float) -> ChampionScores:
    """The registered model's champion on `matrix`'s test split, if it learned from `dataset`. A champion whose
    bundle cannot be loaded is reported missing, with why: it must not block every later retrain."""
    champion = current_champion(name)
    if champion is None:
        return ChampionScores()
    found = ChampionScores(str(champion.version), champion.tags.get("dataset"))
    if found.dataset != dataset:
        return found
    if _run_tags(champion.run_id).get("split_id") == matrix.split_id:
        return ChampionScores(found.version, found.dataset, tagged_scores(champion))
    try:
        scores = score_version_on_split(name, found.version, matrix, relevance_threshold)
    except Exception as exc:
        return ChampionScores(found.version, found.dataset, missing=f"champion v{found.version} could not be "
                              f"loaded ({first_line(exc)})")
    return ChampionScores(found.version, found.dataset, scores, rescored=True)
