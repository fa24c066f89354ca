"""The `retrain` flow: ingest → validate → utility matrix → train → evaluate → register.

Thin wiring only: each task calls one `pipeline` stage (and logs what it produced to MLflow).
Run it with `make pipeline` or `python -m flows.retrain --data DIR`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipeline import tracking
from pipeline.errors import PipelineInputError
from pipeline.evaluate import EvaluationReport, evaluate_model
from pipeline.generate import generate_demo_dataset
from pipeline.ingest import RawData, ingest
from pipeline.matrix import UtilityMatrix, build_utility_matrix
from pipeline.registry import PromotionDecision, register_and_decide
from pipeline.settings import Settings
from pipeline.train import TrainedModel, train_model
from pipeline.validate import ValidatedData, ValidationCounts, validate


@dataclass(frozen=True)
class RetrainSummary:
    data_dir: Path
    mlflow_run_id: str
    counts: ValidationCounts
    matrix: UtilityMatrix
    epochs_run: int
    best_epoch: int
    evaluation: EvaluationReport
    decision: PromotionDecision

    def format(self, model_name: str) -> str:
        c, e, d, sizes = self.counts, self.evaluation, self.decision, self.matrix.split_sizes
        compared = ("" if d.champion_version is None else
                    f"\n  champion v{d.champion_version}  RMSE {d.champion_rmse:.4f} on this test split"
                    f"{' (re-scored: data changed)' if d.champion_rescored else ''}")
        return "\n".join([
            f"Retrain finished (MLflow run {self.mlflow_run_id})",
            f"  data              {self.data_dir}",
            f"  data version      {self.matrix.data_version}",
            f"  rows in           {c.rows_in:>10,}",
            f"    accepted        {c.accepted:>10,}",
            f"    unrated (-1)    {c.unrated:>10,}",
            f"    quarantined     {c.quarantined:>10,}",
            f"  anime.csv         {c.anime_rows_in:,} rows, {c.anime_quarantined:,} quarantined; "
            f"{c.ratings_without_metadata:,} ratings of anime missing from anime.csv (kept)",
            f"  matrix            {self.matrix.n_users:,} users x {self.matrix.n_anime:,} anime; "
            f"train {sizes['train']:,} / validation {sizes['validation']:,} / test {sizes['test']:,}",
            f"  training          {self.epochs_run} epochs run, weights of epoch {self.best_epoch} kept",
            "  test scores (1-10 scale)     RMSE     MAE",
            f"    seed model               {e.model.rmse:.4f}  {e.model.mae:.4f}",
            f"    user+item bias baseline  {e.bias.rmse:.4f}  {e.bias.mae:.4f}",
            f"    global mean baseline     {e.global_mean.rmse:.4f}  {e.global_mean.mae:.4f}",
            f"  registered        {model_name} version {d.version}{compared}",
            f"  decision          {'promoted to champion' if d.promoted else 'kept as challenger'}: {d.reason}",
        ])


@task(name="generate-demo-data", cache_policy=NO_CACHE)
def generate_demo_data_task(out_dir: Path) -> Path:
    return generate_demo_dataset(out_dir)


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_task(data_dir: Path) -> RawData:
    raw = ingest(data_dir)
    get_run_logger().info("read %s: %s rating rows, %s anime rows", data_dir, f"{raw.rows_in:,}",
                          f"{raw.anime.num_rows:,}")
    return raw


@task(name="validate", cache_policy=NO_CACHE)
def validate_task(raw: RawData, settings: Settings, run_id: str) -> ValidatedData:
    validated = validate(raw, settings)
    tracking.log_validation(run_id, validated, raw.source_sha256)
    get_run_logger().info("Great Expectations:\n%s", validated.summary())
    return validated


@task(name="build-utility-matrix", cache_policy=NO_CACHE)
def build_matrix_task(validated: ValidatedData, settings: Settings, source_sha256: dict[str, str],
                      run_id: str) -> UtilityMatrix:
    matrix = build_utility_matrix(validated, settings, source_sha256)
    tracking.log_matrix(run_id, matrix)
    get_run_logger().info("utility matrix %s at %s", matrix.data_version, matrix.path)
    return matrix


@task(name="train", cache_policy=NO_CACHE)
def train_task(matrix: UtilityMatrix, settings: Settings, run_id: str) -> tuple[TrainedModel, str]:
    trained = train_model(matrix, settings.training, callbacks=[tracking.EpochLogger(run_id)], verbose=2)
    model_uri = tracking.log_trained_model(run_id, trained, settings.training, matrix.train_mean_rating)
    return trained, model_uri


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(trained: TrainedModel, matrix: UtilityMatrix, run_id: str) -> EvaluationReport:
    report = evaluate_model(trained.model, matrix)
    tracking.log_evaluation(run_id, report)
    get_run_logger().info("test RMSE %.4f (bias baseline %.4f, global mean %.4f)", report.model.rmse,
                          report.bias.rmse, report.global_mean.rmse)
    return report


@task(name="register", cache_policy=NO_CACHE)
def register_task(model_uri: str, run_id: str, report: EvaluationReport, matrix: UtilityMatrix,
                  settings: Settings) -> PromotionDecision:
    decision = register_and_decide(settings.registered_model_name, model_uri, run_id, report, matrix)
    tracking.log_decision(run_id, decision.as_dict())
    get_run_logger().info("version %s: %s", decision.version,
                          f"champion ({decision.reason})" if decision.promoted else f"challenger ({decision.reason})")
    return decision


@flow(name="retrain")
def retrain(data_dir: Path | None = None, settings: Settings | None = None) -> RetrainSummary:
    """Retrain on a CooperUnion-layout folder (the built-in demo data when none is given) and register."""
    settings = settings or Settings()
    data_dir = Path(data_dir) if data_dir else generate_demo_data_task(settings.demo_data_dir)
    raw = ingest_task(data_dir)
    run_id = tracking.start_run(settings, data_dir)
    succeeded = False
    try:
        validated = validate_task(raw, settings, run_id)
        matrix = build_matrix_task(validated, settings, raw.source_sha256, run_id)
        trained, model_uri = train_task(matrix, settings, run_id)
        report = evaluate_task(trained, matrix, run_id)
        decision = register_task(model_uri, run_id, report, matrix, settings)
        succeeded = True
    finally:
        tracking.finish_run(run_id, succeeded)
    return RetrainSummary(data_dir, run_id, validated.counts, matrix, trained.epochs_run, trained.best_epoch,
                          report, decision)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.retrain", description=retrain.__doc__)
    parser.add_argument("--data", type=Path, help="folder with rating.csv and anime.csv (default: demo data)")
    parser.add_argument("--epochs", type=int, help="maximum training epochs (early stopping may end sooner)")
    args = parser.parse_args(argv)
    settings = Settings()
    if args.epochs:
        settings.training.epochs = args.epochs
    try:
        summary = retrain(data_dir=args.data, settings=settings)
    except PipelineInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary.format(settings.registered_model_name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
