"""Train the seed model: user and anime embeddings → cosine → Dense(1, sigmoid), BCE on [0, 1] ratings."""

from __future__ import annotations

import os
from dataclasses import dataclass

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import tensorflow as tf  # noqa: E402

from pipeline.matrix import UtilityMatrix  # noqa: E402
from pipeline.settings import TrainingConfig  # noqa: E402

USER_INPUT, ANIME_INPUT = "user", "anime"


@dataclass
class TrainedModel:
    model: keras.Model
    history: dict[str, list[float]]  # per-epoch Keras logs (loss, val_loss, rmse, val_rmse)
    epochs_run: int
    best_epoch: int  # 1-based epoch whose weights were kept


def build_model(n_users: int, n_anime: int, config: TrainingConfig) -> keras.Model:
    """The seed architecture. Scalar id inputs keep the Dot to one cosine per row (no (n,128,128) trap)."""
    user = keras.Input(shape=(), dtype="int32", name=USER_INPUT)
    anime = keras.Input(shape=(), dtype="int32", name=ANIME_INPUT)
    user_vector = keras.layers.Embedding(n_users, config.embedding_dim, name="user_embedding")(user)
    anime_vector = keras.layers.Embedding(n_anime, config.embedding_dim, name="anime_embedding")(anime)
    cosine = keras.layers.Dot(axes=1, normalize=True, name="cosine")([user_vector, anime_vector])
    flat = keras.layers.Flatten()(cosine)
    rating = keras.layers.Dense(1, activation="sigmoid", name="rating")(flat)
    model = keras.Model(inputs={USER_INPUT: user, ANIME_INPUT: anime}, outputs=rating, name="seed_cosine")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
                  loss="binary_crossentropy", metrics=[keras.metrics.RootMeanSquaredError(name="rmse")])
    return model


def as_dataset(split: pa.Table, batch_size: int, shuffle_seed: int | None = None) -> tf.data.Dataset:
    """Batches gathered from whole-column tensors; with a seed, a fresh permutation every epoch.

    Shuffling a permutation of row numbers and gathering whole batches keeps per-row work out of
    tf.data (an element-wise `shuffle` over the ratings costs more than the training step).
    """
    users = tf.constant(split["user_index"].to_numpy())
    anime = tf.constant(split["anime_index"].to_numpy())
    target = tf.constant(split["scaled_rating"].to_numpy())
    rows = tf.data.Dataset.range(split.num_rows)
    if shuffle_seed is not None:
        rows = rows.shuffle(split.num_rows, seed=shuffle_seed, reshuffle_each_iteration=True)
    return (rows.batch(batch_size)
            .map(lambda i: ({USER_INPUT: tf.gather(users, i), ANIME_INPUT: tf.gather(anime, i)}, tf.gather(target, i)),
                 num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))


def train_model(matrix: UtilityMatrix, config: TrainingConfig,
                callbacks: list[keras.callbacks.Callback] | None = None, verbose: int | str = "auto") -> TrainedModel:
    """Fit with early stopping on validation loss, keeping the best epoch's weights."""
    keras.utils.set_random_seed(config.seed)
    model = build_model(matrix.n_users, matrix.n_anime, config)
    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.early_stopping_patience, restore_best_weights=True)
    history = model.fit(
        as_dataset(matrix.split("train"), config.batch_size, shuffle_seed=config.seed),
        validation_data=as_dataset(matrix.split("validation"), config.batch_size),
        epochs=config.epochs, shuffle=False, callbacks=[early_stopping, *(callbacks or [])], verbose=verbose,
    )
    logs = {key: [float(v) for v in values] for key, values in history.history.items()}
    best_epoch = int(np.argmin(logs["val_loss"])) + 1
    return TrainedModel(model=model, history=logs, epochs_run=len(logs["loss"]), best_epoch=best_epoch)
