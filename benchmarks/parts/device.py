"""Part `device`: the default Keras fit on whatever device TensorFlow sees (a GPU where there is one; run it as it is
on a GPU machine): where a training step's time goes, and the time to a model against Surprise SVD's on the same
split, on the anime sample."""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

from benchmarks.report import Table
from benchmarks.runs import (
    BenchContext,
    build_sample_matrix,
    fit_keras,
    fit_surprise,
    keras_predictor,
    surprise_predictor,
    test_scores,
)
from pipeline.matrix.utility_matrix import UtilityMatrix
from pipeline.models.rating.devices import device_description
from pipeline.models.rating.held_batches import HeldBatches, NextEpochOrder
from pipeline.models.rating.keras_fit import SPLIT_COLUMNS, STEPS_PER_EXECUTION, FactorizationTrainer, RatingBatches
from pipeline.models.rating.optimizers import build_optimizer
from pipeline.models.rating.train import build_model
from pipeline.settings import TrainingConfig

REPEATS = 3  # timed passes over the epoch's batches, after one that compiles


def _seconds_per_step(run_epoch, steps: int) -> float:
    run_epoch()  # traces and compiles
    started = time.perf_counter()
    for _ in range(REPEATS):
        run_epoch()
    return (time.perf_counter() - started) / (REPEATS * steps)


def step_profile(matrix: UtilityMatrix, config: TrainingConfig) -> list[tuple[str, float]]:
    """Seconds per step of the default fit: `model.fit` as the pipeline runs it (batches held by TensorFlow), as it
    ran before (batches from Keras' PyDataset, still the path under several devices), the same compiled step on
    batches already in memory, and the step's two halves alone (the gradient; the optimizer's update)."""
    def new_batches() -> RatingBatches:  # each holder takes its own (HeldBatches moves the columns)
        return RatingBatches(matrix.split("train", SPLIT_COLUMNS), config.batch_size, config.seed)

    held, batches = HeldBatches(new_batches()), new_batches()
    steps = len(batches)
    listed = [batches[i] for i in range(steps)]
    users, anime = (tf.constant(np.stack([features[key] for features, _, _ in listed])) for key in ("user", "anime"))
    target, weight = (tf.constant(np.stack([batch[i] for batch in listed])) for i in (1, 2))

    def trainer(held_batches: dict | None = None) -> FactorizationTrainer:
        model = FactorizationTrainer(build_model(matrix.n_users, matrix.n_anime, config), config.l2, held_batches)
        model.compile(optimizer=build_optimizer(config.optimizer, config.learning_rate), jit_compile=True,
                      steps_per_execution=STEPS_PER_EXECUTION)
        return model

    fitted = trainer({"train": held})
    held_step = _seconds_per_step(lambda: fitted.fit(held.fit_input(), epochs=1, verbose=0, shuffle=False,
                                                     callbacks=[NextEpochOrder(held)]), steps)
    fitted = trainer()
    fit_step = _seconds_per_step(lambda: fitted.fit(batches, epochs=1, verbose=0, shuffle=False), steps)
    stepped = trainer()
    compiled_step = tf.function(stepped.train_step, jit_compile=True)
    in_memory = _seconds_per_step(tf.function(lambda: [compiled_step(
        ({"user": users[i], "anime": anime[i]}, target[i], weight[i])) for i in range(steps)]), steps)

    @tf.function(jit_compile=True)
    def gradients(i):
        return stepped.batch_gradients({"user": users[i], "anime": anime[i]}, target[i], weight[i])[2]

    gradient_only = _seconds_per_step(tf.function(lambda: [sum(
        tf.reduce_sum(getattr(g, "values", g)) for g in gradients(i)) for i in range(steps)]), steps)
    one_batch = gradients(0)
    update = tf.function(lambda: stepped.optimizer.apply(one_batch, stepped.trainable_variables), jit_compile=True)
    update_only = _seconds_per_step(tf.function(lambda: [update() for _ in range(steps)]), steps)
    return [("`model.fit`, batches held by TensorFlow (as the pipeline trains)", held_step),
            ("`model.fit`, batches from Keras' PyDataset (under several devices)", fit_step),
            ("the same compiled step, batches already in memory", in_memory),
            ("its gradient alone (forward and backward)", gradient_only),
            ("its optimizer update alone (sparse Adam on one batch's gradient)", update_only)]


def run(context: BenchContext) -> list[Table]:
    matrix = build_sample_matrix(context.sample, context.run_dir)[0]
    config = TrainingConfig()
    device = device_description(tf.distribute.get_strategy())
    profile = Table(f"Where a training step's time goes: the default fit on {device}, anime sample "
                    f"({matrix.split_sizes['train']:,} train ratings, batch {config.batch_size})",
                    ["what runs", "ms per step", "ratings/s", "share of the fit's step"])
    profile_rows = step_profile(matrix, config)
    fit_seconds = profile_rows[0][1]
    for name, seconds in profile_rows:
        profile.rows.append([name, f"{seconds * 1e3:.2f}", f"{config.batch_size / seconds:,.0f}",
                             f"{seconds / fit_seconds:.0%}"])
    profile.notes.append(f"Mean over {REPEATS} passes over one epoch's batches (each a `fit` of one epoch), after one "
                         "that compiles. A fit's step less the in-memory one is what feeding it costs; the two halves "
                         "are compiled apart, so they need not add up to the whole.")
    from surprise import SVD

    trained, seconds = fit_keras(matrix, config)
    svd, svd_seconds = fit_surprise(SVD(random_state=0), matrix, ("train",))
    rates = trained.history["ratings_per_s"]
    timing = Table(f"Time to a rating model on {device}: the default fit against Surprise SVD (on the CPU), anime "
                   "sample", ["device", "median ratings/s per epoch", "fit s", "epochs (kept)", "test RMSE",
                              "SVD: fit s", "SVD: test RMSE", "fit time / SVD"])
    timing.rows.append([trained.device, f"{np.median(rates[1:] or rates):,.0f}", f"{seconds:.1f}",
                        f"{trained.epochs_run} ({trained.best_epoch})",
                        f"{test_scores(keras_predictor(trained, matrix), matrix).rmse:.4f}", f"{svd_seconds:.1f}",
                        f"{test_scores(surprise_predictor(svd), matrix).rmse:.4f}", f"{seconds / svd_seconds:.2f}"])
    timing.notes.append("Fit s: `train_model` (compilation, every epoch and its validation pass); SVD: Surprise's "
                        "`fit`. Ratings/s: train rows / the epoch's training pass, median over epochs after the "
                        "first.")
    return [profile, timing]
