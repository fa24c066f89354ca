"""The evaluate stage's baselines: the user + item bias model it reports beside the rating model."""

import numpy as np
import pyarrow as pa

from pipeline.evaluation.evaluate import fit_bias_model
from pipeline.metrics import rmse


def _planted_biases(rng, n_users=200, n_anime=150):
    return rng.normal(0, 1, n_users), rng.normal(0, 1, n_anime)


def _biased_ratings(rng, user_bias, anime_bias, n=20_000):
    """Ratings of random pairs: 6 + the planted biases + noise, rounded to the 1–10 scale."""
    users, anime = rng.integers(0, len(user_bias), n), rng.integers(0, len(anime_bias), n)
    ratings = np.clip(np.round(6 + user_bias[users] + anime_bias[anime] + rng.normal(0, 0.5, n)), 1, 10)
    return pa.table({"user_index": users, "anime_index": anime, "rating": ratings.astype(np.int16)})


def test_bias_model_recovers_the_planted_biases_and_beats_the_global_mean_on_other_pairs():
    user_bias, anime_bias = _planted_biases(np.random.default_rng(1))
    train = _biased_ratings(np.random.default_rng(2), user_bias, anime_bias)
    test = _biased_ratings(np.random.default_rng(3), user_bias, anime_bias)  # other pairs, other noise
    model = fit_bias_model(train, len(user_bias), len(anime_bias))
    assert np.corrcoef(model.user_bias, user_bias)[0, 1] > 0.95
    assert np.corrcoef(model.anime_bias, anime_bias)[0, 1] > 0.95
    actual = test["rating"].to_numpy()
    bias_rmse = rmse(actual, model.predict(test["user_index"].to_numpy(), test["anime_index"].to_numpy()))
    mean_rmse = rmse(actual, np.full(len(actual), model.global_mean))
    assert bias_rmse < 0.7 * mean_rmse
