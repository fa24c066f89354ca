"""Alternating least squares for the biased rating model, with its L2 chosen on validation along a path.

Why: with the anime side fixed, each user's row (embedding + bias) is a small ridge regression, and the other way
round; solving them in turn converges in a few sweeps where gradient steps need dozens of epochs. Each row's
system (Σ zzᵀ + λ·n I) x = Σ z·t is solved by a few conjugate-gradient steps started from the row's last value,
so a sweep costs O(ratings × dim), never dim² per rating, and the rows are solved in parallel (numba).

The L2 (per rating, as in the sparse Adagrad trainer: a row with n ratings is penalized λ·n, "ALS-WR") is not
fixed: the fit starts at `l2`, converges, then divides λ by `l2_step` and goes on from the factors it has, for as
long as validation RMSE improves. The warm start from the more regularized solution is what keeps the large
embedding from fitting noise at the small λ values real data need.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from pipeline.settings import TrainingConfig


@dataclass
class Factors:
    """The biased model's parameters: prediction = mean + user_bias + anime_bias + users · anime (scaled)."""

    users: np.ndarray  # (n_users, dim) float32
    user_bias: np.ndarray  # (n_users,) float32
    anime: np.ndarray  # (n_anime, dim) float32
    anime_bias: np.ndarray  # (n_anime,) float32
    mean: float

    def copy(self) -> Factors:
        return Factors(self.users.copy(), self.user_bias.copy(), self.anime.copy(), self.anime_bias.copy(), self.mean)

    def predict(self, users: np.ndarray, anime: np.ndarray) -> np.ndarray:
        """Scaled predictions clipped to [0, 1], as the served model gives them."""
        return _predict_clipped(np.ascontiguousarray(users, np.int32), np.ascontiguousarray(anime, np.int32),
                                self.users, self.user_bias, self.anime, self.anime_bias, np.float32(self.mean))


@dataclass(frozen=True)
class RatingsByRow:
    """The train ratings grouped by user (CSR) and by anime (CSC), for the two halves of a sweep."""

    by_user: sp.csr_matrix
    by_anime: sp.csc_matrix

    @classmethod
    def of(cls, split: pa.Table, n_users: int, n_anime: int) -> RatingsByRow:
        by_user = sp.csr_matrix((split["scaled_rating"].to_numpy().astype(np.float32),
                                 (split["user_index"].to_numpy(), split["anime_index"].to_numpy())),
                                shape=(n_users, n_anime))
        by_user.sum_duplicates()  # none in a built matrix (one rating per pair); keeps the solves exact if any
        return cls(by_user, by_user.tocsc())


@numba.njit(fastmath=True, cache=True)
def _residual(start, end, indices, targets, fixed, fixed_bias, x, reg, mean):  # pragma: no cover
    """b − A x of one row's normal equations, over its ratings start:end."""
    k = fixed.shape[1]
    residual = np.zeros(k + 1, np.float32)
    for j in range(start, end):
        i = indices[j]
        error = targets[j] - mean - fixed_bias[i] - x[k]
        for f in range(k):
            error -= fixed[i, f] * x[f]
        for f in range(k):
            residual[f] += error * fixed[i, f]
        residual[k] += error
    for f in range(k + 1):
        residual[f] -= reg * x[f]
    return residual


@numba.njit(fastmath=True, cache=True)
def _times_normal_matrix(start, end, indices, fixed, direction, reg, product):  # pragma: no cover
    """product ← A · direction, with A = Σ_j z_j z_jᵀ + reg·I over the row's ratings start:end."""
    k = fixed.shape[1]
    for f in range(k + 1):
        product[f] = reg * direction[f]
    for j in range(start, end):
        i = indices[j]
        along = direction[k]
        for f in range(k):
            along += fixed[i, f] * direction[f]
        for f in range(k):
            product[f] += along * fixed[i, f]
        product[k] += along


@numba.njit(fastmath=True, cache=True)
def _conjugate_gradient(start, end, indices, fixed, x, residual, reg, cg_steps):  # pragma: no cover
    """At most `cg_steps` conjugate-gradient steps on A x = b from x (updated in place), given b − A x."""
    direction = residual.copy()
    norm = np.float32(0.0)
    for f in range(x.size):
        norm += residual[f] * residual[f]
    product = np.empty(x.size, np.float32)
    for _ in range(cg_steps):
        if norm < 1e-12:
            break
        _times_normal_matrix(start, end, indices, fixed, direction, reg, product)
        curvature = np.float32(0.0)
        for f in range(x.size):
            curvature += direction[f] * product[f]
        alpha = norm / curvature
        new_norm = np.float32(0.0)
        for f in range(x.size):
            x[f] += alpha * direction[f]
            residual[f] -= alpha * product[f]
            new_norm += residual[f] * residual[f]
        beta = new_norm / norm
        for f in range(x.size):
            direction[f] = residual[f] + beta * direction[f]
        norm = new_norm


@numba.njit(parallel=True, fastmath=True, cache=True)
def _solve_rows(indptr, indices, targets, fixed, fixed_bias, rows, bias, l2, mean, cg_steps):  # pragma: no cover
    """For every row r (in parallel): x = [rows[r], bias[r]] ← a few CG steps on
    (Σ_j z_j z_jᵀ + λ·n_r I) x = Σ_j z_j (t_j − mean − fixed_bias[i_j]), with z_j = [fixed[i_j], 1]."""
    n, k = rows.shape
    for r in numba.prange(n):
        start, end = indptr[r], indptr[r + 1]
        if end == start:  # no train rating: predict from the other side's bias alone
            rows[r, :] = 0.0
            bias[r] = 0.0
            continue
        reg = np.float32(l2 * (end - start))
        x = np.empty(k + 1, np.float32)
        x[:k] = rows[r]
        x[k] = bias[r]
        residual = _residual(start, end, indices, targets, fixed, fixed_bias, x, reg, mean)
        _conjugate_gradient(start, end, indices, fixed, x, residual, reg, cg_steps)
        rows[r, :] = x[:k]
        bias[r] = x[k]


@numba.njit(parallel=True, fastmath=True, cache=True)
def _predict_clipped(users, anime, user_rows, user_bias, anime_rows, anime_bias, mean):  # pragma: no cover
    out = np.empty(len(users), np.float32)
    for j in numba.prange(len(users)):
        u, a = users[j], anime[j]
        value = mean + user_bias[u] + anime_bias[a]
        for f in range(user_rows.shape[1]):
            value += user_rows[u, f] * anime_rows[a, f]
        out[j] = min(max(value, np.float32(0.0)), np.float32(1.0))
    return out


def sweep(ratings: RatingsByRow, factors: Factors, l2: float, cg_steps: int) -> None:
    """One alternation, in place: every user's row given the anime, then every anime's row given the users."""
    mean = np.float32(factors.mean)
    by_user, by_anime = ratings.by_user, ratings.by_anime
    _solve_rows(by_user.indptr, by_user.indices, by_user.data, factors.anime, factors.anime_bias, factors.users,
                factors.user_bias, np.float32(l2), mean, cg_steps)
    _solve_rows(by_anime.indptr, by_anime.indices, by_anime.data, factors.users, factors.user_bias, factors.anime,
                factors.anime_bias, np.float32(l2), mean, cg_steps)


def _rmse(factors: Factors, users: np.ndarray, anime: np.ndarray, target: np.ndarray) -> float:
    return float(np.sqrt(np.mean((factors.predict(users, anime) - target) ** 2))) if len(target) else 0.0


def fit_als(train: pa.Table, validation: pa.Table, start: Factors, config: TrainingConfig,
            on_sweep: Callable[[int, dict[str, float]], None]) -> tuple[Factors, dict[str, list[float]]]:
    """Sweeps along the L2 path, at most `config.epochs` in all; returns the factors of the best validation RMSE
    and the per-sweep history. A λ is left once a sweep improves its validation RMSE by less than
    `config.min_improvement` (relative); the path ends when a λ did not improve on the best so far by that much."""
    ratings = RatingsByRow.of(train, len(start.user_bias), len(start.anime_bias))
    columns = [np.ascontiguousarray(t[c].to_numpy()) for t in (train, validation)
               for c in ("user_index", "anime_index", "scaled_rating")]
    train_users, train_anime, train_target, val_users, val_anime, val_target = columns
    factors, best, best_rmse = start, start.copy(), np.inf
    history: dict[str, list[float]] = {"loss": [], "val_loss": [], "rmse": [], "val_rmse": [], "ratings_per_s": [],
                                       "l2": []}
    l2, tolerance = config.l2, 1 - config.min_improvement
    while len(history["loss"]) < config.epochs:
        best_before, rmse_at_l2 = best_rmse, np.inf
        while len(history["loss"]) < config.epochs:
            started = time.perf_counter()
            sweep(ratings, factors, l2, config.cg_steps)
            rate = len(train_target) / (time.perf_counter() - started)
            train_rmse = _rmse(factors, train_users, train_anime, train_target)
            val_rmse = _rmse(factors, val_users, val_anime, val_target)
            logs = {"loss": train_rmse ** 2, "val_loss": val_rmse ** 2, "rmse": train_rmse, "val_rmse": val_rmse,
                    "ratings_per_s": rate, "l2": l2}
            for key, value in logs.items():
                history[key].append(value)
            on_sweep(len(history["loss"]) - 1, logs)
            if val_rmse < best_rmse:
                best, best_rmse = factors.copy(), val_rmse
            converged = val_rmse >= rmse_at_l2 * tolerance
            rmse_at_l2 = min(rmse_at_l2, val_rmse)
            if converged:
                break
        if best_rmse >= best_before * tolerance:
            break
        l2 /= config.l2_step
    return best, history
