import math

import keras
import numpy as np
import pyarrow as pa
import pytest

from pipeline.evaluate import IdMaps, fit_bias_model, mae, predict_ratings, rmse
from pipeline.matrix import RatingScale
from pipeline.settings import TrainingConfig
from pipeline.train import build_model, predict_scaled


def test_rmse_and_mae_follow_their_definitions():
    rng = np.random.default_rng(0)
    actual, predicted = rng.integers(1, 11, 50), rng.uniform(1, 10, 50)
    squared = [(a - p) ** 2 for a, p in zip(actual, predicted, strict=True)]
    assert rmse(actual, predicted) == pytest.approx(math.sqrt(sum(squared) / len(squared)))
    assert mae(actual, predicted) == pytest.approx(sum(abs(a - p) for a, p in zip(actual, predicted, strict=True)) / 50)
    assert rmse(actual, actual) == 0.0


def _biased_ratings(rng, n_users=200, n_anime=150, n=20_000):
    users, anime = rng.integers(0, n_users, n), rng.integers(0, n_anime, n)
    user_bias, anime_bias = rng.normal(0, 1, n_users), rng.normal(0, 1, n_anime)
    ratings = np.clip(np.round(6 + user_bias[users] + anime_bias[anime] + rng.normal(0, 0.5, n)), 1, 10)
    return pa.table({"user_index": users, "anime_index": anime, "rating": ratings.astype(np.int16)})


def test_bias_model_recovers_biases_and_beats_global_mean():
    rng = np.random.default_rng(1)
    train, test = _biased_ratings(rng), _biased_ratings(np.random.default_rng(1))
    model = fit_bias_model(train, 200, 150)
    actual = test["rating"].to_numpy()
    bias_rmse = rmse(actual, model.predict(test["user_index"].to_numpy(), test["anime_index"].to_numpy()))
    mean_rmse = rmse(actual, np.full(len(actual), model.global_mean))
    assert bias_rmse < 0.7 * mean_rmse


def test_predict_ratings_uses_id_maps_and_falls_back_for_unknown_ids():
    model = build_model(3, 2, TrainingConfig(embedding_dim=8))
    maps = IdMaps(pa.table({"user_id": [100, 200, 300], "user_index": [0, 1, 2]}),
                  pa.table({"anime_id": [7, 9], "anime_index": [0, 1]}))
    pairs = pa.table({"user_id": [300, 100, 999, 200], "anime_id": [9, 7, 7, 12345]})
    scale = RatingScale(1, 10)
    predicted = predict_ratings(model, maps, pairs, scale, fallback_rating=7.25)
    expected_known = scale.unscale(predict_scaled(model, np.array([2, 0]), np.array([1, 0])))
    np.testing.assert_allclose(predicted[:2], expected_known)
    assert predicted[2] == 7.25 and predicted[3] == 7.25
    assert isinstance(model, keras.Model)
