"""Keras' fit of the rating model: its batches, its training step, the initializers and the epoch budget."""

import keras
import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf

from pipeline.data.ingest import ingest
from pipeline.errors import PipelineInputError
from pipeline.matrix.utility_matrix import build_utility_matrix
from pipeline.models.rating.held_batches import HeldBatches
from pipeline.models.rating.initializers import embedding_initializer, warm_start_from_als
from pipeline.models.rating.keras_fit import (
    ANIME_INPUT,
    TABLES,
    USER_INPUT,
    FactorizationTrainer,
    RatingBatches,
    epoch_budget,
)
from pipeline.models.rating.optimizers import SparseAdam
from pipeline.models.rating.train import build_model, predict_scaled, train_model
from pipeline.settings import KerasPart, Settings, TrainingConfig
from pipeline.validation.validate import validate


@pytest.fixture
def matrix(small_data, settings):
    return build_utility_matrix(validate(ingest(small_data), settings), settings)


def _split(n: int) -> pa.Table:
    return pa.table({"user_index": np.arange(n, dtype=np.int32) % 7, "anime_index": np.arange(n, dtype=np.int32),
                     "scaled_rating": np.linspace(0, 1, n, dtype=np.float32)})


def _epoch(batches: RatingBatches) -> np.ndarray:
    """The (anime, weight) of every row one epoch gives, batch after batch; ends the epoch as Keras does."""
    rows = [np.stack([features[ANIME_INPUT], weight]) for features, _, weight in (batches[i] for i in
                                                                                  range(len(batches)))]
    batches.on_epoch_end()
    return np.concatenate(rows, axis=1)


def test_batches_give_every_rating_once_per_epoch_in_a_new_order_in_batches_of_one_size():
    batches = RatingBatches(_split(1000), batch_size=96, shuffle_seed=1)
    assert len(batches) == 11 and {len(batches[i][1]) for i in range(len(batches))} == {96}
    first, second = _epoch(batches), _epoch(batches)
    for epoch in (first, second):
        real = epoch[0][epoch[1] == 1]
        np.testing.assert_array_equal(np.sort(real), np.arange(1000))  # each rating once
        assert (epoch[1] == 0).sum() == 11 * 96 - 1000  # the filling rows weigh nothing
    assert not np.array_equal(first[0], second[0])  # a new order each epoch
    np.testing.assert_array_equal(first, _epoch(RatingBatches(_split(1000), batch_size=96, shuffle_seed=1)))
    np.testing.assert_array_equal(_epoch(RatingBatches(_split(1000), 96))[0][:1000], np.arange(1000))  # unshuffled


def test_held_batches_are_the_python_batches_epoch_after_epoch():
    """The batches the fit reads from TensorFlow's variables are those of the Python dataset, in the same orders."""
    python_batches = RatingBatches(_split(1000), batch_size=96, shuffle_seed=1)
    held = HeldBatches(RatingBatches(_split(1000), batch_size=96, shuffle_seed=1))
    assert len(held) == len(python_batches) == 11 and list(held.fit_input().as_numpy_iterator()) == list(range(11))
    for _ in range(2):
        for number in range(len(held)):
            (features, target, weight), expected = held.batch(tf.constant(number, tf.int64)), python_batches[number]
            for got, want in ((features[USER_INPUT], expected[0][USER_INPUT]),
                              (features[ANIME_INPUT], expected[0][ANIME_INPUT]), (target, expected[1]),
                              (weight, expected[2])):
                np.testing.assert_array_equal(got.numpy(), want)
        held.next_epoch()
        python_batches.on_epoch_end()
    assert not np.array_equal(held.order.numpy(), np.sort(held.order.numpy()))  # shuffled, not in split order


def test_training_step_is_the_served_models_objective_and_moves_only_the_batchs_rows():
    config = TrainingConfig(architecture="biased_mf", embedding_dim=8,
                            initializer={"name": "RandomNormal", "args": {"stddev": 0.3}})
    model = build_model(30, 20, config, global_mean=0.5)
    trainer = FactorizationTrainer(model, l2=0.1)
    users, anime = tf.constant([3, 7, 7, 12]), tf.constant([5, 5, 9, 0])
    served = predict_scaled(model, users.numpy(), anime.numpy())
    np.testing.assert_allclose(np.clip(trainer.trained_output(users, anime)[0], 0, 1), served, atol=1e-6)
    trainer.compile(optimizer=SparseAdam(learning_rate=0.05))
    before = {name: model.get_layer(name).get_weights()[0].copy() for name in TABLES}
    trainer.train_step(({USER_INPUT: users, ANIME_INPUT: anime}, tf.constant([1.0, 0.0, 1.0, 0.2]),
                        tf.constant([1.0, 1.0, 1.0, 0.0])))
    for name in TABLES:
        # anime 0 is only in the weight-0 row: its gradient is zero, and Adam's first step leaves it where it was
        touched = np.unique((users if name.startswith("user") else anime).numpy()[:3])
        changed = np.flatnonzero(np.any(model.get_layer(name).get_weights()[0] != before[name], axis=1))
        np.testing.assert_array_equal(changed, touched)


def test_a_warm_start_no_epoch_improves_on_is_kept(matrix, settings):
    """An ALS warm start counts as epoch 0: with a learning rate that wrecks every epoch, its weights are kept."""
    config = settings.training.model_copy(update={
        "architecture": "biased_mf", "initializer": KerasPart(name="als", args={"sweeps": 3}), "learning_rate": 5.0,
        "epochs": 3, "early_stopping_patience": 1})
    trained = train_model(matrix, config)
    assert trained.best_epoch == 0 and trained.epochs_run >= 1
    reference = build_model(matrix.n_users, matrix.n_anime, config, global_mean=float(
        trained.model.get_layer("head").get_layer("rating").get_weights()[1][0]))
    warm_start_from_als(reference, matrix, config, float(reference.get_layer("head").get_layer("rating")
                                                               .get_weights()[1][0]))
    for name in TABLES:
        np.testing.assert_allclose(trained.model.get_layer(name).get_weights()[0],
                                   reference.get_layer(name).get_weights()[0], atol=1e-6)
    assert min(trained.history["val_rmse"]) > 0  # the epochs ran and were worse


def test_keras_initializers_by_name_and_arguments_seeded():
    a = embedding_initializer(KerasPart(name="TruncatedNormal", args={"stddev": 0.2}), seed=1)
    assert isinstance(a, keras.initializers.TruncatedNormal) and a.stddev == 0.2
    values = np.asarray(a((2000, 4)))
    assert np.abs(values).max() <= 0.4 + 1e-6 and 0.15 < values.std() < 0.2  # truncated at 2 standard deviations
    np.testing.assert_array_equal(values, np.asarray(embedding_initializer(KerasPart(
        name="TruncatedNormal", args={"stddev": 0.2}), seed=1)((2000, 4))))
    assert isinstance(embedding_initializer(KerasPart(name="glorot_uniform"), seed=1), keras.initializers.GlorotUniform)
    with pytest.raises(PipelineInputError, match="initializer 'Gaussian' is neither 'als' nor a keras.initializers"):
        embedding_initializer(KerasPart(name="Gaussian"), seed=1)
    with pytest.raises(PipelineInputError, match="RandomNormal"):
        embedding_initializer(KerasPart(name="RandomNormal", args={"sigma": 1}), seed=1)


def test_epoch_budget_gives_users_the_same_number_of_updates_whatever_the_data_size():
    """Ten times the users and ratings (the same ratings per user): fewer epochs, as each epoch has ten times the
    steps while a batch names a given user as often. Over its budget, a user's row is named in about the target
    number of batches (simulated: users drawn at random for the ratings, batches of a random order)."""
    rng = np.random.default_rng(0)
    budgets = []
    for n_ratings, n_users in ((40_000, 1_000), (400_000, 10_000)):
        batches = RatingBatches(_split(n_ratings), 4096)
        epochs = epoch_budget(batches, n_users, 500, most=1000)
        owner = rng.integers(0, n_users, n_ratings)[rng.permutation(n_ratings)]
        named = np.mean([sum(np.any(chunk == user) for chunk in np.array_split(owner, len(batches)))
                         for user in range(20)])
        assert 500 <= epochs * named <= 500 + 1.3 * named, (epochs, named)
        budgets.append(epochs)
    assert budgets[1] < budgets[0]
    assert epoch_budget(RatingBatches(_split(40_000), 4096), 1_000, 500, most=3) == 3


def test_keras_parts_read_from_a_name_json_or_the_environment_and_print_as_they_read(monkeypatch):
    assert KerasPart.model_validate("Adam") == KerasPart(name="Adam")
    monkeypatch.setenv("ANIMEREC_TRAINING__LEARNING_RATE_SCHEDULE",
                       '{"name": "CosineDecay", "args": {"warmup_epochs": 2, "alpha": 0.1}}')
    monkeypatch.setenv("ANIMEREC_TRAINING__OPTIMIZER", '"AdamW"')
    training = Settings().training
    assert training.learning_rate_schedule == KerasPart(name="CosineDecay", args={"warmup_epochs": 2, "alpha": 0.1})
    assert str(training.learning_rate_schedule) == "CosineDecay(warmup_epochs=2, alpha=0.1)"
    assert training.optimizer.name == "AdamW" and str(training.optimizer) == "AdamW"
