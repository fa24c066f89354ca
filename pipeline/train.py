"""Train the model: the default biased matrix factorization (ALS, or Adagrad on sparse row updates), or the seed
cosine model.

Both are Keras models with the same layer names (`user_embedding`, `anime_embedding`, `rating`; the
biased one adds `user_bias`, `anime_bias`), so that saving, serving and the numpy recommender treat
them alike. The seed trains with `model.fit`; the default by alternating least squares (pipeline/als.py, whose
factors become the Keras model's weights) or with `SparseTrainer`, which reads and writes only the embedding rows
of each batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import pyarrow as pa
import tensorflow as tf

from pipeline.als import Factors, fit_als
from pipeline.matrix import UtilityMatrix
from pipeline.settings import TrainingConfig

USER_INPUT, ANIME_INPUT = "user", "anime"
USER_TABLES, ANIME_TABLES = ("user_embedding", "user_bias"), ("anime_embedding", "anime_bias")
INITIAL_ACCUMULATOR = 1e-3  # Adagrad's starting sum of squared gradients (caps the first steps)
EVAL_BATCH = 65_536


@dataclass
class TrainedModel:
    model: keras.Model
    history: dict[str, list[float]]  # per epoch: loss, val_loss, rmse, val_rmse, ratings_per_s (ALS: and l2)
    epochs_run: int
    best_epoch: int  # 1-based epoch whose weights were kept


def _id_inputs() -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Scalar id inputs keep each Dot to one value per row (no (n, 128, 128) trap)."""
    return (keras.Input(shape=(), dtype="int32", name=USER_INPUT),
            keras.Input(shape=(), dtype="int32", name=ANIME_INPUT))


def build_seed_model(n_users: int, n_anime: int, config: TrainingConfig) -> keras.Model:
    """The seed architecture: cosine of the two embeddings → Dense(1, sigmoid), BCE, Adam."""
    user, anime = _id_inputs()
    user_vector = keras.layers.Embedding(n_users, config.embedding_dim, name="user_embedding")(user)
    anime_vector = keras.layers.Embedding(n_anime, config.embedding_dim, name="anime_embedding")(anime)
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
    def initializer(offset: int) -> keras.initializers.Initializer:  # distinct seeds: row i of both tables differ
        return keras.initializers.RandomNormal(stddev=config.init_std, seed=config.seed + offset)

    rows = [
        keras.layers.Embedding(n_users, config.embedding_dim, embeddings_initializer=initializer(0),
                               name="user_embedding")(user),
        keras.layers.Embedding(n_anime, config.embedding_dim, embeddings_initializer=initializer(1),
                               name="anime_embedding")(anime),
        keras.layers.Embedding(n_users, 1, embeddings_initializer="zeros", name="user_bias")(user),
        keras.layers.Embedding(n_anime, 1, embeddings_initializer="zeros", name="anime_bias")(anime),
    ]
    rating = build_biased_head(config.embedding_dim, global_mean)(rows)
    clipped = keras.layers.ReLU(max_value=1.0, name="clip_to_scale")(rating)
    return keras.Model(inputs={USER_INPUT: user, ANIME_INPUT: anime}, outputs=clipped, name="biased_mf")


def build_model(n_users: int, n_anime: int, config: TrainingConfig, global_mean: float = 0.5) -> keras.Model:
    if config.architecture == "seed_cosine":
        return build_seed_model(n_users, n_anime, config)
    return build_biased_model(n_users, n_anime, config, global_mean)


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


def predict_scaled(model: keras.Model, user_index: np.ndarray, anime_index: np.ndarray,
                   batch_size: int = EVAL_BATCH) -> np.ndarray:
    """The Keras model's own output in [0, 1] for index pairs, called directly in batches (no
    `predict` function traced per model, memory bounded by the batch)."""
    out = [np.asarray(model({USER_INPUT: tf.constant(user_index[start:start + batch_size], tf.int32),
                             ANIME_INPUT: tf.constant(anime_index[start:start + batch_size], tf.int32)},
                            training=False)).reshape(-1)
           for start in range(0, len(user_index), batch_size)]
    return np.concatenate(out) if out else np.empty(0, np.float32)


def _tf_variable(variable) -> tf.Variable:
    return variable.value if isinstance(variable, keras.Variable) else variable


class SparseTrainer:
    """Row-wise Adagrad on the rows a batch touches, one XLA-compiled step per batch.

    Dense optimizers (Keras' Adam) read and write every row of both embedding tables on every step;
    here each step gathers the batch's rows, computes the loss on them through the model's own head,
    and scatters updates back to those rows only. One accumulator per row (row-wise Adagrad, as used
    for large embedding tables in DLRM/FBGEMM) keeps optimizer state at 1/dim of the tables.
    Loss per batch: sum of squared errors + l2 · sum of squared rows touched (SGD-style regularization).
    """

    def __init__(self, model: keras.Model, config: TrainingConfig):
        self.head = model.get_layer("head")
        self.tables = {name: _tf_variable(model.get_layer(name).embeddings) for name in USER_TABLES + ANIME_TABLES}
        self.accumulators = {name: tf.Variable(tf.fill((table.shape[0], 1), INITIAL_ACCUMULATOR), trainable=False)
                             for name, table in self.tables.items()}
        self.dense = [_tf_variable(v) for v in self.head.trainable_variables]
        self.dense_accumulators = [tf.Variable(tf.fill(v.shape, INITIAL_ACCUMULATOR), trainable=False)
                                   for v in self.dense]
        self.learning_rate, self.l2, self.batch_size = config.learning_rate, config.l2, config.batch_size
        self._step = tf.function(self._train_step, jit_compile=True)
        self._epoch = tf.function(self._train_epoch)

    def _rows(self, users: tf.Tensor, anime: tf.Tensor) -> dict[str, tf.Tensor]:
        return {name: tf.gather(table, users if name in USER_TABLES else anime)
                for name, table in self.tables.items()}

    def _head(self, rows: dict[str, tf.Tensor]) -> tf.Tensor:
        return tf.reshape(self.head([rows[name] for name in ("user_embedding", "anime_embedding", "user_bias",
                                                             "anime_bias")]), [-1])

    def _train_step(self, users: tf.Tensor, anime: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
        rows = self._rows(users, anime)
        with tf.GradientTape() as tape:
            tape.watch(list(rows.values()))
            squared_error = tf.reduce_sum(tf.square(self._head(rows) - target))
            penalty = self.l2 * tf.add_n([tf.reduce_sum(tf.square(r)) for r in rows.values()])
            objective = squared_error + penalty
        names = list(rows)
        gradients = tape.gradient(objective, [rows[name] for name in names] + self.dense)
        for name, gradient in zip(names, gradients, strict=False):
            index = users if name in USER_TABLES else anime
            self.accumulators[name].scatter_add(tf.IndexedSlices(
                tf.reduce_mean(tf.square(gradient), axis=1, keepdims=True), index))
            step = self.learning_rate * gradient * tf.math.rsqrt(tf.gather(self.accumulators[name], index))
            self.tables[name].scatter_sub(tf.IndexedSlices(step, index))
        batch = tf.cast(tf.shape(target)[0], tf.float32)
        for variable, accumulator, gradient in zip(self.dense, self.dense_accumulators, gradients[len(names):],
                                                   strict=True):
            mean_gradient = gradient / batch
            accumulator.assign_add(tf.square(mean_gradient))
            variable.assign_sub(self.learning_rate * mean_gradient * tf.math.rsqrt(accumulator))
        return squared_error

    def _train_epoch(self, users: tf.Tensor, anime: tf.Tensor, target: tf.Tensor, order: tf.Tensor) -> tf.Tensor:
        """One pass in a graph loop (no Python per batch); returns the mean squared error seen."""
        n = tf.shape(order)[0]
        total = tf.constant(0.0)
        for start in tf.range(0, n, self.batch_size):
            batch = order[start:start + self.batch_size]
            total += self._step(tf.gather(users, batch), tf.gather(anime, batch), tf.gather(target, batch))
        return total / tf.cast(n, tf.float32)

    def train_epoch(self, split: SplitTensors, order: np.ndarray) -> float:
        return float(self._epoch(split.users, split.anime, split.target, tf.constant(order, tf.int32)))



@dataclass(frozen=True)
class SplitTensors:
    users: tf.Tensor
    anime: tf.Tensor
    target: tf.Tensor

    @classmethod
    def of(cls, split: pa.Table) -> SplitTensors:
        return cls(tf.constant(split["user_index"].to_numpy(), tf.int32),
                   tf.constant(split["anime_index"].to_numpy(), tf.int32),
                   tf.constant(split["scaled_rating"].to_numpy(), tf.float32))


class _EpochTimer(keras.callbacks.Callback):
    """Ratings per second of each epoch's training pass (validation excluded)."""

    def __init__(self, n_train: int):
        super().__init__()
        self.n_train, self.rates = n_train, []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.perf_counter()

    def on_test_begin(self, logs: dict | None = None) -> None:
        self.rates.append(self.n_train / (time.perf_counter() - self.started))


def _fit_seed(model: keras.Model, matrix: UtilityMatrix, config: TrainingConfig,
              callbacks: Sequence[keras.callbacks.Callback], verbose: int | str) -> dict[str, list[float]]:
    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.early_stopping_patience, restore_best_weights=True)
    timer = _EpochTimer(matrix.split_sizes["train"])
    history = model.fit(
        as_dataset(matrix.split("train"), config.batch_size, shuffle_seed=config.seed),
        validation_data=as_dataset(matrix.split("validation"), config.batch_size),
        epochs=config.epochs, shuffle=False, callbacks=[timer, early_stopping, *callbacks], verbose=verbose,
    )
    logs = {key: [float(v) for v in values] for key, values in history.history.items()}
    return logs | {"ratings_per_s": timer.rates}


def _fit_sparse(model: keras.Model, matrix: UtilityMatrix, config: TrainingConfig,
                callbacks: Sequence[keras.callbacks.Callback], log: Callable[[str], None]) -> dict[str, list[float]]:
    """Epochs of SparseTrainer with early stopping on validation loss, keeping the best weights."""
    trainer = SparseTrainer(model, config)
    train, validation = SplitTensors.of(matrix.split("train")), matrix.split("validation")
    validation_target = validation["scaled_rating"].to_numpy()
    rng = np.random.default_rng(config.seed)
    history: dict[str, list[float]] = {"loss": [], "val_loss": [], "rmse": [], "val_rmse": [], "ratings_per_s": []}
    best_loss, best_weights, waited = np.inf, model.get_weights(), 0
    tolerance = (1 - config.min_improvement) ** 2  # on the loss (MSE), i.e. on RMSE without the square
    for epoch in range(config.epochs):
        order = rng.permutation(matrix.split_sizes["train"]).astype(np.int32)
        started = time.perf_counter()
        loss = trainer.train_epoch(train, order)
        rate = len(order) / (time.perf_counter() - started)
        predicted = predict_scaled(model, validation["user_index"].to_numpy(), validation["anime_index"].to_numpy())
        val_loss = float(np.mean((predicted - validation_target) ** 2))  # the served (clipped) output
        logs = {"loss": loss, "val_loss": val_loss, "rmse": float(np.sqrt(loss)),
                "val_rmse": float(np.sqrt(val_loss)), "ratings_per_s": rate}
        for key, value in logs.items():
            history[key].append(value)
        for callback in callbacks:
            callback.on_epoch_end(epoch, logs)
        log(f"epoch {epoch + 1}/{config.epochs}: loss {loss:.5f} val_loss {val_loss:.5f} "
            f"({rate:,.0f} ratings/s)")
        improved = val_loss < best_loss * tolerance
        if val_loss < best_loss:
            best_loss, best_weights = val_loss, model.get_weights()
        waited = 0 if improved else waited + 1
        if not improved and waited >= config.early_stopping_patience:
            break
    model.set_weights(best_weights)
    return history


def _fit_als(model: keras.Model, matrix: UtilityMatrix, config: TrainingConfig, global_mean: float,
             callbacks: Sequence[keras.callbacks.Callback], log: Callable[[str], None]) -> dict[str, list[float]]:
    """ALS from the Keras model's initial weights; the best factors become its embedding and bias weights. The
    output layer stays as built (weight 1, bias the train mean), which is the model the factors are solved for."""
    tables = {name: model.get_layer(name).get_weights()[0] for name in USER_TABLES + ANIME_TABLES}
    start = Factors(tables["user_embedding"], tables["user_bias"][:, 0].copy(), tables["anime_embedding"],
                    tables["anime_bias"][:, 0].copy(), global_mean)

    def on_sweep(epoch: int, logs: dict[str, float]) -> None:
        for callback in callbacks:
            callback.on_epoch_end(epoch, logs)
        log(f"sweep {epoch + 1}/{config.epochs} (L2 {logs['l2']:.4g}): loss {logs['loss']:.5f} "
            f"val_loss {logs['val_loss']:.5f} ({logs['ratings_per_s']:,.0f} ratings/s)")

    columns = ["user_index", "anime_index", "scaled_rating"]  # the raw ids too would add 0.7 GB at 46M ratings
    best, history = fit_als(matrix.split("train", columns), matrix.split("validation", columns), start, config,
                            on_sweep)
    for name, values in (("user_embedding", best.users), ("anime_embedding", best.anime),
                         ("user_bias", best.user_bias[:, None]), ("anime_bias", best.anime_bias[:, None])):
        model.get_layer(name).set_weights([values])
    return history


def train_model(matrix: UtilityMatrix, config: TrainingConfig,
                callbacks: list[keras.callbacks.Callback] | None = None, verbose: int | str = "auto") -> TrainedModel:
    """Fit with early stopping on validation loss, keeping the best epoch's weights."""
    keras.utils.set_random_seed(config.seed)
    train_mean = (matrix.train_mean_rating - matrix.scale.minimum) / (matrix.scale.maximum - matrix.scale.minimum)
    model = build_model(matrix.n_users, matrix.n_anime, config, global_mean=train_mean)
    log = print if verbose else lambda line: None
    if config.architecture == "seed_cosine":
        logs = _fit_seed(model, matrix, config, callbacks or [], verbose)
    elif config.solver == "als":
        logs = _fit_als(model, matrix, config, train_mean, callbacks or [], log)
    else:
        logs = _fit_sparse(model, matrix, config, callbacks or [], log)
    best_epoch = int(np.argmin(logs["val_loss"])) + 1
    return TrainedModel(model=model, history=logs, epochs_run=len(logs["loss"]), best_epoch=best_epoch)
