"""Evaluate: RMSE and MAE on the held-out test ratings, on the original rating scale, next to two
baselines fitted on the same train split (global mean; user + item biases)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.matrix import ANIME_INDEX_FILE, USER_INDEX_FILE, RatingScale, UtilityMatrix, lookup_indices
from pipeline.train import predict_scaled


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

    def as_metrics(self) -> dict[str, float]:
        return {
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
class IdMaps:
    """A model's raw id → embedding row maps (they differ between data versions)."""

    users: pa.Table  # user_id, user_index
    anime: pa.Table  # anime_id, anime_index

    @classmethod
    def from_dir(cls, path: Path) -> IdMaps:
        return cls(pq.read_table(path / USER_INDEX_FILE), pq.read_table(path / ANIME_INDEX_FILE))


def predict_ratings(model: keras.Model, id_maps: IdMaps, pairs: pa.Table, scale: RatingScale,
                    fallback_rating: float) -> np.ndarray:
    """Predicted ratings (rating scale) for raw (user_id, anime_id) pairs.

    Pairs with a user or anime the model never saw get `fallback_rating` (its train mean): that
    is what the model would serve them, so scores stay comparable across data versions.
    """
    users = lookup_indices(pairs["user_id"].to_numpy(), id_maps.users, "user_id", "user_index")
    anime = lookup_indices(pairs["anime_id"].to_numpy(), id_maps.anime, "anime_id", "anime_index")
    known = (users >= 0) & (anime >= 0)
    predicted = np.full(len(users), fallback_rating, dtype=np.float64)
    predicted[known] = scale.unscale(predict_scaled(model, users[known], anime[known]))
    return predicted


def evaluate_model(model: keras.Model, matrix: UtilityMatrix) -> EvaluationReport:
    """The evaluate stage: the model's test RMSE/MAE on the rating scale, beside both baselines."""
    test = matrix.split("test")
    predicted = predict_ratings(model, IdMaps.from_dir(matrix.path), test, matrix.scale, matrix.train_mean_rating)
    return evaluate_predictions(matrix.split("train"), test, predicted, matrix.n_users, matrix.n_anime)
