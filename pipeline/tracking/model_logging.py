"""MLflow logging of the trained models: the rating model's params and learning curves (per-epoch metrics:
epoch_logging.py), the ranking model's λ walk, and the served bundle as the run's pyfunc model."""

from __future__ import annotations

import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from mlflow import MlflowClient

import pipeline
from pipeline.matrix.utility_matrix import UtilityMatrix
from pipeline.models.ranking.ease import ItemToItemModel
from pipeline.models.ranking.fit import RankingFit
from pipeline.settings import RankingConfig, TrainingConfig
from pipeline.tracking.runs import config_params, resumed

if TYPE_CHECKING:  # the flow module imports this one without Keras (a run imports it for training only)
    from pipeline.models.rating.train import TrainedModel

MODEL_ARTIFACT = "model"


def learning_curves_figure(history: dict[str, list[float]], best_epoch: int, step_name: str) -> Figure:
    """Train and validation RMSE per epoch (ALS: per sweep) with the kept one marked; below, the learning rate (Keras)
    or the L2 (ALS) each ran with."""
    figure = Figure(figsize=(7, 5.5))
    axis, below = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    epochs = np.arange(1, len(history["loss"]) + 1)
    axis.plot(epochs, history["rmse"], marker="o", label="train RMSE")
    axis.plot(epochs, history["val_rmse"], marker="o", label="validation RMSE")
    axis.axvline(best_epoch, color="grey", linestyle="--", label=f"kept: {step_name} {best_epoch}")
    axis.set(ylabel="RMSE on the [0, 1] scale", title="Learning curves")
    axis.legend()
    knob = "learning_rate" if "learning_rate" in history else "l2"
    below.plot(epochs, history.get(knob, [np.nan] * len(epochs)), marker=".", color="tab:green")
    below.set(xlabel=step_name, ylabel=knob.replace("_", " "), yscale="log")
    figure.tight_layout()
    return figure


SERVING_PACKAGES = ("numpy", "pandas", "pyarrow", "scipy", "numba", "mlflow")


def model_pip_requirements() -> list[str]:
    """What serving the bundle needs: its arrays, no TensorFlow. MLflow imports each listed package when it loads a
    model (to compare versions), so listing TensorFlow would load it into every server and command."""
    return [f"{package}=={version(package)}" for package in SERVING_PACKAGES]


def log_rating_model(run_id: str, trained: TrainedModel, config: TrainingConfig, matrix: UtilityMatrix) -> None:
    """The rating model's params (its optimizer, initializer and learning-rate function among them), epochs and
    learning curves."""
    client = MlflowClient()
    for name, value in config_params(config).items():
        client.log_param(run_id, name, value)
    client.log_param(run_id, "trainer", config.method)
    client.log_param(run_id, "training_device", trained.device)
    client.log_param(run_id, "train_mean_rating", round(matrix.train_mean_rating, 6))
    client.log_metric(run_id, "epochs_run", trained.epochs_run)
    client.log_metric(run_id, "best_epoch", trained.best_epoch)
    if trained.features is not None:  # what the feature tower read, and what it answers for alone
        client.log_param(run_id, "anime_features", trained.features.summary())
        client.log_metric(run_id, "anime_from_features_only", len(trained.features.not_in(matrix.anime_map)[0]))
        client.log_text(run_id, "\n".join(trained.features.names), "anime_features.txt")
    figure = learning_curves_figure(trained.history, trained.best_epoch, config.step_name)
    client.log_figure(run_id, figure, "learning_curves.png")


def log_ranking_model(run_id: str, fit: RankingFit, config: RankingConfig) -> None:
    """The ranking model's settings (prefixed `ranking_`), each relative λ tried with its validation NDCG@10
    (as steps of `ranking_relative_l2_tried` / `ranking_validation_ndcg_at_10`), the λ chosen and fitted, and
    the fit time."""
    client = MlflowClient()
    for name, value in config.model_dump().items():
        client.log_param(run_id, f"ranking_{name}", value)
    client.log_param(run_id, "ranking_relative_l2_chosen", fit.chosen.relative_l2)
    client.log_param(run_id, "ranking_l2_fitted", fit.model.l2)
    for step, trial in enumerate(fit.trials, 1):
        client.log_metric(run_id, "ranking_relative_l2_tried", trial.relative_l2, step=step)
        client.log_metric(run_id, "ranking_validation_ndcg_at_10", trial.validation.ndcg, step=step)
    client.log_metric(run_id, "ranking_validation_ndcg_at_10_chosen", fit.chosen.validation.ndcg)
    client.log_metric(run_id, "ranking_fit_seconds", fit.fit_seconds)
    client.log_metric(run_id, "ranking_weights_kept", fit.model.weights.nnz)


def log_model_bundle(run_id: str, trained: TrainedModel, ranking: ItemToItemModel, matrix: UtilityMatrix,
                     unrated_value: int, l2: float) -> str:
    """Both models, id maps, anime metadata and known pairs as one pyfunc model; return its URI."""
    from pipeline.serving.bundle import BUNDLE, SIGNATURE, RecommenderModel, save_bundle

    with tempfile.TemporaryDirectory(prefix="bundle-") as tmp, resumed(run_id):
        bundle = save_bundle(trained.model, ranking, matrix, unrated_value, l2, Path(tmp) / BUNDLE,
                             trained.features)
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT, python_model=RecommenderModel(), artifacts={BUNDLE: str(bundle)},
            signature=SIGNATURE, pip_requirements=model_pip_requirements(),
            input_example=pd.DataFrame({"user_id": [int(matrix.user_ids()[0])]}),
            code_paths=[str(Path(pipeline.__file__).resolve().parent)])  # the whole library, as imported
    return info.model_uri
