"""MLflow tracking at the edges of the stages: one run per retrain, resumed by each stage by id.

Stages stay free of MLflow; these functions log what a stage produced into the run. Logging by
explicit run id (not the thread-local "active run") keeps it correct whichever thread an
orchestrator runs a stage in.
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import keras
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.types import ColSpec, Schema
from pydantic import BaseModel

from pipeline.evaluate import EvaluationReport
from pipeline.matrix import UtilityMatrix
from pipeline.metrics import RankingReport
from pipeline.ranking import ItemToItemModel, RankingFit
from pipeline.registry import CHALLENGER, CHAMPION, Lineage
from pipeline.settings import RankingConfig, Settings, TrainingConfig
from pipeline.sweep import Objective, TrialResult
from pipeline.train import TrainedModel
from pipeline.validate import ValidatedData

MODEL_ARTIFACT = "model"
ID_MAPS_DIR = "id_maps"
RETRAIN_RUN_PREFIX = "retrain"


def configure_tracking(settings: Settings, experiment_name: str | None = None) -> str:
    """Point MLflow at the sqlite store under `mlruns/` and return the experiment id (the retrain
    experiment unless another is named)."""
    settings.mlruns_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    name = experiment_name or settings.experiment_name
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return mlflow.create_experiment(name, artifact_location=settings.artifact_root.as_uri())


def start_run(settings: Settings, lineage: Lineage) -> str:
    """A new retrain run, named after its data set and data version (`retrain anime-sample f2723402`), with the data
    logged as its input dataset (the runs page's Dataset column). Called under the run lock, so a retrain run still
    RUNNING is one whose process died (killed mid-training, say): it is marked KILLED rather than left running."""
    experiment_id = configure_tracking(settings)
    client = MlflowClient()
    for orphan in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING' and "
                                     f"tags.mlflow.runName LIKE '{RETRAIN_RUN_PREFIX} %'"):
        client.set_terminated(orphan.info.run_id, "KILLED")
    name = f"{RETRAIN_RUN_PREFIX} {lineage.dataset} {lineage.data_version[:8]}"
    run = client.create_run(experiment_id, run_name=name,
                            tags={"data_dir": str(lineage.location), "dataset": lineage.dataset,
                                  "data_version": lineage.data_version,
                                  **{f"sha256.{file}": digest for file, digest in lineage.source_sha256.items()}})
    log_dataset(run.info.run_id, lineage)
    return run.info.run_id


RATING_SCHEMA = Schema([ColSpec("long", "user_id"), ColSpec("long", "anime_id"), ColSpec("long", "rating")])


def log_dataset(run_id: str, lineage: Lineage) -> None:
    """The data set as the run's MLflow input: name, data version as digest, the folder as source, and the source
    files' sha256 as input tags."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():  # a local path matches two equivalent source kinds; MLflow picks one and warns
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(lineage.location.resolve()))
    dataset = MetaDataset(source, name=lineage.dataset, digest=lineage.data_version[:8], schema=RATING_SCHEMA)
    with resumed(run_id):
        mlflow.log_input(dataset, context="training", tags={
            "data_version": lineage.data_version,
            **{f"sha256.{name}": digest for name, digest in lineage.source_sha256.items()}})


def start_sweep_run(settings: Settings, data_dir: Path, space: dict[str, list], model: str) -> str:
    experiment_id = configure_tracking(settings, settings.sweep_experiment_name)
    run = MlflowClient().create_run(experiment_id, tags={"data_dir": str(data_dir), "swept_model": model,
                                                         "dataset": settings.dataset_name},
                                    run_name=f"sweep {model} {settings.dataset_name}")
    MlflowClient().log_text(run.info.run_id, json.dumps(space, indent=2), "sweep_space.json")
    return run.info.run_id


def config_params(config: BaseModel) -> dict[str, str]:
    """A configuration's fields as MLflow params, a Keras part as it reads: "CosineDecay(warmup_epochs=1)"."""
    return {name: str(getattr(config, name)) for name in type(config).model_fields}


def log_trial(parent_run_id: str, result: TrialResult, objective: Objective) -> str:
    """One nested run per trial: its whole configuration as params, its validation score as metrics."""
    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    name = " ".join(f"{key}={value}" for key, value in sorted(result.changed.items()))
    run_id = client.create_run(parent.info.experiment_id, run_name=name,
                               tags={"mlflow.parentRunId": parent_run_id}).info.run_id
    for key, value in config_params(result.config).items():
        client.log_param(run_id, key, value)
    for key, value in {objective.metric: result.validation_score, "fit_seconds": result.fit_seconds,
                       **result.details}.items():
        client.log_metric(run_id, key, float(value))
    client.set_terminated(run_id, "FINISHED")
    return run_id


def log_sweep_outcome(parent_run_id: str, best: TrialResult, objective: Objective, test_score: float,
                      table: str) -> None:
    client = MlflowClient()
    for key, value in config_params(best.config).items():
        client.log_param(parent_run_id, f"best_{key}", value)
    client.log_metric(parent_run_id, f"best_{objective.metric}", best.validation_score)
    client.log_metric(parent_run_id, f"best_{objective.metric.replace('validation', 'test')}", test_score)
    client.log_text(parent_run_id, table, "trials.txt")


def finish_run(run_id: str, succeeded: bool) -> None:
    MlflowClient().set_terminated(run_id, "FINISHED" if succeeded else "FAILED")


@contextmanager
def ended(run_id: str) -> Iterator[str]:
    """Yield `run_id`, then end that run: FINISHED if the block completed, FAILED if it raised."""
    succeeded = False
    try:
        yield run_id
        succeeded = True
    finally:
        finish_run(run_id, succeeded)


@contextmanager
def resumed(run_id: str) -> Iterator[None]:
    """Make `run_id` the active run in this thread (for MLflow APIs that take no run id)."""
    with mlflow.start_run(run_id=run_id):
        yield
    MlflowClient().update_run(run_id, status="RUNNING")


def log_validation(run_id: str, validated: ValidatedData, engine: str) -> None:
    """Row counts, the GX results and which engine evaluated the suites (param `validation_engine`)."""
    client = MlflowClient()
    client.log_param(run_id, "validation_engine", engine)
    for name, value in asdict(validated.counts).items():
        if isinstance(value, int):
            client.log_metric(run_id, f"rows_{name}", value)
    client.log_dict(run_id, validated.counts.per_source, "validation/counts_per_file.json")
    if validated.scale.warning:
        client.set_tag(run_id, "rating_scale_warning", validated.scale.warning)
    for report in validated.reports:
        client.log_dict(run_id, report.gx_result, f"validation/{report.suite}_gx_result.json")
    client.log_text(run_id, validated.summary(), "validation/summary.txt")


def log_matrix(run_id: str, matrix: UtilityMatrix) -> None:
    client = MlflowClient()
    client.set_tag(run_id, "data_version", matrix.data_version)
    client.set_tag(run_id, "split_id", matrix.split_id)
    for name, size in matrix.split_sizes.items():
        client.log_param(run_id, f"n_{name}", size)
    client.log_param(run_id, "n_users", matrix.n_users)
    client.log_param(run_id, "n_anime", matrix.n_anime)
    client.log_param(run_id, "rating_scale", f"{matrix.scale.minimum}-{matrix.scale.maximum}")
    client.log_artifact(run_id, str(matrix.user_index_path), ID_MAPS_DIR)
    client.log_artifact(run_id, str(matrix.anime_index_path), ID_MAPS_DIR)
    client.log_artifact(run_id, str(matrix.metadata_path), "data")


class EpochLogger(keras.callbacks.Callback):
    """Logs every epoch metric (loss, val_loss, rmse, val_rmse, ratings_per_s) to the run as it happens."""

    def __init__(self, run_id: str):
        super().__init__()
        self.run_id = run_id
        self.client = MlflowClient()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(name, float(value), now, epoch + 1)
                                                    for name, value in (logs or {}).items()])


def learning_curves_figure(history: dict[str, list[float]], best_epoch: int, step_name: str) -> plt.Figure:
    """Train and validation RMSE per epoch (ALS: per sweep) with the kept one marked; below, the learning rate (Keras)
    or the L2 (ALS) each ran with."""
    figure, (axis, below) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True, height_ratios=(3, 1))
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


def model_pip_requirements() -> list[str]:
    import pandas
    import pyarrow
    import tensorflow as tf

    return [f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}", f"numpy=={np.__version__}",
            f"pandas=={pandas.__version__}", f"pyarrow=={pyarrow.__version__}", f"mlflow=={mlflow.__version__}"]


def log_rating_model(run_id: str, trained: TrainedModel, config: TrainingConfig, matrix: UtilityMatrix) -> None:
    """The rating model's params (its optimizer, initializer and learning-rate function among them), epochs and
    learning curves."""
    client = MlflowClient()
    for name, value in config_params(config).items():
        client.log_param(run_id, name, value)
    client.log_param(run_id, "trainer", config.method)
    client.log_param(run_id, "train_mean_rating", round(matrix.train_mean_rating, 6))
    client.log_metric(run_id, "epochs_run", trained.epochs_run)
    client.log_metric(run_id, "best_epoch", trained.best_epoch)
    figure = learning_curves_figure(trained.history, trained.best_epoch, config.step_name)
    client.log_figure(run_id, figure, "learning_curves.png")
    plt.close(figure)


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


def log_model_bundle(run_id: str, model: keras.Model, ranking: ItemToItemModel, matrix: UtilityMatrix,
                     unrated_value: int, l2: float) -> str:
    """Both models, id maps, anime metadata and known pairs as one pyfunc model; return its URI."""
    from pipeline.serving import BUNDLE, SIGNATURE, RecommenderModel, save_bundle

    with tempfile.TemporaryDirectory(prefix="bundle-") as tmp, resumed(run_id):
        bundle = save_bundle(model, ranking, matrix, unrated_value, l2, Path(tmp) / BUNDLE)
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT, python_model=RecommenderModel(), artifacts={BUNDLE: str(bundle)},
            signature=SIGNATURE, pip_requirements=model_pip_requirements(),
            input_example=pd.DataFrame({"user_id": [int(matrix.user_ids()[0])]}),
            code_paths=[str(Path(__file__).resolve().parent)])
    return info.model_uri


def ranking_figure(reports: list[tuple[str, RankingReport]], relevant_rating: int) -> plt.Figure:
    """P@10 and NDCG@10 of the served lists beside the rating model's and popularity's, on the test split."""
    figure, axis = plt.subplots(figsize=(7, 4))
    positions = np.arange(len(reports))
    for offset, (metric, label) in zip((-0.2, 0.2), (("precision", "P@10"), ("ndcg", "NDCG@10")), strict=True):
        values = [getattr(report, metric) for _, report in reports]
        bars = axis.bar(positions + offset, values, width=0.4, label=label)
        axis.bar_label(bars, fmt="%.3f", fontsize=8)
    axis.set_xticks(positions, [label for label, _ in reports])
    axis.set(ylabel="on the test split (higher is better)", ylim=(0, 1.25 * max(
        max(report.precision, report.ndcg) for _, report in reports) + 1e-3),
             title=f"Top-10 lists of {reports[0][1].n_users:,} test users (relevant: rating >= {relevant_rating})")
    axis.legend()
    figure.tight_layout()
    return figure


def log_evaluation(run_id: str, report: EvaluationReport, relevant_rating: int) -> None:
    """The test metrics, and the ranking chart when top-10 lists were measured."""
    client = MlflowClient()
    for name, value in report.as_metrics().items():
        client.log_metric(run_id, name, value)
    if report.ranking is not None and report.ranking.served.n_users:
        figure = ranking_figure(report.ranking.labelled(), relevant_rating)
        client.log_figure(run_id, figure, "ranking.png")
        plt.close(figure)


def log_decision(run_id: str, decision: dict) -> None:
    client = MlflowClient()
    client.set_tag(run_id, "promotion", CHAMPION if decision["promoted"] else CHALLENGER)
    client.set_tag(run_id, "promotion_reason", decision["reason"])
    client.log_text(run_id, json.dumps(decision, indent=2), "promotion.json")


def last_trained_data(settings: Settings) -> tuple[str, str] | None:
    """(data version, rating scale) of the newest finished retrain run on this data set (None if there is none yet):
    the same data read on another scale is new data."""
    experiment_id = configure_tracking(settings)
    runs = MlflowClient().search_runs([experiment_id], filter_string="attributes.status = 'FINISHED' and "
                                      f"tags.dataset = '{settings.dataset_name}' and tags.data_version != ''",
                                      order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return None
    return runs[0].data.tags["data_version"], runs[0].data.params.get("rating_scale", "1-10")


def run_url(settings: Settings, run_id: str) -> str:
    experiment_id = MlflowClient().get_run(run_id).info.experiment_id
    return f"{settings.mlflow_ui_url}/#/experiments/{experiment_id}/runs/{run_id}"


def registry_chart_name(model_name: str) -> str:
    """The file name of `make compare`'s chart of one registered model."""
    return f"{model_name}-versions.png"


def log_registry_chart(settings: Settings, figure: plt.Figure) -> str:
    """Keep the latest chart of the registered model's versions in one standing run of the experiment (a file per
    registered model); return the run's id."""
    experiment_id = configure_tracking(settings)
    client = MlflowClient()
    runs = client.search_runs([experiment_id], filter_string="tags.purpose = 'registry-comparison'", max_results=1)
    run_id = runs[0].info.run_id if runs else client.create_run(
        experiment_id, run_name="registry-comparison", tags={"purpose": "registry-comparison"}).info.run_id
    client.log_figure(run_id, figure, registry_chart_name(settings.registered_model_name))
    client.set_terminated(run_id, "FINISHED")
    return run_id
