"""Metrics shared by training (choices made on validation), evaluation (the test split) and the registry.

Pure functions of predictions and held-out data: RMSE/MAE of ratings, and precision/recall/NDCG@k,
catalog coverage and personalization of top-k lists. Each comes with its standard error over the
held-out rows or users, which the registry uses as the tolerance of a comparison.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

K = 10  # length of the lists every ranking metric judges


def rmse(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Root of the mean squared error over the known ratings."""
    return float(np.sqrt(np.mean((np.asarray(actual, float) - np.asarray(predicted, float)) ** 2)))


def mae(actual: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(actual, float) - np.asarray(predicted, float))))


@dataclass(frozen=True)
class Scores:
    rmse: float
    mae: float
    rmse_stderr: float = 0.0  # standard error of the RMSE over the rated rows (delta method)

    @classmethod
    def of(cls, actual: np.ndarray, predicted: np.ndarray) -> Scores:
        squared = (np.asarray(actual, float) - np.asarray(predicted, float)) ** 2
        root = float(np.sqrt(squared.mean()))
        stderr = float(squared.std() / np.sqrt(len(squared)) / (2 * root)) if root > 0 else 0.0
        return cls(root, mae(actual, predicted), stderr)


@dataclass(frozen=True)
class RankingReport:
    """Top-k quality: relevant = a held-out rating at or above the relevance threshold."""

    precision: float
    recall: float
    ndcg: float
    coverage: float  # share of the catalog that appears in anyone's top-k
    personalization: float  # 1 − mean overlap of two users' top-k lists (0 = everyone gets the same list)
    n_users: int
    ndcg_stderr: float = 0.0  # standard error of the mean NDCG over the users

    @property
    def measured_ndcg(self) -> float | None:
        """NDCG@k, or None when no user had a relevant held-out rating (nothing to measure)."""
        return self.ndcg if self.n_users else None

    def as_metrics(self, prefix: str, k: int = K) -> dict[str, float]:
        return {f"{prefix}precision_at_{k}": self.precision, f"{prefix}recall_at_{k}": self.recall,
                f"{prefix}ndcg_at_{k}": self.ndcg, f"{prefix}catalog_coverage_at_{k}": self.coverage,
                f"{prefix}personalization_at_{k}": self.personalization}


def relevant_pairs(split: pa.Table, relevance_threshold: float) -> pa.Table:
    """The held-out (user, anime) rows a good list should contain: scaled rating ≥ the threshold."""
    return split.filter(pc.greater_equal(split["scaled_rating"], relevance_threshold))


def ranking_report(top: np.ndarray, user_indices: np.ndarray, relevant: pa.Table, n_anime: int) -> RankingReport:
    """Precision/recall/NDCG@k of top-k lists (rows of `top`, one per user) against relevant held-out pairs."""
    k = top.shape[1]
    if not len(user_indices):  # no relevant held-out rating (say, none reaches the top of the scale)
        return RankingReport(*(float("nan"),) * 5, n_users=0)
    by_user = np.argsort(user_indices, kind="stable")
    rows = by_user[np.searchsorted(user_indices, relevant["user_index"].to_numpy(), sorter=by_user)]
    relevant_by_row = sp.csr_matrix((np.ones(len(rows), np.int8), (rows, relevant["anime_index"].to_numpy())),
                                    shape=(len(user_indices), n_anime))
    relevant_by_row.sum_duplicates()  # sorted indices per row, each pair once
    n_relevant = np.diff(relevant_by_row.indptr)
    hits = listed_hits(top, relevant_by_row.indptr, relevant_by_row.indices)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)[np.minimum(n_relevant, k) - 1]
    per_user_ndcg = (hits * discounts).sum(axis=1) / ideal
    listed = top[top >= 0]  # -1: no candidate left for that place (a user who has seen nearly everything)
    counts = np.bincount(listed, minlength=n_anime).astype(np.float64)
    n = len(user_indices)
    mean_overlap = (np.sum(counts**2) - len(listed)) / (n * (n - 1) * k) if n > 1 else 1.0
    return RankingReport(
        precision=float(hits.sum(axis=1).mean() / k), recall=float((hits.sum(axis=1) / n_relevant).mean()),
        ndcg=float(per_user_ndcg.mean()), coverage=float((counts > 0).mean()),
        personalization=float(1.0 - mean_overlap), n_users=n,
        ndcg_stderr=float(per_user_ndcg.std() / np.sqrt(n)) if n else 0.0)


@numba.njit(cache=True)
def listed_hits(top: np.ndarray, indptr: np.ndarray, indices: np.ndarray) -> np.ndarray:  # pragma: no cover
    """Whether each listed anime (top[row, place]; −1: none) is among that row's sorted CSR `indices`."""
    hits = np.zeros(top.shape, np.bool_)
    for row in range(top.shape[0]):
        relevant = indices[indptr[row]:indptr[row + 1]]
        for place in range(top.shape[1]):
            at = np.searchsorted(relevant, top[row, place])
            hits[row, place] = top[row, place] >= 0 and at < len(relevant) and relevant[at] == top[row, place]
    return hits


@contextmanager
def threads_for(rows: int, rows_per_thread: int = 64) -> Iterator[None]:
    """Numba's threads for a parallel kernel over `rows` rows: one (the calling thread) for a handful, such as one
    user's request. Waking the pool costs more than a few rows, and milliseconds when another pool (BLAS after a
    matrix product) still spins on the cores (`make bench PARTS=serving` measures a served top-10)."""
    threads = numba.get_num_threads()
    numba.set_num_threads(max(1, min(threads, rows // rows_per_thread)))
    try:
        yield
    finally:
        numba.set_num_threads(threads)


@numba.njit(parallel=True, cache=True)
def top_n_unseen(scores: np.ndarray, seen_indptr: np.ndarray, seen_indices: np.ndarray,
                 n: int) -> np.ndarray:  # pragma: no cover (compiled)
    """Column indices of the n best scores per row, best first (a tie: the lower index first), never a column
    stored in that row of the CSR structure `seen_indptr`/`seen_indices`, nor a −inf or NaN score; −1 fills the
    places of a row with fewer candidates. One pass over each row keeping its n best in order: no sort, no copy of
    `scores` (which may be read-only or broadcast), where a float64 copy, argpartition and sort would copy and
    sort every row."""
    n_rows, n_columns = scores.shape
    top = np.full((n_rows, n), -1, np.int64)
    for row in numba.prange(n_rows):
        seen = np.zeros(n_columns, np.bool_)
        for position in range(seen_indptr[row], seen_indptr[row + 1]):
            seen[seen_indices[position]] = True
        best = np.empty(n, np.float64)
        size = 0
        for column in range(n_columns):
            score = scores[row, column]
            if seen[column] or not score > -np.inf or (size == n and not score > best[n - 1]):
                continue
            place = size if size < n else n - 1
            while place > 0 and best[place - 1] < score:
                best[place], top[row, place] = best[place - 1], top[row, place - 1]
                place -= 1
            best[place], top[row, place] = score, column
            size = min(size + 1, n)
    return top


def top_n_lists(scores_for: Callable[[np.ndarray], np.ndarray], users: np.ndarray, seen: sp.csr_matrix,
                n: int = K, chunk: int = 1024) -> np.ndarray:
    """Top-n anime per user (rows of `seen`), best first, scored a chunk of users at a time so memory stays at
    chunk × anime. Seen = stored in the user's row of `seen`: its structure, so an entry stored with weight 0
    (a watched row counting 0) is still never listed."""
    users = np.asarray(users)
    result = np.empty((len(users), min(n, seen.shape[1])), dtype=np.int64)
    for start in range(0, len(users), chunk):
        block = users[start:start + chunk]
        rows = seen[block]
        scores = np.asarray(scores_for(block))
        with threads_for(len(block)):
            result[start:start + len(block)] = top_n_unseen(scores, rows.indptr, rows.indices, result.shape[1])
    return result
