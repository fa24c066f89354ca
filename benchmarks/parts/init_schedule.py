"""Bench part `init-schedule`: every initializer × learning-rate function of `make sweep`'s default space, trained on
the anime sample with the other default settings, judged on validation RMSE (the test RMSE beside it, never used to
choose). The default settings are meant to be the winner; the table says whether they are."""

from __future__ import annotations

from benchmarks.report import Table
from benchmarks.runs import BenchContext, SampleRuns
from pipeline.settings import TrainingConfig
from pipeline.tuning.sweep import OBJECTIVES, best_trial, grid_configs, run_trial, split_rmse


def init_schedule_part(runs: SampleRuns) -> Table:
    matrix, settings, default = runs.matrix, runs.settings, TrainingConfig()
    space = {name: values for name, values in settings.sweep_space.items()
             if name in ("initializer", "learning_rate_schedule")}
    trials = []
    for changed, config in grid_configs(default, space):
        result, model = run_trial(matrix, changed, config, settings)
        trials.append((result, split_rmse(model, matrix, "test")))
    best = best_trial([result for result, _ in trials], OBJECTIVES["rating"])
    table = Table(f"Initializer × learning-rate function: {default.architecture} by Keras' fit on the anime "
                  f"sample ({len(trials)} fits, the other settings the defaults)",
                  ["initializer", "learning-rate function", "epochs run", "epoch of the best validation RMSE",
                   "validation RMSE", "test RMSE", "fit s", ""])
    for result, test in sorted(trials, key=lambda trial: trial[0].validation_score):
        config = result.config
        mark = ("**best on validation**" if result is best else "") + (
            " (the default)" if (config.initializer, config.learning_rate_schedule) == (
                default.initializer, default.learning_rate_schedule) else "")
        table.rows.append([str(config.initializer), str(config.learning_rate_schedule),
                           str(int(result.details["epochs_run"])), str(int(result.details["best_epoch"])),
                           f"{result.validation_score:.4f}", f"{test:.4f}", f"{result.fit_seconds:.1f}", mark])
    table.notes.append(
        f"All at learning rate {default.learning_rate:g} ({default.optimizer}), batch {default.batch_size}, "
        f"L2 {default.l2:g}, the fit's length from updates_per_user {default.updates_per_user} "
        f"(at most {max(int(result.details['epochs_run']) for result, _ in trials)} epochs here); RMSE on the "
        f"{matrix.scale.minimum}–{matrix.scale.maximum} scale. `make sweep` runs the same grid "
        "(settings.sweep_space) as one MLflow run per trial.")
    return table


def run(context: BenchContext) -> list[Table]:
    return [init_schedule_part(context.runs)]
