"""Evaluate: RMSE and MAE on the held-out test ratings, on the original rating scale, next to two
baselines fitted on the same train split (global mean; user + item biases)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import keras
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.matrix import UtilityMatrix
from pipeline.recommend import Recommender


def rmse(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Root of the mean squared error over the known ratings."""
    return float(np.sqrt(np.mean((np.asarray(actual, float) - np.asarray(predicted, float)) ** 2)))


def mae(actual: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(actual, float) - np.asarray(predicted, float))))


@dataclass(frozen=True)
class Scores:
    rmse: float
    mae: float

    @classmethod
    def of(cls, actual: np.ndarray, predicted: np.ndarray) -> Scores:
        return cls(rmse(actual, predicted), mae(actual, predicted))


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
    ratings = train["rating"].to_numpy().astype(np.float64)
    mu = float(ratings.mean())
    user_bias, anime_bias = np.zeros(n_users), np.zeros(n_anime)
    user_count = np.bincount(users, minlength=n_users)
    anime_count = np.bincount(anime, minlength=n_anime)
    for _ in range(iterations):
        residual = ratings - mu - user_bias[users]
        anime_bias = np.bincount(anime, weights=residual, minlength=n_anime) / (anime_reg + anime_count)
        residual = ratings - mu - anime_bias[anime]
        user_bias = np.bincount(users, weights=residual, minlength=n_users) / (user_reg + user_count)
    return BiasModel(mu, user_bias, anime_bias)


@dataclass(frozen=True)
class EvaluationReport:
    model: Scores
    global_mean: Scores
    bias: Scores
    n_test: int
    ranking: RankingReport | None = None  # the model's top-10 quality
    popularity_ranking: RankingReport | None = None  # most-rated unseen anime, same users

    def as_metrics(self) -> dict[str, float]:
        ranking = {} if self.ranking is None else {
            **self.ranking.as_metrics("", 10), **self.popularity_ranking.as_metrics("popularity_", 10)}
        return {**ranking,
            "test_rmse": self.model.rmse, "test_mae": self.model.mae,
            "baseline_global_mean_rmse": self.global_mean.rmse, "baseline_global_mean_mae": self.global_mean.mae,
            "baseline_bias_rmse": self.bias.rmse, "baseline_bias_mae": self.bias.mae,
            "n_test": float(self.n_test),
        }


def evaluate_predictions(train: pa.Table, test: pa.Table, predicted: np.ndarray,
                         n_users: int, n_anime: int) -> EvaluationReport:
    """Score the model's test predictions (rating scale) and both baselines on the same test rows."""
    actual = test["rating"].to_numpy()
    users, anime = test["user_index"].to_numpy(), test["anime_index"].to_numpy()
    bias_model = fit_bias_model(train, n_users, n_anime)
    return EvaluationReport(
        model=Scores.of(actual, predicted),
        global_mean=Scores.of(actual, np.full(len(actual), bias_model.global_mean)),
        bias=Scores.of(actual, bias_model.predict(users, anime)),
        n_test=len(actual),
    )


@dataclass(frozen=True)
class RankingReport:
    """Top-k quality on the test split: relevant = a test rating at or above the relevance threshold."""

    precision: float
    recall: float
    ndcg: float
    coverage: float  # share of the catalog that appears in anyone's top-k
    personalization: float  # 1 − mean overlap of two users' top-k lists (0 = everyone gets the same list)
    n_users: int

    def as_metrics(self, prefix: str, k: int) -> dict[str, float]:
        return {f"{prefix}precision_at_{k}": self.precision, f"{prefix}recall_at_{k}": self.recall,
                f"{prefix}ndcg_at_{k}": self.ndcg, f"{prefix}catalog_coverage_at_{k}": self.coverage,
                f"{prefix}personalization_at_{k}": self.personalization}


def ranking_report(top: np.ndarray, user_indices: np.ndarray, relevant: pa.Table, n_anime: int) -> RankingReport:
    """Precision/recall/NDCG@k of top-k lists (rows of `top`, one per user) against relevant test pairs."""
    k = top.shape[1]
    row_of_user = {int(user): row for row, user in enumerate(user_indices)}
    hits = np.zeros(top.shape, dtype=bool)
    n_relevant = np.zeros(len(user_indices), dtype=np.int64)
    relevant_sets: dict[int, set[int]] = {}
    for user, anime in zip(relevant["user_index"].to_numpy(), relevant["anime_index"].to_numpy(), strict=True):
        relevant_sets.setdefault(int(user), set()).add(int(anime))
    for user, items in relevant_sets.items():
        row = row_of_user[user]
        n_relevant[row] = len(items)
        hits[row] = [int(anime) in items for anime in top[row]]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)[np.minimum(n_relevant, k) - 1]
    counts = np.bincount(top.ravel(), minlength=n_anime).astype(np.float64)
    n = len(user_indices)
    mean_overlap = (np.sum(counts**2) - n * k) / (n * (n - 1) * k) if n > 1 else 1.0
    return RankingReport(
        precision=float(hits.sum(axis=1).mean() / k), recall=float((hits.sum(axis=1) / n_relevant).mean()),
        ndcg=float(((hits * discounts).sum(axis=1) / ideal).mean()), coverage=float((counts > 0).mean()),
        personalization=float(1.0 - mean_overlap), n_users=n)


def evaluate_ranking(recommender: Recommender, matrix: UtilityMatrix, relevance_threshold: float,
                     k: int = 10) -> tuple[RankingReport, RankingReport]:
    """Top-k of the model and of a popularity baseline (most-rated unseen anime), on the same test users.

    Candidates are all anime a user has not rated or watched in train/validation; relevant are the test
    ratings whose scaled value is at least `relevance_threshold` (0.75 = 8 and up on a 1–10 scale).
    """
    test = matrix.split("test")
    relevant = test.filter(pc.greater_equal(test["scaled_rating"], relevance_threshold))
    users = np.unique(relevant["user_index"].to_numpy())
    popularity = np.bincount(matrix.split("train")["anime_index"].to_numpy(), minlength=matrix.n_anime)
    model_top = recommender.top_n_batch(users, k)
    popular_top = recommender.top_n_batch(users, k, scores_for=lambda block: np.broadcast_to(
        popularity, (len(block), len(popularity))))
    return (ranking_report(model_top, users, relevant, matrix.n_anime),
            ranking_report(popular_top, users, relevant, matrix.n_anime))


def evaluate_model(model: keras.Model, matrix: UtilityMatrix, unrated_value: int,
                   relevance_threshold: float) -> EvaluationReport:
    """The evaluate stage: test RMSE/MAE on the rating scale beside both baselines, and top-10 metrics
    of the model beside a popularity baseline."""
    recommender = Recommender.from_matrix(model, matrix, unrated_value, splits=("train", "validation"))
    test = matrix.split("test")
    predicted = recommender.predict_pairs(test["user_id"].to_numpy(), test["anime_id"].to_numpy())
    report = evaluate_predictions(matrix.split("train"), test, predicted, matrix.n_users, matrix.n_anime)
    ranking, popularity = evaluate_ranking(recommender, matrix, relevance_threshold)
    return dataclasses.replace(report, ranking=ranking, popularity_ranking=popularity)
