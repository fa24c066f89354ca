"""The `retrain` flow: ingest → validate → utility matrix → check new data (the champion on it, drift) → train
(rating model) → train-ranking → log-model → evaluate → score champion (on this split) → register → archive inbox →
commit the app ratings' export → publish artifacts.

Thin wiring only: each task calls one `pipeline` stage (and logs what it produced to MLflow).
Run it with `make pipeline`, `animerec retrain --data DIR`, or on a schedule (`make serve`). On a Dask cluster
(`make pipeline DASK=local` or `DASK=tcp://host:8786`: `on_dask(retrain, settings)`), the validation batches run as
tasks on it; everything else stays in the flow's process.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.cluster import batches_as_tasks, on_cluster
from flows.notifications import announce_promotion
from pipeline.data.dataset_config import for_dataset
from pipeline.data.generate import generate_demo_dataset
from pipeline.data.ingest import RawData, archive_incoming, inbox_files, ingest
from pipeline.data.ratings_db.export import AppRatingsExport, commit_export, read_app_ratings
from pipeline.data.ratings_db.store import RatingsStore
from pipeline.errors import RegistryUnavailableError
from pipeline.evaluation.evaluate import SEEN_SPLITS, EvaluationReport, evaluate_model
from pipeline.matrix.utility_matrix import UtilityMatrix, build_utility_matrix
from pipeline.models.ranking.fit import RankingFit, train_ranking_model
from pipeline.monitoring.check import NewDataReport, check_new_data
from pipeline.monitoring.version_scoring import score_champion
from pipeline.registry.lineage import Lineage
from pipeline.registry.promotion import PromotionDecision
from pipeline.registry.registration import register_and_decide
from pipeline.registry.scores import ChampionScores
from pipeline.reports import (
    DataReport,
    RetrainSummary,
    TrainingOutcome,
    champion_on_new_line,
    decision_line,
    evaluation_line,
    ingest_lines,
    ranking_fit_line,
    retrain_artifacts,
)
from pipeline.serving.recommend import Recommender
from pipeline.settings import Settings
from pipeline.storage import exclusive_lock
from pipeline.tracking.model_logging import log_model_bundle, log_ranking_model, log_rating_model
from pipeline.tracking.runs import RetrainRun, ended, last_trained_data, log_decision, run_url, start_run
from pipeline.tracking.stage_logging import (
    log_champion_scores,
    log_evaluation,
    log_matrix,
    log_new_data,
    log_validation,
)
from pipeline.validation.results import ValidatedData
from pipeline.validation.validate import validate

if TYPE_CHECKING:  # Keras is imported by the train task: a run stopped before it, or a worker, never loads it
    from pipeline.models.rating.train import TrainedModel


@task(name="generate-demo-data", cache_policy=NO_CACHE)
def generate_demo_data_task(out_dir: Path) -> Path:
    return generate_demo_dataset(out_dir)


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_task(data_dir: Path, settings: Settings) -> RawData:
    """The data folder, its inbox and archive, and the web app's ratings of the data set (read in one snapshot)."""
    store = RatingsStore.existing(settings.ratings_db_url)
    app_ratings = None
    if store is not None:
        try:
            app_ratings = read_app_ratings(store, settings.dataset_name, settings.unrated_value)
        finally:
            store.close()
    raw = ingest(data_dir, settings.inbox_dir, settings.archive_dir, app_ratings)
    read, loose_warning = ingest_lines(raw, data_dir, inbox_files(settings.inbox_root), settings)
    get_run_logger().info(read)
    if app_ratings is not None:
        get_run_logger().info("app ratings: %s", app_ratings.describe())
    if loose_warning:
        get_run_logger().warning(loose_warning)
    return raw


def _log_validation(validated: ValidatedData) -> None:
    get_run_logger().info("Great Expectations:\n%s", validated.summary())
    if validated.scale.warning:
        get_run_logger().warning(validated.scale.warning)


@task(name="validate", cache_policy=NO_CACHE)
def validate_task(raw: RawData, settings: Settings) -> ValidatedData:
    validated = validate(raw, settings)
    _log_validation(validated)
    return validated


def validate_stage(raw: RawData, settings: Settings) -> ValidatedData:
    """The validate task in this process; on a Dask cluster, the suites' batches as `validate-batch` tasks on it,
    submitted from the flow."""
    if not on_cluster():
        return validate_task(raw, settings)
    validated = validate(raw, settings, batches_as_tasks(settings))
    _log_validation(validated)
    return validated


@task(name="build-utility-matrix", cache_policy=NO_CACHE)
def build_matrix_task(validated: ValidatedData, settings: Settings, source_sha256: dict[str, str],
                      run_id: str) -> UtilityMatrix:
    matrix = build_utility_matrix(validated, settings, source_sha256)
    log_matrix(run_id, matrix)
    get_run_logger().info("utility matrix %s at %s", matrix.data_version, matrix.path)
    return matrix


@task(name="check-new-data", cache_policy=NO_CACHE)
def check_new_data_task(run: RetrainRun) -> NewDataReport:
    """Before training: the data set's champion on the ratings it never saw, and the drift from its data."""
    report = check_new_data(run.matrix, run.settings)
    log_new_data(run.run_id, report)
    get_run_logger().info(champion_on_new_line(report))
    if report.drift is not None and report.drift.drifted:
        get_run_logger().warning("data drifted from champion v%s's: %s", report.champion_version, report.drift.passed())
    return report


@task(name="train", cache_policy=NO_CACHE)
def train_task(run: RetrainRun) -> TrainedModel:
    """The rating model (predicted ratings, judged by RMSE)."""
    from pipeline.models.rating.train import train_model
    from pipeline.tracking.epoch_logging import EpochLogger

    trained = train_model(run.matrix, run.settings.training, callbacks=[EpochLogger(run.run_id)],
                          log=get_run_logger().info)
    log_rating_model(run.run_id, trained, run.settings.training, run.matrix)
    return trained


@task(name="train-ranking", cache_policy=NO_CACHE)
def train_ranking_task(run: RetrainRun) -> RankingFit:
    """The ranking model (what to recommend, judged by NDCG@10), its λ chosen on validation."""
    settings = run.settings
    fit = train_ranking_model(run.matrix, settings.ranking, settings.unrated_value, settings.relevance_threshold)
    log_ranking_model(run.run_id, fit, settings.ranking)
    get_run_logger().info(ranking_fit_line(fit))
    return fit


@task(name="log-model", cache_policy=NO_CACHE)
def log_model_task(trained: TrainedModel, fit: RankingFit, run: RetrainRun) -> str:
    """Both models in one bundle, logged as the run's pyfunc model."""
    return log_model_bundle(run.run_id, trained, fit.model, run.matrix, run.settings.unrated_value,
                            run.settings.training.l2)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(trained: TrainedModel, fit: RankingFit, run: RetrainRun) -> EvaluationReport:
    """The served recommender, knowing what users had seen before the test split, judged on it."""
    settings = run.settings
    served = Recommender.from_matrix(trained.model, fit.model, run.matrix, settings.unrated_value, splits=SEEN_SPLITS)
    report = evaluate_model(served, run.matrix, settings.relevance_threshold)
    log_evaluation(run.run_id, report, settings.relevant_rating)
    get_run_logger().info(evaluation_line(report))
    return report


@task(name="score-champion", cache_policy=NO_CACHE)
def score_champion_task(run: RetrainRun) -> ChampionScores:
    """The data set's champion on this run's test split, for the registry to compare with."""
    settings = run.settings
    champion = score_champion(settings.registered_model_name, run.lineage.dataset, run.matrix,
                              settings.relevance_threshold)
    log_champion_scores(run.run_id, champion)
    return champion


@task(name="register", cache_policy=NO_CACHE)
def register_task(model_uri: str, report: EvaluationReport, champion: ChampionScores, new_data: NewDataReport,
                  run: RetrainRun) -> PromotionDecision:
    name = run.settings.registered_model_name
    decision = register_and_decide(name, model_uri, run.run_id, report, champion, run.matrix, run.lineage,
                                   architecture(run.settings), new_data.description())
    log_decision(run.run_id, decision)
    get_run_logger().info(decision_line(decision))
    announce_promotion(name, decision, run.lineage.dataset)
    return decision


@task(name="archive-inbox", cache_policy=NO_CACHE)
def archive_inbox_task(incoming: tuple[Path, ...], settings: Settings) -> list[Path]:
    moved = archive_incoming(incoming, settings.archive_dir)
    if moved:
        get_run_logger().info("archived %d inbox file(s): %s", len(moved), ", ".join(p.name for p in moved))
    return moved


@task(name="commit-app-export", cache_policy=NO_CACHE)
def commit_app_export_task(app_ratings: AppRatingsExport | None, run_id: str, settings: Settings) -> None:
    """The app's ratings up to the export's watermark are in this run's data: the next run counts only later ones
    as new. A run killed before here commits nothing, and the next counts them again."""
    if app_ratings is None:
        return
    store = RatingsStore.open(settings.ratings_db_url)
    try:
        commit_export(store, app_ratings, run_id)
    finally:
        store.close()
    get_run_logger().info("app ratings exported up to change %d (run %s)", app_ratings.watermark, run_id or "none")


@task(name="publish-artifacts", cache_policy=NO_CACHE)
def publish_artifacts_task(summary: RetrainSummary, model_name: str) -> None:
    """What a user reads in the Prefect UI without opening logs."""
    for artifact in retrain_artifacts(summary, model_name):
        if artifact.kind == "table":
            create_table_artifact(key=artifact.key, description=artifact.description, table=artifact.content)
        else:
            create_markdown_artifact(key=artifact.key, description=artifact.description, markdown=artifact.content)


def architecture(settings: Settings) -> str:
    """What the registered bundle holds, in a few words (a version tag)."""
    return f"{settings.training.method} ratings + EASE lists"


def _register_with_retries(model_uri: str, report: EvaluationReport, champion: ChampionScores,
                           new_data: NewDataReport, run: RetrainRun) -> PromotionDecision:
    """The register task with exponential backoff on store errors; aliases move only after evaluation,
    so however this ends, `champion` never points at a version that did not finish evaluation."""
    settings = run.settings
    delays = [settings.registry_retry_delay_seconds * 2**attempt for attempt in range(settings.registry_retries)]
    try:
        return register_task.with_options(retries=settings.registry_retries, retry_delay_seconds=delays)(
            model_uri, report, champion, new_data, run)
    except Exception as exc:
        raise RegistryUnavailableError(
            f"{settings.tracking_uri}: registering the model failed after {settings.registry_retries + 1} "
            f"attempts ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc


def _release_arrow_memory() -> None:
    """Between stages: Arrow's memory pool keeps what freed tables used for reuse (gigabytes after a full-scale
    split was read and dropped), which would stay resident under every later stage's peak."""
    pa.default_memory_pool().release_unused()


def _train_and_register(run: RetrainRun) -> TrainingOutcome:
    new_data = check_new_data_task(run)
    _release_arrow_memory()
    trained = train_task(run)
    _release_arrow_memory()
    ranking_fit = train_ranking_task(run)
    _release_arrow_memory()
    model_uri = log_model_task(trained, ranking_fit, run)
    _release_arrow_memory()
    report = evaluate_task(trained, ranking_fit, run)
    _release_arrow_memory()
    champion = score_champion_task(run)
    decision = _register_with_retries(model_uri, report, champion, new_data, run)
    return TrainingOutcome(run, trained, ranking_fit, report, decision, new_data)


@flow(name="retrain")
def retrain(data_dir: Path | None = None, skip_unchanged: bool = False, settings: Settings | None = None,
            rating_scale: str | None = None, dataset_name: str | None = None) -> RetrainSummary:
    """Retrain on a data folder or .zip (Kaggle CooperUnion or Kaggle 2020 layout; the built-in demo data when
    none is given) plus the rating files in its data set's inbox, and register the model. `rating_scale` ("1-5")
    and `dataset_name` override the data's dataset.toml and the settings; the data set is otherwise named after
    its folder. With skip_unchanged, data unchanged since the data set's last run end the run early."""
    settings = settings or Settings()
    with exclusive_lock(settings.lock_path, settings.lock_wait_seconds):
        data_dir = Path(data_dir) if data_dir else generate_demo_data_task(settings.demo_data_dir)
        settings, origins = for_dataset(settings, data_dir, rating_scale, dataset_name)
        raw = ingest_task(data_dir, settings)
        validated = validate_stage(raw, settings)
        data, incoming, app_ratings = DataReport.of(data_dir, raw, validated), raw.incoming, raw.app_ratings
        outcome = None
        if skip_unchanged and (data.data_version, settings.rating_scale) == last_trained_data(settings):
            get_run_logger().info("data version %s unchanged since the last trained run: not retraining",
                                  data.data_version)
        else:
            lineage = Lineage(settings.dataset_name, data.data_version, data_dir, raw.source_sha256)
            with ended(start_run(settings, lineage)) as run_id:
                log_validation(run_id, validated, settings.validation_engine)
                matrix = build_matrix_task(validated, settings, raw.source_sha256, run_id)
                del raw, validated  # the matrix folder holds what training needs: free the tables (GBs at scale)
                _release_arrow_memory()
                outcome = _train_and_register(RetrainRun(run_id, run_url(settings, run_id), settings, matrix,
                                                         lineage))
        archived = archive_inbox_task(incoming, settings)
        commit_app_export_task(app_ratings, outcome.run.run_id if outcome else "", settings)
    summary = RetrainSummary(data, settings, origins, archived, outcome)
    publish_artifacts_task(summary, settings.registered_model_name)
    return summary
