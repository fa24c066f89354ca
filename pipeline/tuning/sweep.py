"""Hyperparameter sweep: fit each configuration of a grid, score it on validation, pick the best.

Two models can be swept: the rating model (judged by validation RMSE, lower is better) and the ranking
model (validation NDCG@10 of its lists, higher is better; each trial walks its own λ). The test split is
never looked at here: the choice is made on validation alone, so the test score reported for the winner
stays an honest estimate.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from pipeline.evaluation.evaluate import SEEN_SPLITS, judged_users
from pipeline.matrix.utility_matrix import UtilityMatrix
from pipeline.metrics import ranking_report, rmse
from pipeline.models.ranking.ease import ItemToItemModel, top_n_for_history
from pipeline.models.ranking.fit import train_ranking_model
from pipeline.settings import RankingConfig, Settings, TrainingConfig

SweptModel = Literal["rating", "ranking"]


@dataclass(frozen=True)
class Objective:
    metric: str  # what a trial is judged by on validation (the MLflow metric name)
    higher_is_better: bool

    def best(self, scores: list[float]) -> int:
        """Position of the best score; the earlier wins a tie."""
        return int(np.argmax(scores) if self.higher_is_better else np.argmin(scores))


OBJECTIVES: dict[str, Objective] = {"rating": Objective("validation_rmse", higher_is_better=False),
                                    "ranking": Objective("validation_ndcg_at_10", higher_is_better=True)}


@dataclass(frozen=True)
class TrialResult:
    config: BaseModel  # TrainingConfig or RankingConfig
    changed: dict[str, Any]  # the grid values of this trial (what differs from the base configuration)
    validation_score: float  # validation RMSE on the rating scale, or validation NDCG@10
    fit_seconds: float
    details: dict[str, float]  # rating: best_epoch, epochs_run, ratings_per_s; ranking: relative_l2_chosen


def grid_configs(base: BaseModel, space: dict[str, list[Any]]) -> list[tuple[dict[str, Any], BaseModel]]:
    """Every combination of the space's values applied to `base` (validated like any configuration), each with the
    values it changed as the configuration holds them (a Keras part as a KerasPart)."""
    names = sorted(space)
    combos = [dict(zip(names, values, strict=True)) for values in itertools.product(*(space[n] for n in names))]
    configs = [type(base)(**(base.model_dump() | combo)) for combo in combos]
    return [({name: getattr(config, name) for name in combo}, config) for combo, config in zip(combos, configs,
                                                                                             strict=True)]


def split_rmse(model, matrix: UtilityMatrix, split: str) -> float:
    """RMSE on the 1–10 scale of the model's served (clipped) predictions for one split."""
    from pipeline.models.rating.train import predict_scaled  # Keras: rating trials only (ranking ones need none)

    rows = matrix.split(split)
    predicted = predict_scaled(model, rows["user_index"].to_numpy(), rows["anime_index"].to_numpy())
    return rmse(matrix.scale.unscale(rows["scaled_rating"].to_numpy()), matrix.scale.unscale(predicted))


def ndcg_on_test(model: ItemToItemModel, matrix: UtilityMatrix, unrated_value: int,
                 relevance_threshold: float) -> float:
    """NDCG@10 on the test split of a ranking model fitted on train + validation + watched rows."""
    history = model.interaction.matrix(matrix.interactions(SEEN_SPLITS, unrated_value), matrix.n_users,
                                       matrix.n_anime)
    users, relevant = judged_users(matrix, relevance_threshold)
    return ranking_report(top_n_for_history(model, history[users]), users, relevant, matrix.n_anime).ndcg


def run_trial(matrix: UtilityMatrix, changed: dict[str, Any], config: BaseModel,
              settings: Settings) -> tuple[TrialResult, Any]:
    """Fit one configuration; return its result and the fitted model (Keras, or ItemToItemModel)."""
    started = time.perf_counter()
    if isinstance(config, RankingConfig):
        fit = train_ranking_model(matrix, config, settings.unrated_value, settings.relevance_threshold)
        return TrialResult(config, changed, fit.chosen.validation.ndcg, time.perf_counter() - started,
                           {"relative_l2_chosen": fit.chosen.relative_l2}), fit.model
    from pipeline.models.rating.train import train_model  # Keras: rating trials only (ranking ones need none)

    trained = train_model(matrix, config)
    return TrialResult(config, changed, split_rmse(trained.model, matrix, "validation"),
                       time.perf_counter() - started,
                       {"best_epoch": trained.best_epoch, "epochs_run": trained.epochs_run,
                        "ratings_per_s": float(np.median(trained.history["ratings_per_s"]))}), trained.model


def score_on_test(model: Any, matrix: UtilityMatrix, settings: Settings) -> float:
    """The winner's test score, for the record (never used to choose)."""
    if isinstance(model, ItemToItemModel):
        return ndcg_on_test(model, matrix, settings.unrated_value, settings.relevance_threshold)
    return split_rmse(model, matrix, "test")


def base_config(settings: Settings, model: SweptModel) -> TrainingConfig | RankingConfig:
    return settings.ranking if model == "ranking" else settings.training


def best_trial(results: list[TrialResult], objective: Objective) -> TrialResult:
    if not results:
        raise ValueError("a sweep needs at least one trial")
    return results[objective.best([r.validation_score for r in results])]
