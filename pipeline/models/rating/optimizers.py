"""Keras optimizers whose steps touch only the embedding rows a batch names.

Why: Keras' own Adam, AdamW and Adagrad treat a sparse gradient (`tf.IndexedSlices`, what an embedding lookup
gives) as dense somewhere in their step: Adam and AdamW decay the moments of every row, Adagrad divides the whole
table by its accumulator. With 310k users × 128 dimensions that is the whole table read and written per batch.
These subclasses keep Keras' update rule, learning rate, schedules and callbacks, and apply it to the rows in
the gradient only ("lazy" updates, as TensorFlow Addons' LazyAdam and PyTorch's SparseAdam do). Dense gradients
(the model's scale and offset) go through Keras' own code.

A row named several times in one gradient is handled as Keras' dense path handles it: its gradients are summed
(and, for the second moments and Adagrad's accumulator, their squares). `SparseAdagrad` equals
`keras.optimizers.Adagrad` exactly; `SparseAdam` equals `keras.optimizers.Adam` on every row a batch touches and
leaves the others as they are (tests/models/rating/test_optimizers.py).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from pipeline.errors import PipelineInputError
from pipeline.settings import KerasPart


class _SparseRows:
    """Routes sparse gradients to `sparse_update_step(values, rows, variable, learning_rate)`."""

    def update_step(self, gradient, variable, learning_rate):
        if isinstance(gradient, tf.IndexedSlices):
            return self.sparse_update_step(tf.cast(gradient.values, variable.dtype), gradient.indices, variable,
                                           tf.cast(learning_rate, variable.dtype))
        return super().update_step(gradient, variable, learning_rate)


class SparseAdagrad(_SparseRows, keras.optimizers.Adagrad):
    """Keras' Adagrad on the rows in the gradient."""

    def sparse_update_step(self, values, rows, variable, learning_rate):
        accumulator = self._accumulators[self._get_variable_index(variable)]
        self.assign_add(accumulator, tf.IndexedSlices(tf.square(values), rows))
        step = learning_rate * values / tf.sqrt(tf.gather(accumulator, rows) + self.epsilon)
        self.assign_sub(variable, tf.IndexedSlices(step, rows))


class _RowCounts:
    """How often each entry's row occurs in a sparse gradient, counted on a zeroed column per variable: updates
    that must happen once per row are split evenly over its entries and added."""

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._row_counts = [self.add_variable((v.shape[0], 1) if len(v.shape) else (1, 1), initializer="zeros",
                                              name="row_count") for v in variables]

    def occurrences(self, variable, rows):
        counter = self._row_counts[self._get_variable_index(variable)]
        ones = tf.ones((tf.shape(rows)[0], 1), counter.dtype)
        self.assign_add(counter, tf.IndexedSlices(ones, rows))
        counts = tf.gather(counter, rows)
        self.assign(counter, tf.IndexedSlices(tf.zeros_like(ones), rows))
        return counts


def _lazy_adam_rows(optimizer: keras.optimizers.Adam, values, rows, variable, learning_rate, counts) -> None:
    """Adam's moment and weight updates on the rows in `rows`: m += (1 − β₁)(Σg − m), v += (1 − β₂)(Σg² − v),
    w −= α m / (√v + ε), as sums over each row's entries (each entry carries 1/count of the once-per-row parts)."""
    dtype = variable.dtype
    step = tf.cast(optimizer.iterations + 1, dtype)
    beta_1, beta_2 = tf.cast(optimizer.beta_1, dtype), tf.cast(optimizer.beta_2, dtype)
    alpha = learning_rate * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))
    index = optimizer._get_variable_index(variable)
    momentum, velocity = optimizer._momentums[index], optimizer._velocities[index]
    optimizer.assign_add(momentum, tf.IndexedSlices((1 - beta_1) * (values - tf.gather(momentum, rows) / counts), rows))
    optimizer.assign_add(velocity, tf.IndexedSlices(
        (1 - beta_2) * (tf.square(values) - tf.gather(velocity, rows) / counts), rows))
    step_size = alpha * tf.gather(momentum, rows) / (tf.sqrt(tf.gather(velocity, rows)) + optimizer.epsilon)
    optimizer.assign_sub(variable, tf.IndexedSlices(step_size / counts, rows))


class SparseAdam(_SparseRows, _RowCounts, keras.optimizers.Adam):
    """Keras' Adam on the rows in the gradient; the other rows' moments are not decayed."""

    def sparse_update_step(self, values, rows, variable, learning_rate):
        _lazy_adam_rows(self, values, rows, variable, learning_rate, self.occurrences(variable, rows))


class SparseAdamW(_SparseRows, _RowCounts, keras.optimizers.AdamW):
    """Keras' AdamW on the rows in the gradient: decoupled weight decay of those rows, then Adam's step."""

    def _apply_weight_decay(self, variables):
        """Decay moves into each variable's update step, so that a sparse one decays the rows it updates only."""

    def update_step(self, gradient, variable, learning_rate):
        if not isinstance(gradient, tf.IndexedSlices) and self.weight_decay and self._use_weight_decay(variable):
            self.assign_sub(variable, variable * tf.cast(self.weight_decay * learning_rate, variable.dtype))
        return super().update_step(gradient, variable, learning_rate)

    def sparse_update_step(self, values, rows, variable, learning_rate):
        counts = self.occurrences(variable, rows)
        if self.weight_decay and self._use_weight_decay(variable):
            decay = tf.gather(variable, rows) * tf.cast(self.weight_decay, variable.dtype) * learning_rate
            self.assign_sub(variable, tf.IndexedSlices(decay / counts, rows))
        _lazy_adam_rows(self, values, rows, variable, learning_rate, counts)


SPARSE = {"Adam": SparseAdam, "AdamW": SparseAdamW, "Adagrad": SparseAdagrad}
OPTIMIZERS = tuple(SPARSE)


def build_optimizer(part: KerasPart, learning_rate) -> keras.optimizers.Optimizer:
    """The optimizer the settings name, with Keras' arguments of that class, at `learning_rate` (a number or a
    keras.optimizers.schedules schedule)."""
    if part.name not in SPARSE:
        raise PipelineInputError(f"optimizer {part.name!r} is not one of {', '.join(OPTIMIZERS)}")
    try:
        return SPARSE[part.name](learning_rate=learning_rate, **part.args)
    except (TypeError, ValueError) as exc:
        raise PipelineInputError(f"optimizer {part}: {exc}") from exc
