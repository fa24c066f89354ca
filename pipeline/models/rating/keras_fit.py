"""Keras' `model.fit` for the rating models: shuffled batches of the splits, the biased model's training step, and
the callbacks every fit shares (speed, learning rate, early stopping with the best weights kept).

The biased model is trained through `FactorizationTrainer`, a `keras.Model` around it whose `train_step` computes
the model's training objective on a batch (squared error on the [0, 1] scale + L2 on the rows the batch
touches), takes its gradients with `tf.GradientTape` and hands them to the optimizer. The embedding lookups give
sparse gradients, so the optimizer's step touches only the batch's rows (optimizers.py); the step is
compiled by XLA (`jit_compile`) unless the fit is too small to repay the compile, and runs on a GPU when TensorFlow
sees one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence

import keras
import numpy as np
import pyarrow as pa
import tensorflow as tf

USER_INPUT, ANIME_INPUT = "user", "anime"
TABLES = ("user_embedding", "anime_embedding", "user_bias", "anime_bias")
FEATURES_LAYER, TOWER_LAYER = "anime_features", "feature_tower"  # the feature model's (feature_model.py)
SPLIT_COLUMNS = ["user_index", "anime_index", "scaled_rating"]
STEPS_PER_EXECUTION = 32  # optimizer steps per call into the compiled function (Python overhead per step)
# XLA's compile takes seconds: a fit that may process fewer ratings (train ratings × epoch cap) runs faster uncompiled
XLA_MIN_RATINGS = 500_000
VALIDATION_BATCH = 65_536


class RatingBatches(keras.utils.PyDataset):
    """Batches of ({"user", "anime"}, scaled rating, weight) from a split's columns, for `model.fit`.

    Every batch has `batch_size` rows (a multiple of the devices training in step), the last filled up with rows of
    weight 0, so that XLA compiles one step. With a seed, each epoch draws a new order (seeded: runs repeat); a
    batch's rows are taken in the split's order, which keeps a user's rows together in memory when the split is in
    user order, as rating files are. A Python dataset rather than tensors captured by `tf.data` functions:
    TensorFlow keeps those for the life of the process (GBs at full scale); these arrays go when the fit is done.
    On one device the biased model's fit holds these batches in TensorFlow instead (held_batches.py)."""

    def __init__(self, split: pa.Table, batch_size: int, shuffle_seed: int | None = None):
        super().__init__(workers=1, use_multiprocessing=False, max_queue_size=16)
        self.users, self.anime, self.target = (np.array(split[name]) for name in SPLIT_COLUMNS)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync  # each device gets an equal share of a batch
        self.batch_size = replicas * math.ceil(max(1, min(batch_size, split.num_rows)) / replicas)
        self.order = np.arange(split.num_rows, dtype=np.int64 if split.num_rows >= 2**31 else np.int32)
        self.random = None if shuffle_seed is None else np.random.default_rng(shuffle_seed)
        self.on_epoch_end()

    def __len__(self) -> int:
        return max(1, math.ceil(len(self.order) / self.batch_size))

    @property
    def n_ratings(self) -> int:
        return len(self.order)

    def fit_input(self) -> RatingBatches:
        """What `model.fit` reads: this dataset."""
        return self

    def __getitem__(self, index: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        if self.random is not None:
            rows = np.sort(rows)
        weight = np.ones(self.batch_size, np.float32)
        if len(rows) < self.batch_size:
            weight[len(rows):] = 0.0
            rows = np.concatenate([rows, np.zeros(self.batch_size - len(rows), rows.dtype)])
        return ({USER_INPUT: self.users[rows].astype(np.int32), ANIME_INPUT: self.anime[rows].astype(np.int32)},
                self.target[rows].astype(np.float32), weight)

    def on_epoch_end(self) -> None:
        if self.random is not None:
            self.random.shuffle(self.order)


class FactorizationTrainer(keras.Model):
    """Fits the biased rating model (its layers, its weights) on its own objective; `call` is the served model.

    Per batch: predicted = w · (u·a + b_user + b_anime) + b (the model's head, unclipped as in training),
    objective = Σ (predicted − target)² + l2 · Σ (‖u‖² + ‖a‖² + b_user² + b_anime²) over the batch's ratings (its
    filling rows weigh 0).
    """

    def __init__(self, rating_model: keras.Model, l2: float, held: dict[str, object] | None = None,
                 id_dropout: float = 0.0, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.held = held or {}  # "train", "validation": HeldBatches whose batch numbers `fit` reads instead
        self.rating_model = rating_model
        self.tables = [rating_model.get_layer(name).embeddings for name in TABLES]
        names = {layer.name for layer in rating_model.layers}
        self.tower = rating_model.get_layer(TOWER_LAYER) if TOWER_LAYER in names else None
        self.features = rating_model.get_layer(FEATURES_LAYER).embeddings if self.tower else None
        self.id_dropout = id_dropout
        self.dropout_seed = seed
        output = rating_model.get_layer("head").get_layer("rating")
        self.weight, self.offset = output.kernel, output.bias
        self.l2 = l2
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.rmse_tracker = keras.metrics.RootMeanSquaredError(name="rmse")

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.loss_tracker, self.rmse_tracker]

    def call(self, inputs, training=False):
        return self.rating_model(inputs, training=training)

    def trained_output(self, users: tf.Tensor, anime: tf.Tensor,
                       training: bool = False) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """The head's unclipped output and the rows L2 holds back (the looked-up ones; the tower's outputs). Sums
        over the embedding dimension are products with a vector of ones: XLA on CPU turns those into BLAS calls,
        several times faster than its reductions. The feature model adds its tower's vector and bias to the anime's ID
        part, which training leaves out of a share `id_dropout` of the ratings."""
        rows = [tf.gather(table, users if name.startswith("user") else anime)
                for table, name in zip(self.tables, TABLES, strict=True)]
        anime_vector, anime_bias = rows[1], rows[3][:, 0]
        if self.tower is not None:
            tower_vector, tower_bias = self._tower_rows(anime, training)
            if training and self.id_dropout > 0:
                draw = tf.random.stateless_uniform(tf.shape(anime), seed=tf.stack(
                    [tf.constant(self.dropout_seed, tf.int64), tf.cast(self.optimizer.iterations, tf.int64)]))
                kept = tf.cast(draw >= self.id_dropout, anime_vector.dtype)
                anime_vector, anime_bias = anime_vector * kept[:, None], anime_bias * kept
            anime_vector, anime_bias = anime_vector + tower_vector, anime_bias + tower_bias[:, 0]
            rows += [tower_vector, tower_bias]
        ones = tf.ones((rows[0].shape[-1],), rows[0].dtype)
        interaction = tf.linalg.matvec(rows[0] * anime_vector, ones) + rows[2][:, 0] + anime_bias
        return interaction * self.weight[0, 0] + self.offset[0], rows

    def _tower_rows(self, anime: tf.Tensor, training: bool) -> tuple[tf.Tensor, tf.Tensor]:
        """The tower's vector and bias for the batch's anime. A catalog smaller than the batch goes through the tower
        whole and is gathered (fewer rows than the batch's, which repeat popular anime); a larger one, row by row."""
        if anime.shape[0] is not None and self.features.shape[0] < anime.shape[0]:
            vectors, bias = self.tower(self.features, training=training)
            return tf.gather(vectors, anime), tf.gather(bias, anime)
        return self.tower(tf.gather(self.features, anime), training=training)

    def train_step(self, data):
        features, target, weight = self.held["train"].batch(data) if "train" in self.held else data
        predicted, squared_error, gradients = self.batch_gradients(features, target, weight)
        self.optimizer.apply(gradients, self.trainable_variables)
        return self._metric_results(squared_error, target, predicted, weight)

    def batch_gradients(self, features, target, weight) -> tuple[tf.Tensor, tf.Tensor, list]:
        """The objective's gradients on a batch (sparse for the tables), with the predictions and squared errors."""
        with tf.GradientTape() as tape:
            predicted, rows = self.trained_output(features[USER_INPUT], features[ANIME_INPUT], training=True)
            squared_error = tf.square(predicted - target)
            squares = tf.add_n([tf.linalg.matvec(tf.square(row), tf.ones((row.shape[-1],), row.dtype))
                                for row in rows])
            objective = tf.reduce_sum(weight * (squared_error + self.l2 * squares))
        return predicted, squared_error, tape.gradient(objective, self.trainable_variables)

    def test_step(self, data):
        """The served model's error: predictions clipped to the scale."""
        features, target, weight = self.held["validation"].batch(data) if "validation" in self.held else data
        predicted = tf.clip_by_value(self.trained_output(features[USER_INPUT], features[ANIME_INPUT])[0], 0.0, 1.0)
        return self._metric_results(tf.square(predicted - target), target, predicted, weight)

    def _metric_results(self, squared_error, target, predicted, weight) -> dict[str, tf.Tensor]:
        self.loss_tracker.update_state(squared_error, sample_weight=weight)
        self.rmse_tracker.update_state(target, predicted, sample_weight=weight)
        return {metric.name: metric.result() for metric in self.metrics}


class EpochSpeed(keras.callbacks.Callback):
    """Ratings per second of each epoch's training pass (validation excluded), as `ratings_per_s` in the logs."""

    def __init__(self, n_train: int):
        super().__init__()
        self.n_train = n_train

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started, self.rate = time.perf_counter(), None

    def on_test_begin(self, logs: dict | None = None) -> None:
        if self.rate is None:
            self.rate = self.n_train / (time.perf_counter() - self.started)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["ratings_per_s"] = self.rate or self.n_train / (time.perf_counter() - self.started)


class LearningRateLog(keras.callbacks.Callback):
    """The optimizer's learning rate at the end of each epoch, as `learning_rate` in the logs."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class EpochLines(keras.callbacks.Callback):
    """One line per epoch for a logger: the losses, the learning rate and the speed."""

    def __init__(self, log: Callable[[str], None]):
        super().__init__()
        self.log = log

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        self.log(f"epoch {epoch + 1}/{self.params['epochs']}: loss {logs.get('loss', np.nan):.5f} val_loss "
                 f"{logs.get('val_loss', np.nan):.5f}, learning rate {logs.get('learning_rate', np.nan):.3g} "
                 f"({logs.get('ratings_per_s', np.nan):,.0f} ratings/s)")


class KeepBestWeights(keras.callbacks.EarlyStopping):
    """Keras' early stopping on validation RMSE with the best weights restored, where the weights the fit started
    from count as epoch 0: a warm start that no epoch improves on is kept as it was."""

    def __init__(self, patience: int, start_rmse: float | None = None):
        super().__init__(monitor="val_rmse", mode="min", patience=patience, restore_best_weights=True)
        self.start_rmse = start_rmse

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        if self.start_rmse is not None:
            self.best, self.best_weights, self.best_epoch = self.start_rmse, self.model.get_weights(), -1

    @property
    def kept_epoch(self) -> int:
        """1-based epoch whose weights the model holds after the fit (0: the starting weights)."""
        return self.best_epoch + 1


def fit_epochs(model: keras.Model, train, validation, epochs: int,
               callbacks: Sequence[keras.callbacks.Callback],
               log: Callable[[str], None] | None) -> tuple[dict[str, list[float]], int]:
    """`model.fit` with the shared callbacks around the given ones (which see `ratings_per_s` and
    `learning_rate` in their logs), a line per epoch to `log`; return the history and the epoch whose weights were
    kept."""
    keep_best = next(c for c in callbacks if isinstance(c, KeepBestWeights))
    lines = [EpochLines(log)] if log else []
    _quiet_expected_retracing()
    history = model.fit(train.fit_input(), validation_data=validation.fit_input(), epochs=epochs, verbose=0,
                        shuffle=False, callbacks=[EpochSpeed(train.n_ratings), LearningRateLog(), *callbacks, *lines])
    return {key: [float(v) for v in values] for key, values in history.history.items()}, keep_best.kept_epoch


class _ExpectedRetracing(logging.Filter):
    """Every fit compiles its own model's step: TensorFlow's warning about functions traced again (several fits in
    one process, as a sweep runs them) is expected here, not a fault."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def _quiet_expected_retracing() -> None:
    logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _ExpectedRetracing) for f in logger.filters):
        logger.addFilter(_ExpectedRetracing())


def validation_rmse(trainer: FactorizationTrainer, validation) -> float:
    """The validation RMSE of the weights as they are (the warm start's, before any epoch)."""
    return float(trainer.evaluate(validation.fit_input(), verbose=0, return_dict=True)["rmse"])


def epoch_budget(batches: RatingBatches, n_users: int, updates_per_user: int, most: int) -> int:
    """Epochs for the average user's row to get `updates_per_user` optimizer updates, at most `most`: a batch of B
    ratings names a given user with probability 1 − exp(−B / users) when ratings are spread evenly."""
    per_epoch = len(batches) * -math.expm1(-batches.batch_size / max(n_users, 1))
    return max(1, min(most, math.ceil(updates_per_user / per_epoch)))
