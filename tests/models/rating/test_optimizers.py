"""The sparse optimizers against Keras' own: the same update on the rows a gradient names, nothing elsewhere."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.errors import PipelineInputError
from pipeline.models.rating.optimizers import SparseAdagrad, SparseAdam, SparseAdamW, build_optimizer
from pipeline.settings import KerasPart

N_ROWS, DIM = 12, 4


def _steps(rng: np.random.Generator, n_steps: int, every_row: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """Sparse gradients (rows, values) with repeated rows; with every_row, each step names every row at least once."""
    steps = []
    for _ in range(n_steps):
        rows = rng.integers(0, N_ROWS, 9)
        if every_row:
            rows = np.concatenate([np.arange(N_ROWS), rows])
        steps.append((rows.astype(np.int32), rng.normal(size=(len(rows), DIM)).astype(np.float32)))
    return steps


def _sparse(rows: np.ndarray, values: np.ndarray) -> tf.IndexedSlices:
    return tf.IndexedSlices(tf.constant(values), tf.constant(rows), tf.constant([N_ROWS, DIM]))


def _run(optimizer: keras.optimizers.Optimizer, start: np.ndarray, steps) -> np.ndarray:
    """Apply the steps to a table (sparse gradients) and a dense scalar beside it; return both, flattened."""
    table, scale = keras.Variable(start.copy()), keras.Variable(np.ones((1, 1), np.float32))
    for rows, values in steps:
        optimizer.apply([_sparse(rows, values), tf.constant([[values.sum()]])], [table, scale])
    return np.concatenate([table.numpy().ravel(), scale.numpy().ravel()])


@pytest.fixture
def start() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(N_ROWS, DIM)).astype(np.float32)


def test_sparse_adagrad_is_keras_adagrad(start):
    steps = _steps(np.random.default_rng(1), 6, every_row=False)
    ours = _run(SparseAdagrad(learning_rate=0.1, initial_accumulator_value=0.01), start, steps)
    keras_own = _run(keras.optimizers.Adagrad(learning_rate=0.1, initial_accumulator_value=0.01), start, steps)
    np.testing.assert_allclose(ours, keras_own, rtol=1e-5, atol=1e-6)
    assert not np.allclose(ours[:-1], start.ravel())  # it did move


@pytest.mark.parametrize(("ours", "theirs"), [
    (lambda: SparseAdam(learning_rate=0.05), lambda: keras.optimizers.Adam(learning_rate=0.05)),
    (lambda: SparseAdamW(learning_rate=0.05, weight_decay=0.1),
     lambda: keras.optimizers.AdamW(learning_rate=0.05, weight_decay=0.1)),
])
def test_sparse_adam_is_keras_adam_where_every_row_is_touched(start, ours, theirs):
    """With repeated rows in every step, Adam's sums of gradients and of their squares per row are Keras' own."""
    steps = _steps(np.random.default_rng(2), 5, every_row=True)
    sparse_result = _run(ours(), start, steps)
    np.testing.assert_allclose(sparse_result, _run(theirs(), start, steps), rtol=1e-4, atol=1e-5)


def test_sparse_adam_leaves_untouched_rows_and_their_moments_alone(start):
    """A row no later gradient names keeps its weights and moments (Keras' dense Adam would move it on its
    momentum), while the rows named move."""
    optimizer, table = SparseAdam(learning_rate=0.05), keras.Variable(start.copy())
    (rows, values), = _steps(np.random.default_rng(3), 1, every_row=True)
    optimizer.apply([_sparse(rows, values)], [table])
    before, momentum = table.numpy().copy(), optimizer._momentums[0].numpy().copy()
    for rows, values in _steps(np.random.default_rng(4), 4, every_row=False):
        optimizer.apply([_sparse(rows[rows != 5], values[rows != 5])], [table])
    np.testing.assert_array_equal(table.numpy()[5], before[5])
    np.testing.assert_array_equal(optimizer._momentums[0].numpy()[5], momentum[5])
    assert not np.allclose(np.delete(table.numpy(), 5, axis=0), np.delete(before, 5, axis=0))


def test_optimizer_names_and_arguments_come_from_the_settings():
    optimizer = build_optimizer(KerasPart(name="AdamW", args={"weight_decay": 0.01, "beta_1": 0.8}), 0.003)
    assert isinstance(optimizer, SparseAdamW) and isinstance(optimizer, keras.optimizers.AdamW)
    assert optimizer.weight_decay == 0.01 and optimizer.beta_1 == 0.8
    assert float(optimizer.learning_rate) == pytest.approx(0.003)
    with pytest.raises(PipelineInputError, match="'SGD' is not one of Adam, AdamW, Adagrad"):
        build_optimizer(KerasPart(name="SGD"), 0.01)
    with pytest.raises(PipelineInputError, match="Adam"):
        build_optimizer(KerasPart(name="Adam", args={"bogus": 1}), 0.01)
