import keras
import numpy as np
import pytest
from conftest import predict_scaled

from pipeline.ingest import ingest
from pipeline.matrix import build_utility_matrix
from pipeline.settings import TrainingConfig
from pipeline.train import as_dataset, build_model, train_model
from pipeline.validate import validate


@pytest.fixture
def matrix(small_data, settings):
    return build_utility_matrix(validate(ingest(small_data), settings), settings)


def test_seed_architecture_gives_one_cosine_per_row():
    model = build_model(50, 40, TrainingConfig(embedding_dim=128))
    assert model.get_layer("cosine").output.shape == (None, 1)
    assert model.get_layer("user_embedding").output.shape == (None, 128)
    assert model.loss == "binary_crossentropy"
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    out = predict_scaled(model, np.arange(7), np.arange(7))
    assert out.shape == (7,) and np.all((out > 0) & (out < 1))


def test_dataset_batches_cover_every_row_once(matrix):
    train = matrix.split("train")
    seen = []
    for features, target in as_dataset(train, batch_size=1000, shuffle_seed=1):
        seen.append(np.stack([features["user"].numpy(), features["anime"].numpy(), target.numpy()], axis=1))
    rows = np.concatenate(seen)
    expected = np.stack([train["user_index"].to_numpy(), train["anime_index"].to_numpy(),
                         train["scaled_rating"].to_numpy()], axis=1)
    assert rows.shape == expected.shape
    assert not np.array_equal(rows, expected)  # shuffled
    np.testing.assert_array_equal(rows[np.lexsort(rows.T[::-1])], expected[np.lexsort(expected.T[::-1])])


def test_training_lowers_validation_loss_and_keeps_best_epoch(matrix, settings):
    trained = train_model(matrix, settings.training, verbose=0)
    history = trained.history
    assert trained.epochs_run == len(history["loss"]) >= 2
    assert history["val_loss"][-1] < history["val_loss"][0]
    assert trained.best_epoch == int(np.argmin(history["val_loss"])) + 1
    validation = matrix.split("validation")
    predicted = predict_scaled(trained.model, validation["user_index"].to_numpy(), validation["anime_index"].to_numpy())
    kept_loss = keras.losses.binary_crossentropy(validation["scaled_rating"].to_numpy(), predicted).numpy()
    assert kept_loss == pytest.approx(min(history["val_loss"]), rel=1e-3)
