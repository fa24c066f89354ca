"""Part `speed`: ratings/s of a Keras epoch at three batch sizes, of an ALS sweep and of the seed model, on the anime
sample."""

from __future__ import annotations

import numpy as np

from benchmarks.report import Table
from benchmarks.runs import BenchContext, SampleRuns
from pipeline.models.rating.train import TrainedModel, train_model
from pipeline.settings import TrainingConfig


def speed_part(runs: SampleRuns) -> Table:
    """Ratings per second of the training pass, per epoch or ALS sweep (the first includes tracing/compiling)."""
    def median_rate(trained: TrainedModel) -> float:
        rates = trained.history["ratings_per_s"]
        return float(np.median(rates[1:] if len(rates) > 1 else rates))

    seed_rate = median_rate(runs.seed)
    table = Table(f"Training speed, 128-dim model, anime sample ({runs.matrix.split_sizes['train']:,} train ratings)",
                  ["configuration", "batch", "median ratings/s per epoch", "vs seed"])
    table.rows.append(["seed: Keras fit, Keras' dense Adam", str(TrainingConfig.seed_cosine().batch_size),
                       f"{seed_rate:,.0f}", "1.00"])
    default = TrainingConfig()
    for batch_size in (4096, default.batch_size, 65536):
        trained = runs.default if batch_size == default.batch_size else train_model(
            runs.matrix, default.model_copy(update={"batch_size": batch_size, "epochs": 3}))
        rate = median_rate(trained)
        table.rows.append([f"{default.architecture}: Keras fit, sparse {default.optimizer.name} (XLA step)"
                           + (" (default)" if batch_size == default.batch_size else ""), str(batch_size),
                           f"{rate:,.0f}", f"{rate / seed_rate:.2f}"])
    if default.architecture != "biased_mf":  # what the feature tower costs
        rate = median_rate(train_model(runs.matrix, default.model_copy(update={"architecture": "biased_mf",
                                                                               "epochs": 3})))
        table.rows.append([f"biased_mf (no feature tower): Keras fit, sparse {default.optimizer.name} (XLA step)",
                           str(default.batch_size), f"{rate:,.0f}", f"{rate / seed_rate:.2f}"])
    rate = median_rate(runs.als)
    table.rows.append(["biased MF by ALS (one sweep: every user's row, then every anime's)", "–",
                       f"{rate:,.0f}", f"{rate / seed_rate:.2f}"])
    table.notes.append("ratings/s = train rows / time of the epoch's training pass or the ALS sweep (validation "
                       "excluded), median over epochs after the first. An ALS sweep does more per rating than an "
                       "epoch (3 conjugate-gradient steps per row and side) and needs other numbers of them.")
    return table


def run(context: BenchContext) -> list[Table]:
    return [speed_part(context.runs)]
