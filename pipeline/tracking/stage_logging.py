"""MLflow logging of the data stages and the evaluation: validation results, matrix sizes, test metrics and the ranking
chart."""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from mlflow import MlflowClient

from pipeline.evaluation.evaluate import EvaluationReport
from pipeline.matrix.utility_matrix import UtilityMatrix
from pipeline.metrics import RankingReport
from pipeline.monitoring.check import NewDataReport
from pipeline.registry.scores import ChampionScores
from pipeline.tracking.runs import ID_MAPS_DIR
from pipeline.validation.results import ValidatedData


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


def ranking_figure(reports: list[tuple[str, RankingReport]], relevant_rating: int) -> Figure:
    """P@10 and NDCG@10 of the served lists beside the rating model's and popularity's, on the test split."""
    figure = Figure(figsize=(7, 4))
    axis = figure.subplots()
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
    if report.ranking.served.n_users:
        figure = ranking_figure(report.ranking.labelled(), relevant_rating)
        client.log_figure(run_id, figure, "ranking.png")


def log_champion_scores(run_id: str, champion: ChampionScores) -> None:
    """The champion's scores when it was re-scored on this run's split (its registered ones are on its version)."""
    if champion.rescored and champion.scores is not None:
        client = MlflowClient()
        client.log_metric(run_id, "champion_test_rmse_rescored", champion.scores.rmse)
        if champion.scores.ndcg is not None:
            client.log_metric(run_id, "champion_ndcg_at_10_rescored", champion.scores.ndcg)


def log_new_data(run_id: str, report: NewDataReport) -> None:
    """The champion's scores on the new ratings, the drift table as metrics (`drift_<measure>`, tag
    `drift_detected`) and the Evidently report (`drift/report.html`, `drift/report.json`)."""
    client = MlflowClient()
    if report.skipped:
        client.set_tag(run_id, "new_data", report.skipped)
        return
    client.set_tag(run_id, "champion_data_version", report.champion_data_version)
    client.log_metric(run_id, "new_ratings", report.new_ratings)
    if report.champion_on_new is not None:
        client.log_metric(run_id, "champion_new_ratings_rmse", report.champion_on_new.rmse)
        if report.champion_on_new.ndcg is not None:
            client.log_metric(run_id, "champion_new_ratings_ndcg_at_10", report.champion_on_new.ndcg)
    if report.drift is not None:
        for measure in report.drift.measures:
            client.log_metric(run_id, f"drift_{measure.key}", measure.value)
        client.set_tag(run_id, "drift_detected", ", ".join(m.key for m in report.drift.drifted) or "none")
        with tempfile.TemporaryDirectory() as folder:
            report.drift.evidently.save_html(str(Path(folder) / "report.html"))
            (Path(folder) / "report.json").write_text(report.drift.evidently.json())
            client.log_artifacts(run_id, folder, "drift")
