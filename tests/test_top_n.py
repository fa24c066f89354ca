"""Top-N lists of unseen anime, and the threads they run on."""

import numpy as np
import pytest
import scipy.sparse as sp

from pipeline.top_n import top_n_lists


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_top_n_lists_match_a_sort_of_every_unseen_candidate(dtype):
    """Best first, ties to the lower index, never a seen (stored, even as 0), −inf or NaN column; −1 pads a row
    with fewer candidates; across chunk boundaries."""
    rng = np.random.default_rng(7)
    n_users, n_anime, n = 37, 60, 10
    scores = rng.integers(0, 12, (n_users, n_anime)).astype(dtype)  # few values: many ties
    if dtype != np.int64:
        scores[rng.random(scores.shape) < 0.1] = -np.inf
        scores[rng.random(scores.shape) < 0.05] = np.nan
    seen = sp.random(n_users, n_anime, density=0.3, format="lil", random_state=3)
    seen[4, :] = 1.0  # a user who has seen everything
    seen = seen.tocsr()
    seen.data[:5] = 0.0  # stored zeros are seen too
    users = rng.permutation(n_users)
    top = top_n_lists(lambda block: scores[block], users, seen, n, chunk=8)
    for row, user in zip(top, users, strict=True):
        seen_here = set(seen[user].indices)
        candidates = [c for c in range(n_anime) if c not in seen_here and scores[user, c] > -np.inf]
        expected = sorted(candidates, key=lambda c: (-scores[user, c], c))[:n]
        assert row.tolist() == expected + [-1] * (n - len(expected))
    broadcast = top_n_lists(lambda block: np.broadcast_to(scores[0], (len(block), n_anime)), users, seen, n)
    assert broadcast.shape == (n_users, n) and (broadcast[users == 4] == -1).all()


def test_a_few_rows_run_on_the_calling_thread_and_the_pool_comes_back():
    import numba

    from pipeline.top_n import threads_for

    threads = numba.get_num_threads()
    with threads_for(1):
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == threads
    with pytest.raises(RuntimeError), threads_for(1):
        raise RuntimeError("the pool is restored even so")
    assert numba.get_num_threads() == threads
    with threads_for(64 * threads):
        assert numba.get_num_threads() == threads
