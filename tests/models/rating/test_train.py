import keras
import numpy as np
import pyarrow as pa
import pytest

from pipeline.data.ingest import ingest
from pipeline.matrix.utility_matrix import build_utility_matrix
from pipeline.models.rating.als import Factors, RatingsByRow, fit_als, sweep
from pipeline.models.rating.train import build_model, predict_scaled, train_model
from pipeline.settings import TrainingConfig
from pipeline.validation.validate import validate


@pytest.fixture
def matrix(small_data, settings):
    return build_utility_matrix(validate(ingest(small_data), settings), settings)


def test_seed_architecture_gives_one_cosine_per_row():
    model = build_model(50, 40, TrainingConfig.seed_cosine(embedding_dim=128))
    assert model.get_layer("cosine").output.shape == (None, 1)
    assert model.get_layer("user_embedding").output.shape == (None, 128)
    assert model.loss == "binary_crossentropy"
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    out = predict_scaled(model, np.arange(7), np.arange(7))
    assert out.shape == (7,) and np.all((out > 0) & (out < 1))


def test_biased_architecture_adds_biases_to_one_dot_per_row_and_serves_the_scale():
    model = build_model(50, 40, TrainingConfig(architecture="biased_mf", embedding_dim=16), global_mean=0.6)
    head = model.get_layer("head")
    assert head.get_layer("dot").output.shape == (None, 1)
    assert model.get_layer("user_bias").output.shape == (None, 1)
    assert np.mean(predict_scaled(model, np.arange(40), np.arange(40))) == pytest.approx(0.6, abs=0.01)  # the mean
    model.get_layer("user_bias").embeddings.assign(np.linspace(-2, 2, 50).reshape(-1, 1).astype("float32"))
    out = predict_scaled(model, np.arange(50), np.zeros(50, dtype=int))
    assert out.min() == 0.0 and out.max() == 1.0  # clipped to the scale, not beyond


@pytest.mark.parametrize(("architecture", "solver"), [("feature_mf", "keras"), ("biased_mf", "keras"),
                                                      ("biased_mf", "als"), ("seed_cosine", "keras")])
def test_training_lowers_validation_loss_and_keeps_best_epoch(matrix, settings, architecture, solver):
    config = settings.training.model_copy(update={"architecture": architecture, "solver": solver})
    trained = train_model(matrix, config)
    history = trained.history
    assert trained.epochs_run == len(history["loss"]) >= 2
    assert len(history["ratings_per_s"]) == trained.epochs_run and min(history["ratings_per_s"]) > 0
    assert history["val_rmse"][-1] < history["val_rmse"][0]
    assert trained.best_epoch == int(np.argmin(history["val_rmse"])) + 1
    validation = matrix.split("validation")
    predicted = predict_scaled(trained.model, validation["user_index"].to_numpy(), validation["anime_index"].to_numpy())
    target = validation["scaled_rating"].to_numpy()
    # the kept weights are the best epoch's: the served model's validation RMSE is the lowest in the history
    assert float(np.sqrt(np.mean((predicted - target) ** 2))) == pytest.approx(min(history["val_rmse"]), rel=1e-4)
    assert trained.device == "CPU"  # the tests see no GPU; ALS solves on the CPU wherever it runs
    if solver == "keras":  # Keras' history: one learning rate per epoch, the optimizer's
        assert len(history["learning_rate"]) == trained.epochs_run
        assert history["learning_rate"][0] == pytest.approx(config.learning_rate)


def _random_factors(rng, n_users: int, n_anime: int, dim: int, mean: float = 0.5) -> Factors:
    return Factors((rng.standard_normal((n_users, dim)) * 0.3).astype(np.float32), np.zeros(n_users, np.float32),
                   (rng.standard_normal((n_anime, dim)) * 0.3).astype(np.float32), np.zeros(n_anime, np.float32), mean)


def test_als_half_sweep_solves_each_users_ridge_regression_exactly():
    """With as many CG steps as unknowns, the user half gives numpy's closed-form solution for every user."""
    rng = np.random.default_rng(3)
    n_users, n_anime, dim, l2 = 12, 30, 4, 0.05
    pairs = rng.choice(n_users * n_anime, 200, replace=False)
    train = pa.table({"user_index": (pairs // n_anime).astype(np.int32), "anime_index": (pairs % n_anime).astype(
        np.int32), "scaled_rating": rng.uniform(0, 1, 200).astype(np.float32)})
    factors = _random_factors(rng, n_users, n_anime, dim)
    anime, anime_bias = factors.anime.copy(), factors.anime_bias.copy()
    sweep(RatingsByRow.of(train, n_users, n_anime), factors, l2, cg_steps=dim + 1)
    for user in range(n_users):
        rows = np.flatnonzero(train["user_index"].to_numpy() == user)
        items = train["anime_index"].to_numpy()[rows]
        features = np.hstack([anime[items], np.ones((len(rows), 1))]).astype(np.float64)
        target = train["scaled_rating"].to_numpy()[rows] - factors.mean - anime_bias[items]
        expected = np.linalg.solve(features.T @ features + l2 * len(rows) * np.eye(dim + 1), features.T @ target)
        np.testing.assert_allclose(np.append(factors.users[user], factors.user_bias[user]), expected, atol=2e-4)


def test_als_walks_l2_down_while_validation_improves_and_keeps_the_best_sweep(matrix, settings):
    config = settings.training.model_copy(update={"epochs": 40})
    rng = np.random.default_rng(0)
    start = _random_factors(rng, matrix.n_users, matrix.n_anime, config.embedding_dim, 0.5)
    seen = []
    best, history = fit_als(matrix.split("train"), matrix.split("validation"), start, config,
                            lambda epoch, logs: seen.append(epoch))
    assert seen == list(range(len(history["val_rmse"])))
    assert len(seen) < config.epochs  # it stopped by itself
    l2 = history["l2"]
    assert l2[0] == config.l2 and len(set(l2)) >= 2
    steps = [later / earlier for earlier, later in zip(l2, l2[1:], strict=False) if later != earlier]
    np.testing.assert_allclose(steps, 1 / config.l2_step)
    validation = matrix.split("validation")
    kept = np.sqrt(np.mean((best.predict(validation["user_index"].to_numpy(), validation["anime_index"].to_numpy())
                            - validation["scaled_rating"].to_numpy()) ** 2))
    assert kept == pytest.approx(min(history["val_rmse"]), rel=1e-5)
    assert kept < history["val_rmse"][0]
    # the last λ tried did not improve on the best before it: the path ended on validation, not on the cap
    last = l2[-1]
    before_last = min(v for v, lam in zip(history["val_rmse"], l2, strict=True) if lam != last)
    assert min(v for v, lam in zip(history["val_rmse"], l2, strict=True) if lam == last) >= before_last * (
        1 - config.min_improvement)
