"""Evaluate: how well the served recommender predicts ratings and how good its top-10 lists are, on the
held-out test split, each next to baselines on the same split.

Ratings: RMSE and MAE on the original scale, beside a global mean and a user + item bias model fitted
on the same train split. Lists: precision/recall/NDCG@10, coverage and personalization of the served
recommender (ranking model), of the rating model ranked alone, and of the most popular anime.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numba
import numpy as np
import pyarrow as pa

from pipeline.matrix.utility_matrix import UtilityMatrix
from pipeline.metrics import RankingReport, Scores, ranking_report, relevant_pairs
from pipeline.models.rating.scorer import RatingScorer
from pipeline.top_n import K

SEEN_SPLITS = ("train", "validation")  # what a user had rated when the test ratings were held out


class ServedLists(Protocol):
    """What the evaluate stage judges: the recommender as served (pipeline/serving/recommend.py), knowing only what
    users had seen before the test split (`SEEN_SPLITS`)."""

    rating: RatingScorer

    def predict_pairs(self, user_ids: np.ndarray, anime_ids: np.ndarray) -> np.ndarray: ...

    def top_n_batch(self, user_indices: np.ndarray, n: int,
                    scores_for: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray: ...


@dataclass(frozen=True)
class BiasModel:
    """r̂(u, i) = μ + b_u + b_i with ridge-shrunk biases (fitted by alternating least squares)."""

    global_mean: float
    user_bias: np.ndarray
    anime_bias: np.ndarray

    def predict(self, user_index: np.ndarray, anime_index: np.ndarray) -> np.ndarray:
        return self.global_mean + self.user_bias[user_index] + self.anime_bias[anime_index]


def fit_bias_model(train: pa.Table, n_users: int, n_anime: int, user_reg: float = 15.0, anime_reg: float = 10.0,
                   iterations: int = 10) -> BiasModel:
    """Alternate closed-form updates of item then user biases (Koren's baseline predictor)."""
    users = train["user_index"].to_numpy()
    anime = train["anime_index"].to_numpy()
    ratings = train["rating"].to_numpy()
    mu = float(np.mean(ratings, dtype=np.float64))
    user_bias, anime_bias = np.zeros(n_users), np.zeros(n_anime)
    user_count = np.bincount(users, minlength=n_users)
    anime_count = np.bincount(anime, minlength=n_anime)
    for _ in range(iterations):
        anime_bias = residual_sums(anime, users, user_bias, ratings, mu, n_anime) / (anime_reg + anime_count)
        user_bias = residual_sums(users, anime, anime_bias, ratings, mu, n_users) / (user_reg + user_count)
    return BiasModel(mu, user_bias, anime_bias)


@numba.njit(cache=True)
def residual_sums(group: np.ndarray, other: np.ndarray, other_bias: np.ndarray, ratings: np.ndarray, mu: float,
                  n_groups: int) -> np.ndarray:  # pragma: no cover (compiled)
    """Σ (rating − μ − the other side's bias) per group: one pass, no temporaries (46M ratings at full scale)."""
    sums = np.zeros(n_groups)
    for row in range(len(ratings)):
        sums[group[row]] += ratings[row] - mu - other_bias[other[row]]
    return sums


@dataclass(frozen=True)
class RankingReports:
    """Top-10 on the test split for the same users: what is served, and what it is compared with."""

    served: RankingReport  # the recommender as served: lists from the ranking model
    rating_model: RankingReport  # the rating model's predicted ratings ranked alone
    popularity: RankingReport  # the most-rated (in train) unseen anime

    def labelled(self) -> list[tuple[str, RankingReport]]:
        """Each list's report with the label a person reads (terminal summary, Prefect artifact, MLflow chart)."""
        return [("served (ranking model)", self.served), ("rating model alone", self.rating_model),
                ("popularity baseline", self.popularity)]

    def as_metrics(self) -> dict[str, float]:
        return {**self.served.as_metrics(""), "ndcg_at_10_stderr": self.served.ndcg_stderr,
                **self.rating_model.as_metrics("rating_model_"), **self.popularity.as_metrics("popularity_")}


@dataclass(frozen=True)
class EvaluationReport:
    model: Scores
    global_mean: Scores
    bias: Scores
    n_test: int
    ranking: RankingReports

    def as_metrics(self) -> dict[str, float]:
        return {**self.ranking.as_metrics(),
                "test_rmse": self.model.rmse, "test_mae": self.model.mae, "test_rmse_stderr": self.model.rmse_stderr,
                "baseline_global_mean_rmse": self.global_mean.rmse, "baseline_global_mean_mae": self.global_mean.mae,
                "baseline_bias_rmse": self.bias.rmse, "baseline_bias_mae": self.bias.mae,
                "n_test": float(self.n_test)}


def baseline_predictions(matrix: UtilityMatrix, test: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """The test rows' predictions of the global mean and of the user + item bias model, both fitted on train (read
    here and freed on return: at full scale it is the largest table)."""
    train = matrix.split("train", ["user_index", "anime_index", "rating"])
    bias_model = fit_bias_model(train, matrix.n_users, matrix.n_anime)
    bias = bias_model.predict(test["user_index"].to_numpy(), test["anime_index"].to_numpy())
    return np.full(test.num_rows, bias_model.global_mean), bias


def judged_users(matrix: UtilityMatrix, relevance_threshold: float) -> tuple[np.ndarray, pa.Table]:
    """The users judged by the ranking metrics (those with a relevant test rating) and those ratings."""
    relevant = relevant_pairs(matrix.split("test"), relevance_threshold)
    return np.unique(relevant["user_index"].to_numpy()), relevant


def evaluate_ranking(recommender: ServedLists, matrix: UtilityMatrix, relevance_threshold: float) -> RankingReports:
    """Top-10 of the served lists, of the rating model ranked alone, and of the most-rated anime, on the
    same test users. Candidates are the anime a user has not rated or watched in train/validation."""
    users, relevant = judged_users(matrix, relevance_threshold)
    rated = np.bincount(matrix.split("train", ["anime_index"])["anime_index"].to_numpy(), minlength=matrix.n_anime)

    def report(top: np.ndarray) -> RankingReport:
        return ranking_report(top, users, relevant, matrix.n_anime)

    return RankingReports(
        served=report(recommender.top_n_batch(users, K)),
        rating_model=report(recommender.top_n_batch(users, K, scores_for=recommender.rating.scores)),
        popularity=report(recommender.top_n_batch(users, K, scores_for=lambda block: np.broadcast_to(
            rated, (len(block), len(rated))))))


def evaluate_model(recommender: ServedLists, matrix: UtilityMatrix, relevance_threshold: float) -> EvaluationReport:
    """The evaluate stage: test RMSE/MAE of the served rating model beside both baselines, and top-10 metrics of
    the served lists beside the rating model's and popularity's."""
    test = matrix.split("test")
    actual = test["rating"].to_numpy()
    global_mean, bias = baseline_predictions(matrix, test)
    return EvaluationReport(
        model=Scores.of(actual, recommender.predict_pairs(test["user_id"].to_numpy(), test["anime_id"].to_numpy())),
        global_mean=Scores.of(actual, global_mean), bias=Scores.of(actual, bias), n_test=len(actual),
        ranking=evaluate_ranking(recommender, matrix, relevance_threshold))
