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

from pipeline.matrix.id_map import IdMap
from pipeline.settings import RankingConfig
from pipeline.top_n import K, threads_for, top_n_lists

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
        whole history would be several times its size."""
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

    def row(self, anime: np.ndarray, ratings: np.ndarray, n_anime: int) -> sp.csr_matrix:
        """One person's row (1 × anime) from their anime indices and ratings: someone new, answered at once."""
        row = sp.csr_matrix((self.of(np.asarray(ratings)), np.asarray(anime), np.array([0, len(anime)])),
                            shape=(1, n_anime), dtype=np.float32)
        row.sum_duplicates()  # sorted indices; an anime listed twice has its weights summed, as `matrix` does
        return row

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
    history (a sparse × sparse product with a dense result, where scipy's builds a sparse one first).
    Summed in scipy's order, so the result is scipy's to the bit (tests/models/ranking/test_ranking.py)."""
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

    def scores(self, users: np.ndarray | None, history: sp.csr_matrix) -> np.ndarray:
        """Dense scores (rows of `history` × anime): each user's weighted row times B; −inf for anime the
        model does not cover (it cannot recommend them). Only the history counts (`users` may be None: someone
        new)."""
        history = sp.csr_matrix(history)
        dtype = np.result_type(history.dtype, self.weights.dtype)
        if history.shape[0] == 1:  # one person's list, as served: scipy's product, with no compiled kernel to load
            scores = (history @ self.weights).toarray().astype(dtype, copy=False)
        else:
            scores = np.zeros((history.shape[0], self.n_anime), dtype)
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

    def similarity(self, anime_index: int) -> np.ndarray:
        """Partial correlation (−P_ij / √(P_ii P_jj)) with every anime whose weight with this one was kept in
        either direction; −inf for the others. Symmetric: sim(a, b) = sim(b, a)."""
        d = np.sqrt(self.precision_diagonal.astype(np.float64))  # nonzero wherever a weight was kept
        similarity = np.full(self.n_anime, -np.inf)
        column = self.weights[:, [anime_index]].tocoo()  # B[i, j] = −P_ij / P_jj: one pass over B, no transposed copy
        similarity[column.row] = column.data * d[anime_index] / d[column.row]
        row = self.weights[anime_index]  # B[j, i] = −P_ij / P_ii
        similarity[row.indices] = row.data * d[row.indices] / d[anime_index]
        return similarity

    def reindexed(self, own_anime: IdMap, anime: IdMap) -> ItemToItemModel:
        """The same model over another anime id map (anime it never saw get no weights)."""
        new_index = anime.indices(own_anime.ids)
        coo = self.weights.tocoo()
        keep = (new_index[coo.row] >= 0) & (new_index[coo.col] >= 0)
        n = len(anime)
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
    — then the triangle they fill is mirrored a block at a time. No n² temporaries, where a blocked inverse by
    matrix products holds several (`make bench PARTS=ranking` compares both), and accurate in float32
    (tests/models/ranking/test_ranking.py)."""
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
    return top_n_lists(lambda rows: model.scores(rows, history[rows]), np.arange(history.shape[0]), history, n)
