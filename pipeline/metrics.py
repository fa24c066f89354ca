"""Metrics shared by training (choices made on validation), evaluation (the test split) and the registry.

Pure functions of predictions and held-out data: RMSE/MAE of ratings, and precision/recall/NDCG@k,
catalog coverage and personalization of top-k lists. Each comes with its standard error over the
held-out rows or users, which the registry uses as the tolerance of a comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from pipeline.top_n import K


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
