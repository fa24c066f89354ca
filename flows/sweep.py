"""The `sweep` flow: ingest → validate → utility matrix → one training trial per grid point → best on validation.

Each trial is a Prefect task and an MLflow run nested under the sweep's run (experiment
`<name>-sweep`), with its configuration as params and its validation RMSE as a metric. The winner is
chosen on validation only; its test RMSE is reported, never used. Run it with `make sweep DATA=DIR`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.retrain import build_matrix_task, generate_demo_data_task, ingest_task, validate_task
from pipeline import tracking
from pipeline.errors import PipelineInputError
from pipeline.matrix import UtilityMatrix
from pipeline.settings import Settings, TrainingConfig
from pipeline.sweep import TrialResult, best_trial, format_trials, grid_configs, run_trial, split_rmse
from pipeline.train import TrainedModel


@dataclass(frozen=True)
class SweepSummary:
    trials: list[TrialResult]
    best: TrialResult
    test_rmse: float  # of the best configuration, for the record
    mlflow_run_id: str

    def format(self) -> str:
        settings_lines = [f"ANIMEREC_TRAINING__{key.upper()}={value}" for key, value in sorted(
            self.best.changed.items())]
        return "\n".join([
            f"sweep: {len(self.trials)} trials, chosen on validation RMSE (MLflow run {self.mlflow_run_id})",
            format_trials(self.trials, self.best),
            f"best: validation RMSE {self.best.validation_rmse:.4f}, test RMSE {self.test_rmse:.4f}",
            "to train with it: " + " ".join(settings_lines),
        ])


@task(name="trial", cache_policy=NO_CACHE, task_run_name="trial {changed}")
def trial_task(matrix: UtilityMatrix, changed: dict[str, Any], config: TrainingConfig,
               parent_run_id: str) -> tuple[TrialResult, TrainedModel]:
    result, trained = run_trial(matrix, changed, config)
    tracking.log_trial(parent_run_id, result)
    get_run_logger().info("%s: validation RMSE %.4f (epoch %d, %.0f ratings/s)", changed, result.validation_rmse,
                          result.best_epoch, result.ratings_per_s)
    return result, trained


@flow(name="sweep")
def sweep(data_dir: Path | None = None, settings: Settings | None = None,
          space: dict[str, list[Any]] | None = None) -> SweepSummary:
    """Grid search over the training configuration (settings.sweep_space unless `space` is given)."""
    settings = settings or Settings()
    space = space or settings.sweep_space
    data_dir = Path(data_dir) if data_dir else generate_demo_data_task(settings.demo_data_dir)
    run_id = tracking.start_sweep_run(settings, data_dir, space)
    succeeded = False
    try:
        raw = ingest_task(data_dir, settings)
        matrix = build_matrix_task(validate_task(raw, settings), settings, raw.source_sha256, run_id)
        results, best_model = [], None
        for changed, config in grid_configs(settings.training, space):
            result, trained = trial_task(matrix, changed, config, run_id)
            results.append(result)
            if best_trial(results) is result:
                best_model = trained.model  # only the best model so far stays in memory
        best = best_trial(results)
        summary = SweepSummary(results, best, split_rmse(best_model, matrix, "test"), run_id)
        tracking.log_sweep_outcome(run_id, best, summary.test_rmse, format_trials(results, best))
        create_markdown_artifact(key="sweep-result", description="Sweep trials, best on validation",
                                 markdown=f"```\n{summary.format()}\n```")
        succeeded = True
    finally:
        tracking.finish_run(run_id, succeeded)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.sweep", description=sweep.__doc__)
    parser.add_argument("--data", type=Path, help="folder with rating.csv and anime.csv (default: demo data)")
    parser.add_argument("--space", type=json.loads,
                        help='grid as JSON, e.g. \'{"l2": [0.01, 0.02], "learning_rate": [0.02]}\'')
    args = parser.parse_args(argv)
    try:
        summary = sweep(data_dir=args.data, space=args.space)
    except PipelineInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
