"""A registered version scored on the current split, so a champion and its challenger are compared on the same test
rows."""

from __future__ import annotations

from pipeline.evaluation.evaluate import SEEN_SPLITS, served_ranking
from pipeline.evaluation.metrics import rmse
from pipeline.matrix.utility_matrix import UtilityMatrix
from pipeline.registry.promotion import VersionScores
from pipeline.serving.bundle import load_recommender


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
