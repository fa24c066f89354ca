"""The `retrain` flow: ingest → validate → utility matrix → train (rating model) → train-ranking → log-model →
evaluate → register → archive inbox.

Thin wiring only: each task calls one `pipeline` stage (and logs what it produced to MLflow).
Run it with `make pipeline`, `python -m flows.retrain --data DIR`, or on a schedule (`make serve`).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows import quiet_expected_errors
from pipeline import tracking
from pipeline.errors import PipelineInputError, RegistryUnavailableError
from pipeline.evaluate import EvaluationReport, evaluate_model
from pipeline.generate import generate_demo_dataset
from pipeline.ingest import RawData, archive_incoming, inbox_files, ingest
from pipeline.matrix import UtilityMatrix, build_utility_matrix
from pipeline.ranking import RankingFit, train_ranking_model
from pipeline.registry import Lineage, PromotionDecision, register_and_decide
from pipeline.settings import Settings, for_dataset
from pipeline.storage import LockBusyError, exclusive_lock
from pipeline.train import TrainedModel, train_model
from pipeline.validate import ValidatedData, ValidationCounts, validate


@dataclass(frozen=True)
class TrainingOutcome:
    mlflow_run_id: str
    mlflow_run_url: str
    matrix: UtilityMatrix
    architecture: str
    epochs_run: int
    best_epoch: int
    ranking_fit: RankingFit
    evaluation: EvaluationReport
    decision: PromotionDecision


@dataclass(frozen=True)
class RetrainSummary:
    data_dir: Path
    data_version: str
    counts: ValidationCounts
    validation_summary: str
    archived: list[Path]
    outcome: TrainingOutcome | None  # None when the data were unchanged and training was skipped
    dataset: str = "demo"  # the data set (lineage) the run belongs to
    dataset_origin: str = "folder name"  # --dataset-name, a dataset.toml path, settings or folder name
    layout: str = "Kaggle CooperUnion"
    rating_scale: str = "1-10"
    scale_origin: str = "default"  # RATING_SCALE, a dataset.toml path, settings or default
    relevant_rating: int = 8
    scale_warning: str | None = None

    def count_rows(self) -> list[tuple[str, int]]:
        c = self.counts
        return [("rows in", c.rows_in), ("accepted", c.accepted), ("unrated", c.unrated),
                ("quarantined", c.quarantined), ("superseded", c.superseded)]

    def format(self, model_name: str) -> str:
        c = self.counts
        lines = [f"  data set          {self.dataset} ({self.dataset_origin})",
                 f"  data              {self.data_dir}" + (f" + {len(self.archived)} inbox file(s), now archived"
                                                          if self.archived else "") + f" ({self.layout} layout)",
                 f"  rating scale      {self.rating_scale} ({self.scale_origin}); relevant for top-10: "
                 f"rating >= {self.relevant_rating}",
                 f"  data version      {self.data_version}"]
        if self.scale_warning:
            lines.append(f"  warning           {self.scale_warning}")
        lines += [f"  {'  ' * (i > 0)}{label:<{16 - 2 * (i > 0)}}{value:>10,}"
                  for i, (label, value) in enumerate(self.count_rows()) if i < 4 or value]
        if len(c.per_source) > 1:
            lines += ["  per file (superseded: the same pair in a later file)"]
            lines += [f"    {name:<24}{n['rows_in']:>10,} in = {n['accepted']:,} accepted + {n['unrated']:,} "
                      f"unrated + {n['quarantined']:,} quarantined + {n['superseded']:,} superseded"
                      for name, n in c.per_source.items()]
        if set(c.unrated_by_status) - {"watched"}:
            lines.append("  unrated, status  " + ", ".join(f"{status} {n:,}" for status, n in
                                                             c.unrated_by_status.items()))
        lines.append(f"  anime.csv         {c.anime_rows_in:,} rows, {c.anime_quarantined:,} quarantined; "
                     f"{c.ratings_without_metadata:,} ratings of anime missing from anime.csv (kept)")
        if self.outcome is None:
            return "\n".join(["Retrain skipped: data unchanged since the last trained run", *lines])
        o, e, d = self.outcome, self.outcome.evaluation, self.outcome.decision
        sizes = o.matrix.split_sizes
        chosen = o.ranking_fit.chosen
        walk = (f"tried {', '.join(f'{t.relative_l2:g}' for t in o.ranking_fit.trials)}: best validation NDCG@10 "
                f"{chosen.validation.ndcg:.4f}" if chosen.validation.n_users else
                f"not walked: no validation rating >= {self.relevant_rating}")
        compared = (f"\n  champion v{d.champion_version}  of another data set: not compared" if not d.same_dataset
                    else "" if d.champion is None else
                    f"\n  champion v{d.champion_version}  RMSE {d.champion.rmse:.4f}"
                    + ("" if d.champion.ndcg is None else f", NDCG@10 {d.champion.ndcg:.4f}") + " on this test split"
                    f"{' (re-scored: data or split changed)' if d.champion_rescored else ''}")
        return "\n".join([
            f"Retrain finished (MLflow run {o.mlflow_run_id})", *lines,
            f"  matrix            {o.matrix.n_users:,} users x {o.matrix.n_anime:,} anime; "
            f"train {sizes['train']:,} / validation {sizes['validation']:,} / test {sizes['test']:,}",
            f"  rating model      {o.architecture}: {o.epochs_run} epochs run, weights of epoch {o.best_epoch} kept",
            f"  ranking model     EASE, lambda {o.ranking_fit.model.l2:.4g} ({chosen.relative_l2:g} x mean "
            f"interactions per anime; {walk}), {o.ranking_fit.fit_seconds:.1f} s",
            f"  {f'test scores ({self.rating_scale} scale)':<29}RMSE     MAE",
            f"    rating model             {e.model.rmse:.4f}  {e.model.mae:.4f}",
            f"    user+item bias baseline  {e.bias.rmse:.4f}  {e.bias.mae:.4f}",
            f"    global mean baseline     {e.global_mean.rmse:.4f}  {e.global_mean.mae:.4f}",
            *self._ranking_lines(e),
            f"  registered        {model_name} version {d.version}{compared}",
            f"  decision          {'promoted to champion' if d.promoted else 'kept as challenger'}: {d.reason}",
        ])

    def _ranking_lines(self, e: EvaluationReport) -> list[str]:
        if e.ranking is None:
            return []
        if not e.ranking.served.n_users:
            return [f"  top-10 on test    not measured: no test rating >= {self.relevant_rating} (the top of the "
                    f"{self.rating_scale} scale); is the scale right?"]
        return [f"  top-10 on test ({e.ranking.served.n_users:,} users)  P@10    R@10    NDCG@10  coverage  "
                "personalization",
                *(f"    {label:<27}{r.precision:.4f}  {r.recall:.4f}  {r.ndcg:.4f}   {r.coverage:.4f}    "
                  f"{r.personalization:.4f}" for label, r in e.ranking.labelled())]


@task(name="generate-demo-data", cache_policy=NO_CACHE)
def generate_demo_data_task(out_dir: Path) -> Path:
    return generate_demo_dataset(out_dir)


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_task(data_dir: Path, settings: Settings) -> RawData:
    raw = ingest(data_dir, settings.inbox_dir, settings.archive_dir)
    loose = inbox_files(settings.inbox_root)
    if loose:
        get_run_logger().warning("not merged: %s in %s belong%s to no data set; move %s to %s to merge %s into "
                                 "data set %s", ", ".join(p.name for p in loose), settings.inbox_root,
                                 "s" if len(loose) == 1 else "", "it" if len(loose) == 1 else "them",
                                 settings.inbox_dir, "it" if len(loose) == 1 else "them", settings.dataset_name)
    get_run_logger().info("read %s: %s rating rows from %s, %s anime rows", data_dir, f"{raw.rows_in:,}",
                          ", ".join(raw.sources), f"{raw.anime.num_rows:,}")
    return raw


@task(name="validate", cache_policy=NO_CACHE)
def validate_task(raw: RawData, settings: Settings) -> ValidatedData:
    validated = validate(raw, settings)
    get_run_logger().info("Great Expectations:\n%s", validated.summary())
    if validated.scale.warning:
        get_run_logger().warning(validated.scale.warning)
    return validated


@task(name="build-utility-matrix", cache_policy=NO_CACHE)
def build_matrix_task(validated: ValidatedData, settings: Settings, source_sha256: dict[str, str],
                      run_id: str) -> UtilityMatrix:
    matrix = build_utility_matrix(validated, settings, source_sha256)
    tracking.log_matrix(run_id, matrix)
    get_run_logger().info("utility matrix %s at %s", matrix.data_version, matrix.path)
    return matrix


@task(name="train", cache_policy=NO_CACHE)
def train_task(matrix: UtilityMatrix, settings: Settings, run_id: str) -> TrainedModel:
    """The rating model (predicted ratings, judged by RMSE)."""
    trained = train_model(matrix, settings.training, callbacks=[tracking.EpochLogger(run_id)], verbose=2)
    tracking.log_rating_model(run_id, trained, settings.training, matrix)
    return trained


@task(name="train-ranking", cache_policy=NO_CACHE)
def train_ranking_task(matrix: UtilityMatrix, settings: Settings, run_id: str) -> RankingFit:
    """The ranking model (what to recommend, judged by NDCG@10), its λ chosen on validation."""
    fit = train_ranking_model(matrix, settings.ranking, settings.unrated_value, settings.relevance_threshold)
    tracking.log_ranking_model(run_id, fit, settings.ranking)
    judged = (f"chosen on validation (NDCG@10 {fit.chosen.validation.ndcg:.4f})" if fit.chosen.validation.n_users
              else "not walked (no relevant validation rating)")
    get_run_logger().info("ranking model: lambda %.4g (%g x mean interactions per anime) %s in %.1f s", fit.model.l2,
                          fit.chosen.relative_l2, judged, fit.fit_seconds)
    return fit


@task(name="log-model", cache_policy=NO_CACHE)
def log_model_task(trained: TrainedModel, fit: RankingFit, matrix: UtilityMatrix, settings: Settings,
                   run_id: str) -> str:
    """Both models in one bundle, logged as the run's pyfunc model."""
    return tracking.log_model_bundle(run_id, trained.model, fit.model, matrix, settings.unrated_value)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(trained: TrainedModel, fit: RankingFit, matrix: UtilityMatrix, settings: Settings,
                  run_id: str) -> EvaluationReport:
    report = evaluate_model(trained.model, fit.model, matrix, settings.unrated_value, settings.relevance_threshold)
    tracking.log_evaluation(run_id, report, settings.relevant_rating)
    lists = report.ranking
    ndcg = (f"NDCG@10 {lists.served.ndcg:.4f} (rating model alone {lists.rating_model.ndcg:.4f}, popularity "
            f"{lists.popularity.ndcg:.4f})" if lists.served.n_users else "top-10 not measured (no relevant rating)")
    get_run_logger().info("test RMSE %.4f (bias baseline %.4f, global mean %.4f); %s", report.model.rmse,
                          report.bias.rmse, report.global_mean.rmse, ndcg)
    return report


@task(name="register", cache_policy=NO_CACHE)
def register_task(model_uri: str, run_id: str, report: EvaluationReport, matrix: UtilityMatrix, lineage: Lineage,
                  settings: Settings) -> PromotionDecision:
    decision = register_and_decide(settings.registered_model_name, model_uri, run_id, report, matrix,
                                   settings.relevance_threshold, lineage, architecture(settings))
    tracking.log_decision(run_id, decision.as_dict())
    get_run_logger().info("version %s: %s", decision.version,
                          f"champion ({decision.reason})" if decision.promoted else f"challenger ({decision.reason})")
    return decision


@task(name="archive-inbox", cache_policy=NO_CACHE)
def archive_inbox_task(raw: RawData, settings: Settings) -> list[Path]:
    moved = archive_incoming(raw.incoming, settings.archive_dir)
    if moved:
        get_run_logger().info("archived %d inbox file(s): %s", len(moved), ", ".join(p.name for p in moved))
    return moved


@task(name="publish-artifacts", cache_policy=NO_CACHE)
def publish_artifacts_task(summary: RetrainSummary, model_name: str) -> None:
    """What a user reads in the Prefect UI without opening logs."""
    create_table_artifact(key="retrain-row-counts", description="Rows read and where they went",
                          table=[{"rows": label, "count": value} for label, value in summary.count_rows()])
    create_table_artifact(key="retrain-row-counts-per-file", description="Rows per file (superseded: the same pair "
                          "in a later file); in = accepted + unrated + quarantined + superseded",
                          table=[{"file": name, **counts} for name, counts in summary.counts.per_source.items()])
    create_markdown_artifact(key="retrain-validation", description="Great Expectations summary",
                             markdown=f"```\n{summary.validation_summary}\n```")
    if summary.outcome is None:
        create_markdown_artifact(key="retrain-decision", description="Promotion decision", markdown=(
            f"Skipped: data version `{summary.data_version}` is unchanged since the last trained run."))
        return
    o, e, d = summary.outcome, summary.outcome.evaluation, summary.outcome.decision
    create_table_artifact(key="retrain-scores", description=f"Test RMSE/MAE ({summary.rating_scale} scale)", table=[
        {"model": "rating model", "rmse": round(e.model.rmse, 4), "mae": round(e.model.mae, 4)},
        {"model": "user+item bias baseline", "rmse": round(e.bias.rmse, 4), "mae": round(e.bias.mae, 4)},
        {"model": "global mean baseline", "rmse": round(e.global_mean.rmse, 4), "mae": round(e.global_mean.mae, 4)},
    ])
    if e.ranking.served.n_users:
        create_table_artifact(key="retrain-ranking", description="Top-10 on the test split", table=[
            {"model": label, **{key: round(value, 4) for key, value in report.as_metrics("").items()}}
            for label, report in e.ranking.labelled()])
    else:
        create_markdown_artifact(key="retrain-ranking", description="Top-10 on the test split", markdown=(
            f"Not measured: no test rating >= {summary.relevant_rating} on the {summary.rating_scale} scale."))
    create_markdown_artifact(key="retrain-decision", description="Promotion decision", markdown=(
        f"**{model_name} version {d.version}: {'promoted to champion' if d.promoted else 'kept as challenger'}**"
        f"\n\n{d.reason}\n\nMLflow run: [{o.mlflow_run_id}]({o.mlflow_run_url})"))


def architecture(settings: Settings) -> str:
    """What the registered bundle holds, in a few words (a version tag)."""
    return f"{settings.training.architecture} ratings + EASE lists"


def _register_with_retries(model_uri: str, run_id: str, report: EvaluationReport, matrix: UtilityMatrix,
                           lineage: Lineage, settings: Settings) -> PromotionDecision:
    """The register task with exponential backoff on store errors; aliases move only after evaluation,
    so however this ends, `champion` never points at a version that did not finish evaluation."""
    delays = [settings.registry_retry_delay_seconds * 2**attempt for attempt in range(settings.registry_retries)]
    try:
        return register_task.with_options(retries=settings.registry_retries, retry_delay_seconds=delays)(
            model_uri, run_id, report, matrix, lineage, settings)
    except Exception as exc:
        raise RegistryUnavailableError(
            f"{settings.tracking_uri}: registering the model failed after {settings.registry_retries + 1} "
            f"attempts ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc


def _train_and_register(raw: RawData, validated: ValidatedData, lineage: Lineage, settings: Settings
                        ) -> TrainingOutcome:
    run_id = tracking.start_run(settings, lineage)
    succeeded = False
    try:
        tracking.log_validation(run_id, validated, raw.source_sha256)
        matrix = build_matrix_task(validated, settings, raw.source_sha256, run_id)
        trained = train_task(matrix, settings, run_id)
        ranking_fit = train_ranking_task(matrix, settings, run_id)
        model_uri = log_model_task(trained, ranking_fit, matrix, settings, run_id)
        report = evaluate_task(trained, ranking_fit, matrix, settings, run_id)
        decision = _register_with_retries(model_uri, run_id, report, matrix, lineage, settings)
        succeeded = True
    finally:
        tracking.finish_run(run_id, succeeded)
    return TrainingOutcome(run_id, tracking.run_url(settings, run_id), matrix, settings.training.architecture,
                           trained.epochs_run, trained.best_epoch, ranking_fit, report, decision)


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
        validated = validate_task(raw, settings)
        data_version = validated.data_version
        outcome = None
        if skip_unchanged and (data_version, settings.rating_scale) == tracking.last_trained_data(settings):
            get_run_logger().info("data version %s unchanged since the last trained run: not retraining", data_version)
        else:
            lineage = Lineage(settings.dataset_name, data_version, data_dir, raw.source_sha256)
            outcome = _train_and_register(raw, validated, lineage, settings)
        archived = archive_inbox_task(raw, settings)
    summary = RetrainSummary(data_dir, data_version, validated.counts, validated.summary(), archived, outcome,
                             settings.dataset_name, origins.name, raw.layout.name, settings.rating_scale,
                             origins.rating_scale, settings.relevant_rating, validated.scale.warning)
    publish_artifacts_task(summary, settings.registered_model_name)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.retrain", description=retrain.__doc__)
    parser.add_argument("--data", type=Path, help="folder or .zip with rating.csv and anime.csv, or the Kaggle 2020 "
                        "files (default: demo data)")
    parser.add_argument("--rating-scale", help="the data's rating scale, MIN-MAX (e.g. 1-5; default: dataset.toml "
                        "beside the data, else 1-10)")
    parser.add_argument("--dataset-name", help="the data set's name: versions are compared only within one, each "
                        "has its own inbox (default: dataset.toml's name, else the folder's name)")
    parser.add_argument("--epochs", type=int, help="maximum training epochs (early stopping may end sooner)")
    parser.add_argument("--skip-unchanged", action="store_true", help="do not retrain if the data are unchanged")
    args = parser.parse_args(argv)
    quiet_expected_errors(PipelineInputError, LockBusyError, RegistryUnavailableError)
    settings = Settings()
    if args.epochs:
        settings.training.epochs = args.epochs
    try:
        summary = retrain(data_dir=args.data, skip_unchanged=args.skip_unchanged, settings=settings,
                          rating_scale=args.rating_scale, dataset_name=args.dataset_name)
    except (PipelineInputError, LockBusyError, RegistryUnavailableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary.format(settings.registered_model_name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
