"""Part `optimizers`: the default settings with Adam, AdamW and Adagrad on the anime sample, judged on validation
RMSE."""

from __future__ import annotations

from benchmarks.report import Table
from benchmarks.runs import BenchContext, SampleRuns
from pipeline.models.rating.optimizers import OPTIMIZERS
from pipeline.settings import TrainingConfig
from pipeline.tuning.sweep import OBJECTIVES, best_trial, grid_configs, run_trial, split_rmse


def optimizers_part(runs: SampleRuns) -> Table:
    """Bench part `optimizers`: the default settings with each optimizer (Keras' arguments of each at their
    defaults; the same learning rate, which favours none in particular), judged on validation RMSE."""
    matrix, settings, default = runs.matrix, runs.settings, TrainingConfig()
    table = Table(f"Optimizers: {default.architecture} by Keras' fit on the anime sample, the other settings the "
                  "defaults",
                  ["optimizer", "epochs run", "epoch of the best validation RMSE", "validation RMSE", "test RMSE",
                   "median ratings/s per epoch", "fit s", ""])
    results = []
    for changed, config in grid_configs(default, {"optimizer": list(OPTIMIZERS)}):
        result, model = run_trial(matrix, changed, config, settings)
        results.append((result, split_rmse(model, matrix, "test")))
    best = best_trial([result for result, _ in results], OBJECTIVES["rating"])
    for result, test in results:
        mark = ("**best on validation**" if result is best else "") + (
            " (the default)" if result.config.optimizer == default.optimizer else "")
        table.rows.append([str(result.config.optimizer), str(int(result.details["epochs_run"])),
                           str(int(result.details["best_epoch"])), f"{result.validation_score:.4f}", f"{test:.4f}",
                           f"{result.details['ratings_per_s']:,.0f}", f"{result.fit_seconds:.1f}", mark])
    table.notes.append(f"Learning rate {default.learning_rate:g}, {default.learning_rate_schedule}, initializer "
                       f"{default.initializer}; AdamW's weight decay is Keras' default (0.004), applied to the rows a "
                       "batch updates, beside the L2 in the loss.")
    return table


def run(context: BenchContext) -> list[Table]:
    return [optimizers_part(context.runs)]
