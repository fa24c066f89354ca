"""Top-N lists: the n best-scored anime per user that the user has not seen, in chunks of users, on numba's
threads. Shared by the ranking model (its similar-anime lists), serving and the metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numba
import numpy as np
import scipy.sparse as sp

K = 10  # length of the lists every ranking metric judges and a person is shown


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
