"""Train the ranking model: what to recommend, learned from everything users watched and how they rated it.

EASE (Steck, "Embarrassingly Shallow Autoencoders", 2019): an anime-to-anime weight matrix B that
predicts each user's interaction row from the rest of it, solved in closed form:

    B = argmin ‖X − XB‖² + λ‖B‖²  with diag(B) = 0   →   P = (XᵀX + λI)⁻¹,  B = −P · diag(P)⁻¹, diag(B) = 0

X holds one row per user with a weight per anime they rated or watched: a rating r counts
((r − min + 1) / (max − min + 1))^power (a 9 counts more than a 3), a watched-but-unrated row counts
`unrated_weight`, and a list entry of the Kaggle 2020 layout counts by its watching status (on hold,
dropped and plan to watch have their own weights; watching and completed count as watched).
Only the `neighbours` strongest weights of each anime's row are kept: the model is
sparse, small to ship and fast to serve (a user's scores cost |history| × neighbours). A user's scores
are their row times B, so someone new needs no retraining, and the anime that contributed most to a
recommendation are its "because you watched".

λ is expressed relative to the mean of diag(XᵀX) (the average weighted interaction count of an anime),
so the search starts in the right range at any data size, and chosen on the validation split by code on every run
(a walk in factors of `l2_step`); the fit then uses train + validation + watched rows, never test, at the
chosen relative λ. With more than `max_anime` anime, only the most watched are modelled (the solve is
dense in anime × anime).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
from scipy.linalg import lapack

from pipeline.matrix import UtilityMatrix, lookup_indices
from pipeline.metrics import K, RankingReport, ranking_report, relevant_pairs, threads_for, top_n_lists
from pipeline.settings import RankingConfig

WEIGHTS_FILE, DIAGONAL_FILE, CONFIG_FILE = "weights.parquet", "diagonal.parquet", "config.json"


@dataclass(frozen=True)
class InteractionWeights:
    """How a user's ratings and unrated interactions become the model's input row."""

    rating_min: int
    rating_max: int
    power: float  # 0: every interaction counts 1
    unrated_weight: float  # watched (or watching, completed) without a rating
    unrated_value: int
    status_weights: dict[int, float] = field(default_factory=dict)  # other watching statuses (dropped, …)

    def of(self, ratings: np.ndarray, statuses: np.ndarray | None = None, chunk: int = 1 << 20) -> np.ndarray:
        """Each interaction's weight (float32), `chunk` rows at a time: the formula's float64 temporaries of a
        whole 51M-row history were 2 GB."""
        weights = np.empty(len(ratings), dtype=np.float32)
        for start in range(0, len(ratings), chunk):
            weights[start:start + chunk] = self._weights(
                ratings[start:start + chunk], None if statuses is None else statuses[start:start + chunk])
        return weights

    def _weights(self, ratings: np.ndarray, statuses: np.ndarray | None) -> np.ndarray:
        ratings = np.asarray(ratings, dtype=np.float64)
        rated = ((ratings - self.rating_min + 1) / (self.rating_max - self.rating_min + 1)).clip(0, None) ** self.power
        unrated = np.full(len(ratings), self.unrated_weight)
        if statuses is not None and self.status_weights:
            lookup = np.full(max(self.status_weights) + 1, self.unrated_weight)
            lookup[list(self.status_weights)] = list(self.status_weights.values())
            statuses = np.asarray(statuses, dtype=np.int64)
            listed = (statuses >= 0) & (statuses < len(lookup))
            unrated[listed] = lookup[statuses[listed]]
        return np.where(ratings == self.unrated_value, unrated, rated).astype(np.float32)

    def matrix(self, interactions: pa.Table, n_users: int, n_anime: int) -> sp.csr_matrix:
        """Users × anime CSR of weights from (user_index, anime_index, rating[, watching_status]) rows."""
        statuses = (interactions["watching_status"].to_numpy() if "watching_status" in interactions.column_names
                    else None)
        return sp.csr_matrix((self.of(interactions["rating"].to_numpy(), statuses),
                              (interactions["user_index"].to_numpy(), interactions["anime_index"].to_numpy())),
                             shape=(n_users, n_anime), dtype=np.float32)

    @classmethod
    def of_config(cls, config: RankingConfig, scale_min: int, scale_max: int, unrated_value: int
                  ) -> InteractionWeights:
        return cls(scale_min, scale_max, config.rating_weight_power, config.unrated_weight, unrated_value,
                   {3: config.on_hold_weight, 4: config.dropped_weight, 6: config.plan_to_watch_weight})

    @classmethod
    def from_json(cls, config: dict) -> InteractionWeights:
        return cls(**{**config, "status_weights": {int(k): v for k, v in config.get("status_weights", {}).items()}})


@numba.njit(parallel=True, cache=True)
def _add_rows_times_weights(history_indptr, history_indices, history_data, weights_indptr, weights_indices,
                            weights_data, out):  # pragma: no cover (compiled)
    """out += history × weights, both CSR, into a dense `out`: each row is the sum of the weight rows of its
    history (a sparse × sparse product with a dense result; scipy's builds a sparse one first: 0.23 s against
    0.06 s for 1,024 users at 17.5k anime, 200 neighbours).
    Summed in scipy's order, so the result is scipy's to the bit (tests/test_ranking.py)."""
    for row in numba.prange(len(history_indptr) - 1):
        for position in range(history_indptr[row], history_indptr[row + 1]):
            anime, weight = history_indices[position], history_data[position]
            for neighbour in range(weights_indptr[anime], weights_indptr[anime + 1]):
                out[row, weights_indices[neighbour]] += weight * weights_data[neighbour]


@dataclass(frozen=True)
class ItemToItemModel:
    weights: sp.csr_matrix  # (anime × anime) B, pruned: row j = how much having watched j adds to each anime
    precision_diagonal: np.ndarray  # diag((XᵀX + λI)⁻¹), > 0; 0 for an anime the model does not cover
    interaction: InteractionWeights
    l2: float

    @property
    def n_anime(self) -> int:
        return self.weights.shape[0]

    @cached_property
    def _not_modelled(self) -> np.ndarray:
        return np.flatnonzero(self.precision_diagonal <= 0)

    def scores(self, history: sp.csr_matrix) -> np.ndarray:
        """Dense scores (rows of `history` × anime): each user's weighted row times B; −inf for anime the
        model does not cover (it cannot recommend them)."""
        history = sp.csr_matrix(history)
        scores = np.zeros((history.shape[0], self.n_anime), np.result_type(history.dtype, self.weights.dtype))
        with threads_for(history.shape[0]):
            _add_rows_times_weights(history.indptr, history.indices, history.data, self.weights.indptr,
                                    self.weights.indices, self.weights.data, scores)
        scores[:, self._not_modelled] = -np.inf
        return scores

    def because(self, history_row: sp.csr_matrix, targets: np.ndarray, top: int = 2) -> list[np.ndarray]:
        """For each target anime, the (at most `top`) anime of the history that added most to its score."""
        watched, weight = history_row.indices, history_row.data
        if not len(watched):
            return [np.empty(0, dtype=np.int64) for _ in targets]
        contribution = self.weights[watched][:, targets].toarray() * weight[:, None]
        reasons = []
        for column in contribution.T:
            best = np.argsort(-column, kind="stable")[:top]
            reasons.append(watched[best[column[best] > 0]])
        return reasons

    @cached_property
    def _by_column(self) -> sp.csc_matrix:
        return self.weights.tocsc()

    def similarity(self, anime_index: int) -> np.ndarray:
        """Partial correlation (−P_ij / √(P_ii P_jj)) with every anime whose weight with this one was kept in
        either direction; −inf for the others. Symmetric: sim(a, b) = sim(b, a)."""
        d = np.sqrt(self.precision_diagonal.astype(np.float64))  # nonzero wherever a weight was kept
        similarity = np.full(self.n_anime, -np.inf)
        column = self._by_column[:, anime_index]  # B[i, j] = −P_ij / P_jj
        similarity[column.indices] = column.data * d[anime_index] / d[column.indices]
        row = self.weights[anime_index]  # B[j, i] = −P_ij / P_ii
        similarity[row.indices] = row.data * d[row.indices] / d[anime_index]
        return similarity

    def reindexed(self, old_anime_ids: np.ndarray, new_anime_ids: np.ndarray) -> ItemToItemModel:
        """The same model over another anime id map (anime it never saw get no weights)."""
        new_index = lookup_indices(np.asarray(old_anime_ids), pa.table(
            {"anime_id": new_anime_ids, "anime_index": np.arange(len(new_anime_ids))}), "anime_id", "anime_index")
        coo = self.weights.tocoo()
        keep = (new_index[coo.row] >= 0) & (new_index[coo.col] >= 0)
        n = len(new_anime_ids)
        diagonal = np.zeros(n, dtype=np.float32)  # anime it never saw: not modelled
        diagonal[new_index[new_index >= 0]] = self.precision_diagonal[new_index >= 0]
        weights = sp.csr_matrix((coo.data[keep], (new_index[coo.row[keep]], new_index[coo.col[keep]])), shape=(n, n))
        return ItemToItemModel(weights, diagonal, self.interaction, self.l2)

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        coo = self.weights.tocoo()
        pq.write_table(pa.table({"anime_index": coo.row.astype(np.int32), "neighbour_index": coo.col.astype(np.int32),
                                 "weight": coo.data.astype(np.float32)}), folder / WEIGHTS_FILE)
        pq.write_table(pa.table({"precision_diagonal": self.precision_diagonal.astype(np.float32)}),
                       folder / DIAGONAL_FILE)
        (folder / CONFIG_FILE).write_text(json.dumps({"l2": self.l2, "interaction": asdict(self.interaction)}))
        return folder

    @classmethod
    def load(cls, folder: Path) -> ItemToItemModel:
        config = json.loads((folder / CONFIG_FILE).read_text())
        table = pq.read_table(folder / WEIGHTS_FILE)
        diagonal = pq.read_table(folder / DIAGONAL_FILE)["precision_diagonal"].to_numpy()
        n = len(diagonal)
        weights = sp.csr_matrix((table["weight"].to_numpy(), (table["anime_index"].to_numpy(),
                                                              table["neighbour_index"].to_numpy())), shape=(n, n))
        return cls(weights, diagonal, InteractionWeights.from_json(config["interaction"]), float(config["l2"]))


def gram_matrix(history: sp.csr_matrix, block: int = 2048) -> np.ndarray:
    """XᵀX as a dense float32 (anime × anime) array.

    Sparse products cost Σ over users of |history|², far below the users × anime² of dense ones on
    rating data; computed a block of columns at a time (the lower triangle only, then mirrored), on all
    cores (scipy releases the GIL in its sparse products)."""
    n = history.shape[1]
    by_column = history.tocsc()
    by_anime = by_column.T  # CSR over anime: the same arrays, no second copy
    gram = np.empty((n, n), dtype=np.float32)

    def fill(start: int) -> None:
        stop = min(start + block, n)
        gram[start:, start:stop] = (by_anime[start:] @ by_column[:, start:stop]).toarray()

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(fill, range(0, n, block)))
    for start in range(0, n, block):
        stop = min(start + block, n)
        gram[start:stop, stop:] = gram[stop:, start:stop].T
    return gram


def invert_spd_in_place(matrix: np.ndarray, block: int = 2048) -> None:
    """Invert a symmetric positive definite (C-ordered) matrix in its own memory: LAPACK's Cholesky factorization
    and inverse (potrf, potri) run on the matrix's transpose — the same symmetric matrix, Fortran-ordered, so no copy
    — then the triangle they fill is mirrored a block at a time. No n² temporaries (the Schur-complement inverse in
    TensorFlow matmuls that it replaces held ~1 GB of them at 17.5k anime, the fit's peak), and more accurate in
    float32 (tests/test_ranking.py)."""
    fortran = matrix.T
    potrf, potri = lapack.get_lapack_funcs(("potrf", "potri"), (fortran,))
    factor, info = potrf(fortran, lower=1, overwrite_a=1, clean=0)
    if info == 0:
        factor, info = potri(factor, lower=1, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"LAPACK {'potrf' if info > 0 else 'argument'} error {info}: not positive "
                                    "definite")
    if not np.shares_memory(factor, matrix):
        raise AssertionError("LAPACK did not work in place")
    n = matrix.shape[0]
    for start in range(0, n, block):  # potri filled the Fortran lower triangle: this matrix's upper one
        stop = min(start + block, n)
        matrix[stop:, start:stop] = matrix[start:stop, stop:].T
        diagonal = matrix[start:stop, start:stop]
        lower = np.tril_indices(stop - start, -1)
        diagonal[lower] = diagonal.T[lower]


def keep_strongest(dense: np.ndarray, neighbours: int, chunk: int = 1024) -> sp.csr_matrix:
    """CSR keeping the `neighbours` largest-magnitude entries of each row (zeros dropped)."""
    n_rows, n_cols = dense.shape
    keep = min(neighbours, n_cols)
    columns, values = np.empty((n_rows, keep), np.int32), np.empty((n_rows, keep), np.float32)
    for start in range(0, n_rows, chunk):
        rows = dense[start:start + chunk]
        strongest = np.argpartition(-np.abs(rows), kth=keep - 1, axis=1)[:, :keep]
        columns[start:start + chunk] = strongest
        values[start:start + chunk] = np.take_along_axis(rows, strongest, axis=1)
    pruned = sp.csr_matrix((values.ravel(), columns.ravel(), np.arange(0, n_rows * keep + 1, keep)),
                           shape=(n_rows, n_cols))
    pruned.eliminate_zeros()
    pruned.sort_indices()
    return pruned


def solve_item_weights(gram: np.ndarray, l2: float, neighbours: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """B (pruned) and diag(P) for one λ; `gram` is left as it was."""
    work = gram.copy()
    work[np.diag_indices_from(work)] += l2
    invert_spd_in_place(work)
    diagonal = work.diagonal().copy()
    work /= -diagonal[None, :]  # B_ij = −P_ij / P_jj
    np.fill_diagonal(work, 0.0)
    return keep_strongest(work, neighbours), diagonal


def top_n_for_history(model: ItemToItemModel, history: sp.csr_matrix, n: int = K) -> np.ndarray:
    """Top-n anime per history row, never one in the row (rated or watched)."""
    return top_n_lists(lambda rows: model.scores(history[rows]), np.arange(history.shape[0]), history, n)


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
    anime × anime solve's memory grows with n²: a 17,500-anime fit peaked at 4.93 GB in `make bench`)."""
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
    weights, diagonal, l2 = solve_on(history, anime)(chosen.relative_l2, config.neighbours)
    model = ItemToItemModel(weights, diagonal, interaction, l2)
    return RankingFit(model, trials, time.perf_counter() - started)
