"""Fit the ranking model on a run's matrix: λ chosen on the run's own validation split by a walk in factors of
`l2_step`, then the model fitted on train + validation + unrated rows (never test)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from pipeline.matrix.utility_matrix import UtilityMatrix
from pipeline.metrics import RankingReport, ranking_report, relevant_pairs
from pipeline.models.ranking.ease import (
    InteractionWeights,
    ItemToItemModel,
    gram_matrix,
    solve_item_weights,
    top_n_for_history,
)
from pipeline.settings import RankingConfig


@dataclass(frozen=True)
class L2Trial:
    relative_l2: float  # λ / mean of diag(XᵀX)
    l2: float  # the λ that was fitted
    validation: RankingReport  # top-10 on the validation split of the model fitted on train + watched rows


@dataclass(frozen=True)
class RankingFit:
    model: ItemToItemModel
    trials: list[L2Trial]  # in the order tried; the chosen λ is the best validation NDCG@10
    fit_seconds: float

    @property
    def chosen(self) -> L2Trial:
        return best_l2(self.trials)


def best_l2(trials: list[L2Trial]) -> L2Trial:
    """The highest validation NDCG@10; the earlier trial wins a tie."""
    return max(trials, key=lambda trial: trial.validation.ndcg)


Solver = Callable[[float, int], tuple[sp.csr_matrix, np.ndarray, float]]  # (relative λ, neighbours) → B, diag P, λ


def choose_l2(solve: Solver, history: sp.csr_matrix, validation: pa.Table, config: RankingConfig,
              interaction: InteractionWeights, relevance_threshold: float) -> list[L2Trial]:
    """Walk the relative λ from `config.relative_l2` by factors of `l2_step` (up first; down if the first step
    up does not help) while validation NDCG@10 improves, at most `l2_max_trials` fits."""
    relevant = relevant_pairs(validation, relevance_threshold)
    users = np.unique(relevant["user_index"].to_numpy())
    if len(users) > config.validation_users:
        users = np.sort(np.random.default_rng(0).choice(users, config.validation_users, replace=False))
        relevant = relevant.filter(pa.array(np.isin(relevant["user_index"].to_numpy(), users)))
    rows = history[users]

    def trial(relative_l2: float) -> L2Trial:
        weights, diagonal, l2 = solve(relative_l2, config.neighbours)
        model = ItemToItemModel(weights, diagonal, interaction, l2)
        return L2Trial(relative_l2, l2, ranking_report(top_n_for_history(model, rows), users, relevant,
                                                       history.shape[1]))

    trials = [trial(config.relative_l2)]
    if not len(users):
        return trials
    step = config.l2_step
    candidate = config.relative_l2 * step
    while len(trials) < config.l2_max_trials:
        trials.append(trial(candidate))
        best = best_l2(trials)
        if best is trials[-1]:
            candidate = best.relative_l2 * step
        elif len(trials) == 2 and step > 1:  # the first step up did not help: try downwards
            step = 1 / step
            candidate = config.relative_l2 * step
        else:
            break
    return trials


def modelled_anime(history: sp.csr_matrix, max_anime: int) -> np.ndarray:
    """The anime the model solves for: all of them, or the `max_anime` most interacted with (the dense
    anime × anime solve's memory grows with n²; `make bench PARTS=scale` measures it)."""
    n = history.shape[1]
    if n <= max_anime:
        return np.arange(n)
    return np.sort(np.argsort(-np.diff(history.tocsc().indptr), kind="stable")[:max_anime])


def solve_on(history: sp.csr_matrix, anime: np.ndarray) -> Solver:
    """`solve(relative λ, neighbours)` → (B, diag(P), λ) for the item weights over `anime` only, laid out over
    every anime (the others get no weights: never recommended, never contributing), with the Gram matrix
    computed once for all λ."""
    gram = gram_matrix(history[:, anime] if len(anime) < history.shape[1] else history)
    mean_diagonal = float(np.mean(gram.diagonal(), dtype=np.float64))
    n = history.shape[1]

    def solve(relative_l2: float, neighbours: int) -> tuple[sp.csr_matrix, np.ndarray, float]:
        l2 = relative_l2 * mean_diagonal
        weights, diagonal = solve_item_weights(gram, l2, neighbours)
        if len(anime) == n:
            return weights, diagonal, l2
        coo = weights.tocoo()
        full_diagonal = np.zeros(n, dtype=np.float32)  # the others: not modelled
        full_diagonal[anime] = diagonal
        return sp.csr_matrix((coo.data, (anime[coo.row], anime[coo.col])), shape=(n, n)), full_diagonal, l2

    return solve


def fit_item_weights(history: sp.csr_matrix, interaction: InteractionWeights, anime: np.ndarray, relative_l2: float,
                     neighbours: int) -> ItemToItemModel:
    """The ranking model fitted on `history` over the `anime` it models, at one λ (relative to diag(XᵀX)'s mean)."""
    weights, diagonal, l2 = solve_on(history, anime)(relative_l2, neighbours)
    return ItemToItemModel(weights, diagonal, interaction, l2)


def train_ranking_model(matrix: UtilityMatrix, config: RankingConfig, unrated_value: int,
                        relevance_threshold: float) -> RankingFit:
    """Choose λ on validation (fitted on train + watched rows), then fit on train + validation + watched."""
    started = time.perf_counter()
    interaction = InteractionWeights.of_config(config, matrix.scale.minimum, matrix.scale.maximum, unrated_value)
    history = interaction.matrix(matrix.interactions(("train",), unrated_value), matrix.n_users, matrix.n_anime)
    anime = modelled_anime(history, config.max_anime)
    trials = choose_l2(solve_on(history, anime), history, matrix.split("validation"), config, interaction,
                       relevance_threshold)
    chosen = best_l2(trials)
    del history  # the final fit's history replaces it (memory)
    history = interaction.matrix(matrix.interactions(("train", "validation"), unrated_value), matrix.n_users,
                                 matrix.n_anime)
    model = fit_item_weights(history, interaction, anime, chosen.relative_l2, config.neighbours)
    return RankingFit(model, trials, time.perf_counter() - started)
