"""Part `accuracy`: test RMSE on the anime sample, one split for all: the default (Keras' fit), ALS, the seed model,
Surprise SVD and BaselineOnly, the global mean."""

from __future__ import annotations

import numpy as np

from benchmarks.report import Table
from benchmarks.runs import BenchContext, SampleRuns, fit_surprise, keras_predictor, surprise_predictor, test_scores
from pipeline.settings import TrainingConfig


def accuracy_part(runs: SampleRuns) -> Table:
    from surprise import SVD, BaselineOnly

    matrix = runs.matrix
    rows = [
        (f"default: {TrainingConfig().method}", test_scores(keras_predictor(runs.default, matrix), matrix),
         runs.default_seconds),
        ("biased MF by ALS along an L2 path (solver='als')", test_scores(keras_predictor(runs.als, matrix), matrix),
         runs.als_seconds),
        ("seed (cosine → Dense sigmoid, BCE, Adam)", test_scores(keras_predictor(runs.seed, matrix), matrix),
         runs.seed_seconds),
    ]
    svd, svd_seconds = fit_surprise(SVD(random_state=0), matrix, ("train",))
    rows.append(("Surprise SVD (defaults)", test_scores(surprise_predictor(svd), matrix), svd_seconds))
    baseline, baseline_seconds = fit_surprise(BaselineOnly(verbose=False), matrix, ("train",))
    rows.append(("Surprise BaselineOnly (defaults)", test_scores(surprise_predictor(baseline), matrix),
                 baseline_seconds))
    svd_all, svd_all_seconds = fit_surprise(SVD(random_state=0), matrix, ("train", "validation"))
    rows.append(("Surprise SVD, fit on train + validation", test_scores(surprise_predictor(svd_all), matrix),
                 svd_all_seconds))
    mean = float(np.mean(matrix.split("train")["rating"].to_numpy()))
    rows.append(("global mean", test_scores(lambda u, a: np.full(len(u), mean), matrix), 0.0))
    reference = rows[3][1].rmse
    sizes = matrix.split_sizes
    return Table(
        f"Accuracy on the anime sample (test split, {sizes['test']:,} ratings; 1–10 scale)",
        ["model", "test RMSE", "MAE", "fit s", "RMSE / SVD"],
        [[name, f"{s.rmse:.4f}", f"{s.mae:.4f}", f"{seconds:.1f}", f"{s.rmse / reference:.3f}"]
         for name, s, seconds in rows],
        [f"Same split for every model: {sizes['train']:,} train / {sizes['validation']:,} validation / "
         f"{sizes['test']:,} test rated rows (seed {runs.settings.split_seed}). Our models fit on train and use "
         "validation only for early stopping (ALS: and its L2 path); Surprise fits on train (and, in one row, on "
         "train + validation).",
         f"Default: best epoch {runs.default.best_epoch} of {runs.default.epochs_run}; ALS: best sweep "
         f"{runs.als.best_epoch} of {runs.als.epochs_run} (L2 {runs.als.history['l2'][runs.als.best_epoch - 1]:.4g}); "
         f"seed: best epoch {runs.seed.best_epoch} of {runs.seed.epochs_run}. Fit times include the first call's "
         "compilation (XLA for the Keras fits; numba's for ALS is cached on disk after the first run)."])


def run(context: BenchContext) -> list[Table]:
    return [accuracy_part(context.runs)]
