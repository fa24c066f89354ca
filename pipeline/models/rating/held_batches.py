"""The rating batches held by TensorFlow: `model.fit` reads batch numbers, and the training step takes its batch
from the split's columns and the epoch's order, kept in variables.

Why: through Keras' PyDataset every batch crosses from Python into TensorFlow by a Python call, which costs more
than the call that makes it (BENCHMARKS.md, part `device`: where a step's time goes). Held here, no Python runs
between steps. Variables rather than constants captured by `tf.data` functions: TensorFlow keeps those for the
life of the process; variables go with the fit. The batches are the same as `RatingBatches` gives, in the same
order (tests/models/rating/test_keras_fit.py).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from pipeline.models.rating.keras_fit import ANIME_INPUT, USER_INPUT, RatingBatches


class HeldBatches:
    """`RatingBatches`' batches, held: its columns and each epoch's order (each batch's rows sorted, the last batch
    filled with row 0 at weight 0) as variables; `fit_input()` is the batch numbers, `batch(number)` the batch."""

    def __init__(self, batches: RatingBatches):
        self.source = batches
        self.users, self.anime = (tf.Variable(column.astype(np.int32), trainable=False)
                                  for column in (batches.users, batches.anime))
        self.target = tf.Variable(batches.target.astype(np.float32), trainable=False)
        batches.users = batches.anime = batches.target = None  # moved into TensorFlow; only the order stays here
        self.order = tf.Variable(self._padded_order(), trainable=False)
        self.n_ratings = batches.n_ratings

    def __len__(self) -> int:
        return len(self.source)

    def fit_input(self) -> tf.data.Dataset:
        """What `model.fit` reads: the batch numbers."""
        return tf.data.Dataset.range(len(self.source))

    def batch(self, number: tf.Tensor) -> tuple[dict[str, tf.Tensor], tf.Tensor, tf.Tensor]:
        size = self.source.batch_size
        start = tf.cast(number, self.order.dtype) * size
        positions = start + tf.range(size, dtype=start.dtype)
        rows = tf.gather(self.order, positions)  # not order[a:b]: XLA would compile a step per batch number
        weight = tf.cast(positions < self.n_ratings, tf.float32)
        return ({USER_INPUT: tf.gather(self.users, rows), ANIME_INPUT: tf.gather(self.anime, rows)},
                tf.gather(self.target, rows), weight)

    def next_epoch(self) -> None:
        """The next epoch's order, as `RatingBatches.on_epoch_end` draws it."""
        self.source.on_epoch_end()
        self.order.assign(self._padded_order())

    def _padded_order(self) -> np.ndarray:
        size, order = self.source.batch_size, self.source.order
        padded = np.zeros(len(self.source) * size, order.dtype)
        padded[:len(order)] = order
        if self.source.random is not None:  # each batch's rows in the split's order (a user's rows together)
            full = len(order) // size * size
            padded[:full].reshape(-1, size).sort(axis=1)
            padded[full:len(order)].sort()
        return padded


class NextEpochOrder(keras.callbacks.Callback):
    """Draws the held batches' next order after each epoch (its validation included)."""

    def __init__(self, batches: HeldBatches):
        super().__init__()
        self.batches = batches

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.batches.next_epoch()
