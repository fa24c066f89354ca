"""Hyperparameter sweep: train each configuration of a grid, score it on validation, pick the best.

The test split is never looked at here: the choice is made on validation RMSE alone, so the test score
reported for the winner stays an honest estimate.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.evaluate import rmse
from pipeline.matrix import UtilityMatrix
from pipeline.settings import TrainingConfig
from pipeline.train import TrainedModel, predict_scaled, train_model


@dataclass(frozen=True)
class TrialResult:
    config: TrainingConfig
    changed: dict[str, Any]  # the grid values of this trial (what differs from the base configuration)
    validation_rmse: float  # on the rating scale
    best_epoch: int
    fit_seconds: float
    ratings_per_s: float  # median over epochs of the training pass


def grid_configs(base: TrainingConfig, space: dict[str, list[Any]]) -> list[tuple[dict[str, Any], TrainingConfig]]:
    """Every combination of the space's values applied to `base` (validated like any configuration)."""
    names = sorted(space)
    combos = [dict(zip(names, values, strict=True)) for values in itertools.product(*(space[n] for n in names))]
    return [(combo, TrainingConfig(**(base.model_dump() | combo))) for combo in combos]


def split_rmse(model, matrix: UtilityMatrix, split: str) -> float:
    """RMSE on the 1–10 scale of the model's served (clipped) predictions for one split."""
    rows = matrix.split(split)
    predicted = predict_scaled(model, rows["user_index"].to_numpy(), rows["anime_index"].to_numpy())
    return rmse(matrix.scale.unscale(rows["scaled_rating"].to_numpy()), matrix.scale.unscale(predicted))


def run_trial(matrix: UtilityMatrix, changed: dict[str, Any], config: TrainingConfig) -> tuple[TrialResult,
                                                                                                TrainedModel]:
    started = time.perf_counter()
    trained = train_model(matrix, config, verbose=0)
    result = TrialResult(config=config, changed=changed,
                         validation_rmse=split_rmse(trained.model, matrix, "validation"),
                         best_epoch=trained.best_epoch, fit_seconds=time.perf_counter() - started,
                         ratings_per_s=float(np.median(trained.history["ratings_per_s"])))
    return result, trained


def best_trial(results: list[TrialResult]) -> TrialResult:
    """Lowest validation RMSE; the earlier trial wins a tie (results are in grid order)."""
    if not results:
        raise ValueError("a sweep needs at least one trial")
    return min(results, key=lambda r: r.validation_rmse)


def format_trials(results: list[TrialResult], best: TrialResult) -> str:
    names = sorted(results[0].changed)
    header = " ".join(f"{n:>14}" for n in names) + f" {'val RMSE':>9} {'epoch':>5} {'fit s':>6} {'ratings/s':>10}"
    lines = [header]
    for r in sorted(results, key=lambda r: r.validation_rmse):
        values = " ".join(f"{r.changed[n]!s:>14}" for n in names)
        mark = "  <- best" if r is best else ""
        lines.append(f"{values} {r.validation_rmse:9.4f} {r.best_epoch:5d} {r.fit_seconds:6.1f} "
                     f"{r.ratings_per_s:10,.0f}{mark}")
    return "\n".join(lines)
