"""Part `time-to-model`: the default's and ALS's fit time against Surprise SVD's on the same split, on the sample and
on a generated tenth of Kaggle 2020."""

from __future__ import annotations

from pathlib import Path

from benchmarks.report import Table
from benchmarks.runs import (
    ALS,
    BenchContext,
    build_sample_matrix,
    fit_keras,
    fit_surprise,
    generated_matrix,
    keras_predictor,
    surprise_predictor,
    test_scores,
)
from pipeline.settings import TrainingConfig


def time_to_model_part(sample: Path, run_dir: Path, work: Path) -> Table:
    """The default rating model's fit (Keras; early stopping included) and ALS's against Surprise SVD's on the same
    train split, at the sample's size (fixed costs such as XLA compilation weigh most) and at a generated tenth of
    Kaggle 2020."""
    from surprise import SVD

    table = Table(f"Time to a rating model: the default ({TrainingConfig().architecture} by Keras' fit) and ALS "
                  "against Surprise SVD (defaults), same split",
                  ["data", "train ratings", "model", "fit s", "epochs (kept)", "test RMSE", "SVD: fit s",
                   "SVD: test RMSE", "fit time / SVD"])
    for label, matrix in (("anime sample", build_sample_matrix(sample, run_dir)[0]),
                          ("generated, tenth of Kaggle 2020", generated_matrix("tenth", work))):
        svd, svd_seconds = fit_surprise(SVD(random_state=0), matrix, ("train",))
        svd_rmse = test_scores(surprise_predictor(svd), matrix).rmse
        for name, config in (("default (Keras)", TrainingConfig()), ("ALS", ALS)):
            ours, ours_seconds = fit_keras(matrix, config)
            table.rows.append([label if name.startswith("default") else "", f"{matrix.split_sizes['train']:,}", name,
                               f"{ours_seconds:.1f}", f"{ours.epochs_run} ({ours.best_epoch})",
                               f"{test_scores(keras_predictor(ours, matrix), matrix).rmse:.4f}",
                               f"{svd_seconds:.1f}", f"{svd_rmse:.4f}", f"{ours_seconds / svd_seconds:.2f}"])
    table.notes.append("Fit times: our `train_model` call (building the Keras model, every epoch or ALS sweep and its "
                       "validation pass, XLA's compilation; numba's compiled ALS loaded from its disk cache); "
                       "Surprise's `fit` (building its trainset not counted). Epochs (kept): epochs or ALS sweeps run, "
                       "and the one whose weights were kept. Goal: the default ≤ 1.5× SVD at the tenth "
                       "(1.0× the aim).")
    return table


def run(context: BenchContext) -> list[Table]:
    return [time_to_model_part(context.sample, context.run_dir, context.work)]
