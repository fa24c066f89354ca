"""Train the rating model: the biased matrix factorization (Keras' fit by default, or ALS) or the seed cosine model.

Both are Keras models with the same layer names (`user_embedding`, `anime_embedding`, `rating`; the biased one adds
`user_bias`, `anime_bias`), so that saving, serving and the numpy recommender treat them alike. Keras trains both
with `model.fit` (pipeline/models/rating/keras_fit.py): the seed model through its compiled loss, the biased one through
`FactorizationTrainer`'s sparse training step. `solver="als"` fits the biased model by alternating least squares
instead (pipeline/models/rating/als.py), its factors becoming the Keras model's weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import pyarrow as pa
import tensorflow as tf

from pipeline.matrix.anime_features import AnimeFeatures
from pipeline.matrix.utility_matrix import UtilityMatrix
from pipeline.models.rating.devices import device_description, training_strategy
from pipeline.models.rating.feature_model import build_feature_tower, zero_untrained_anime
from pipeline.models.rating.held_batches import HeldBatches, NextEpochOrder
from pipeline.models.rating.initializers import (
    ALS_WARM_START,
    embedding_initializer,
    solve_with_als,
    warm_start_from_als,
)
from pipeline.models.rating.keras_fit import (
    ANIME_INPUT,
    FEATURES_LAYER,
    SPLIT_COLUMNS,
    STEPS_PER_EXECUTION,
    USER_INPUT,
    VALIDATION_BATCH,
    XLA_MIN_RATINGS,
    FactorizationTrainer,
    KeepBestWeights,
    RatingBatches,
    epoch_budget,
    fit_epochs,
    validation_rmse,
)
from pipeline.models.rating.learning_rate import learning_rate_function
from pipeline.models.rating.optimizers import build_optimizer
from pipeline.settings import TrainingConfig


@dataclass
class TrainedModel:
    model: keras.Model
    # per epoch: loss, val_loss, rmse, val_rmse, ratings_per_s, and learning_rate (Keras) or l2 (ALS)
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int  # 1-based epoch whose weights were kept (0: the warm start, which no epoch improved on)
    device: str  # what trained it: "CPU", "GPU (its name)", "2 × GPU (MirroredStrategy)"
    features: AnimeFeatures | None = None  # the catalog's features (feature_mf): new anime are scored from them


def _id_inputs() -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Scalar id inputs keep each Dot to one value per row (no (n, 128, 128) trap)."""
    return (keras.Input(shape=(), dtype="int32", name=USER_INPUT),
            keras.Input(shape=(), dtype="int32", name=ANIME_INPUT))


def _embeddings(user, anime, n_users: int, n_anime: int, config: TrainingConfig) -> list[keras.KerasTensor]:
    """The user and anime embedding rows of the ids, from the settings' initializer (distinct seeds: row i of the
    two tables differ)."""
    tables = (("user", user, n_users), ("anime", anime, n_anime))
    return [keras.layers.Embedding(n, config.embedding_dim, name=f"{side}_embedding",
                                   embeddings_initializer=embedding_initializer(config.initializer, config.seed + i)
                                   )(ids) for i, (side, ids, n) in enumerate(tables)]


def build_seed_model(n_users: int, n_anime: int, config: TrainingConfig) -> keras.Model:
    """The seed architecture: cosine of the two embeddings → Dense(1, sigmoid), BCE, Adam."""
    user, anime = _id_inputs()
    user_vector, anime_vector = _embeddings(user, anime, n_users, n_anime, config)
    cosine = keras.layers.Dot(axes=1, normalize=True, name="cosine")([user_vector, anime_vector])
    flat = keras.layers.Flatten()(cosine)
    rating = keras.layers.Dense(1, activation="sigmoid", name="rating")(flat)
    model = keras.Model(inputs={USER_INPUT: user, ANIME_INPUT: anime}, outputs=rating, name="seed_cosine")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
                  loss="binary_crossentropy", metrics=[keras.metrics.RootMeanSquaredError(name="rmse")])
    return model


def build_biased_head(embedding_dim: int, global_mean: float) -> keras.Model:
    """Scaled rating from looked-up rows: w·(u·a + b_user + b_anime) + b, with b starting at the train mean.

    A model of its own so that the sparse trainer can call it on rows it gathered itself.
    """
    user_vector = keras.Input(shape=(embedding_dim,), name="user_vector")
    anime_vector = keras.Input(shape=(embedding_dim,), name="anime_vector")
    user_bias = keras.Input(shape=(1,), name="user_bias_value")
    anime_bias = keras.Input(shape=(1,), name="anime_bias_value")
    dot = keras.layers.Dot(axes=1, name="dot")([user_vector, anime_vector])
    total = keras.layers.Add(name="add_biases")([dot, user_bias, anime_bias])
    rating = keras.layers.Dense(1, kernel_initializer="ones", bias_initializer=keras.initializers.Constant(
        global_mean), name="rating")(total)
    return keras.Model([user_vector, anime_vector, user_bias, anime_bias], rating, name="head")


def build_biased_model(n_users: int, n_anime: int, config: TrainingConfig, global_mean: float = 0.5) -> keras.Model:
    """Biased matrix factorization; the served output is clipped to the [0, 1] scale (trained unclipped)."""
    user, anime = _id_inputs()
    rows = [
        *_embeddings(user, anime, n_users, n_anime, config),
        keras.layers.Embedding(n_users, 1, embeddings_initializer="zeros", name="user_bias")(user),
        keras.layers.Embedding(n_anime, 1, embeddings_initializer="zeros", name="anime_bias")(anime),
    ]
    rating = build_biased_head(config.embedding_dim, global_mean)(rows)
    clipped = keras.layers.ReLU(max_value=1.0, name="clip_to_scale")(rating)
    return keras.Model(inputs={USER_INPUT: user, ANIME_INPUT: anime}, outputs=clipped, name="biased_mf")


def build_feature_model(n_users: int, anime_features: np.ndarray, config: TrainingConfig,
                        global_mean: float = 0.5) -> keras.Model:
    """The biased model whose anime vector and bias add a feature tower's output to their ID part
    (`anime_features`: a row per anime index; feature_model.py)."""
    if anime_features is None:
        raise ValueError("the feature model (architecture feature_mf) needs the anime's features: a row per anime")
    n_anime, width = anime_features.shape
    user, anime = _id_inputs()
    user_vector, anime_id_vector = _embeddings(user, anime, n_users, n_anime, config)
    ids = [anime_id_vector,
           keras.layers.Embedding(n_users, 1, embeddings_initializer="zeros", name="user_bias")(user),
           keras.layers.Embedding(n_anime, 1, embeddings_initializer="zeros", name="anime_bias")(anime)]
    table = keras.layers.Embedding(n_anime, width, trainable=False, name=FEATURES_LAYER)
    tower_vector, tower_bias = build_feature_tower(width, config)(table(anime))
    anime_vector = keras.layers.Add(name="anime_vector")([ids[0], tower_vector])
    anime_bias = keras.layers.Add(name="anime_bias_total")([ids[2], tower_bias])
    rating = build_biased_head(config.embedding_dim, global_mean)([user_vector, anime_vector, ids[1], anime_bias])
    clipped = keras.layers.ReLU(max_value=1.0, name="clip_to_scale")(rating)
    model = keras.Model(inputs={USER_INPUT: user, ANIME_INPUT: anime}, outputs=clipped, name="feature_mf")
    table.set_weights([anime_features.astype(np.float32)])
    return model


def build_model(n_users: int, n_anime: int, config: TrainingConfig, global_mean: float = 0.5,
                anime_features: np.ndarray | None = None) -> keras.Model:
    if config.architecture == "seed_cosine":
        return build_seed_model(n_users, n_anime, config)
    if config.reads_features:  # ALS fits the biased model's factors
        return build_feature_model(n_users, anime_features, config, global_mean)
    return build_biased_model(n_users, n_anime, config, global_mean)


def predict_scaled(model: keras.Model, user_index: np.ndarray, anime_index: np.ndarray,
                   batch_size: int = VALIDATION_BATCH) -> np.ndarray:
    """The Keras model's own output in [0, 1] for index pairs, called directly in batches (no
    `predict` function traced per model, memory bounded by the batch)."""
    out = [np.asarray(model({USER_INPUT: tf.constant(user_index[start:start + batch_size], tf.int32),
                             ANIME_INPUT: tf.constant(anime_index[start:start + batch_size], tf.int32)},
                            training=False)).reshape(-1)
           for start in range(0, len(user_index), batch_size)]
    return np.concatenate(out) if out else np.empty(0, np.float32)


def _fit_als(model: keras.Model, matrix: UtilityMatrix, config: TrainingConfig, global_mean: float,
             callbacks: Sequence[keras.callbacks.Callback], log: Callable[[str], None]) -> dict[str, list[float]]:
    """ALS from the Keras model's initial weights, each sweep reported to the callbacks like an epoch."""
    def on_sweep(epoch: int, logs: dict[str, float]) -> None:
        for callback in callbacks:
            callback.on_epoch_end(epoch, logs)
        log(f"sweep {epoch + 1}/{config.epochs} (L2 {logs['l2']:.4g}): loss {logs['loss']:.5f} "
            f"val_loss {logs['val_loss']:.5f} ({logs['ratings_per_s']:,.0f} ratings/s)")

    return solve_with_als(model, matrix, config, global_mean, on_sweep)


def _fit_seed(model: keras.Model, matrix: UtilityMatrix, config: TrainingConfig,
              callbacks: Sequence[keras.callbacks.Callback],
              log: Callable[[str], None] | None) -> tuple[dict[str, list[float]], int]:
    """The seed model's own compiled loss and Adam, through the shared fit."""
    return fit_epochs(model, RatingBatches(matrix.split("train", SPLIT_COLUMNS), config.batch_size, config.seed),
                      RatingBatches(matrix.split("validation", SPLIT_COLUMNS), VALIDATION_BATCH), config.epochs,
                      [KeepBestWeights(config.early_stopping_patience), *callbacks], log)


def _fit_keras(model: keras.Model, matrix: UtilityMatrix, config: TrainingConfig, global_mean: float,
               callbacks: Sequence[keras.callbacks.Callback],
               log: Callable[[str], None] | None) -> tuple[dict[str, list[float]], int]:
    """The biased model by `model.fit` of its FactorizationTrainer: the settings' optimizer, learning-rate function
    and initializer (an ALS warm start counts as epoch 0: kept if no epoch improves on it), for the epochs of the
    `updates_per_user` budget."""
    train = RatingBatches(matrix.split("train", SPLIT_COLUMNS), config.batch_size, config.seed)
    validation = RatingBatches(matrix.split("validation", SPLIT_COLUMNS), VALIDATION_BATCH)
    pa.default_memory_pool().release_unused()  # the splits' Arrow buffers (copied into the batches' arrays)
    epochs = epoch_budget(train, matrix.n_users, config.updates_per_user, config.epochs)
    rate = learning_rate_function(config.learning_rate_schedule, config.learning_rate, len(train), epochs)
    distributed = tf.distribute.get_strategy().num_replicas_in_sync > 1
    held = {}
    if not distributed:  # Keras splits a batch between devices only as it reads it from the dataset
        train, validation = HeldBatches(train), HeldBatches(validation)
        held = {"train": train, "validation": validation}
        callbacks = [NextEpochOrder(train), *callbacks]
    trainer = FactorizationTrainer(model, config.l2, held, config.id_dropout, config.seed)
    compiled = not distributed and matrix.split_sizes["train"] * epochs >= XLA_MIN_RATINGS
    trainer.compile(optimizer=build_optimizer(config.optimizer, rate.rate), jit_compile=compiled,
                    steps_per_execution=1 if distributed else STEPS_PER_EXECUTION)
    start_rmse = None
    if config.initializer.name == ALS_WARM_START:
        warm_start_from_als(model, matrix, config, global_mean)
        start_rmse = validation_rmse(trainer, validation)
    return fit_epochs(trainer, train, validation, epochs,
                      [*rate.callbacks, KeepBestWeights(config.early_stopping_patience, start_rmse), *callbacks], log)


def train_model(matrix: UtilityMatrix, config: TrainingConfig, callbacks: list[keras.callbacks.Callback] | None = None,
                log: Callable[[str], None] | None = None) -> TrainedModel:
    """Fit with early stopping on validation RMSE, keeping the best epoch's weights; a line per epoch (ALS: sweep)
    to `log`, when given."""
    keras.utils.set_random_seed(config.seed)
    train_mean = (matrix.train_mean_rating - matrix.scale.minimum) / (matrix.scale.maximum - matrix.scale.minimum)
    strategy = tf.distribute.get_strategy() if config.by_als else training_strategy(config.devices)
    device = "CPU" if config.by_als else device_description(strategy)  # ALS solves its rows with numba
    if log and not config.by_als:
        log(f"training on {device}")
    features = AnimeFeatures.of(matrix.anime_metadata(), config.feature_min_anime) if config.reads_features else None
    if log and features is not None:
        log(f"anime features: {features.summary()}")
    with strategy.scope():
        model = build_model(matrix.n_users, matrix.n_anime, config, global_mean=train_mean,
                            anime_features=None if features is None else features.rows(matrix.anime_ids()))
        if features is not None:  # an anime no training rating names is its features alone (no gradient reaches it)
            zero_untrained_anime(model, matrix.split("train", ["anime_index"])["anime_index"].to_numpy())
        if config.architecture == "seed_cosine":
            logs, kept = _fit_seed(model, matrix, config, callbacks or [], log)
        elif config.by_als:
            logs = _fit_als(model, matrix, config, train_mean, callbacks or [], log or (lambda line: None))
            kept = int(np.argmin(logs["val_loss"])) + 1
        else:
            logs, kept = _fit_keras(model, matrix, config, train_mean, callbacks or [], log)
    return TrainedModel(model=model, history=logs, epochs_run=len(logs["loss"]), best_epoch=kept, device=device,
                        features=features)
