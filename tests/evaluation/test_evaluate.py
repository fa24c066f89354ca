import math

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp

from pipeline.evaluation.evaluate import fit_bias_model
from pipeline.metrics import Scores, mae, ranking_report, rmse
from pipeline.top_n import top_n_lists


def test_rmse_and_mae_follow_their_definitions():
    rng = np.random.default_rng(0)
    actual, predicted = rng.integers(1, 11, 50), rng.uniform(1, 10, 50)
    squared = [(a - p) ** 2 for a, p in zip(actual, predicted, strict=True)]
    assert rmse(actual, predicted) == pytest.approx(math.sqrt(sum(squared) / len(squared)))
    assert mae(actual, predicted) == pytest.approx(sum(abs(a - p) for a, p in zip(actual, predicted, strict=True)) / 50)
    assert rmse(actual, actual) == 0.0


def _biased_ratings(rng, n_users=200, n_anime=150, n=20_000):
    users, anime = rng.integers(0, n_users, n), rng.integers(0, n_anime, n)
    user_bias, anime_bias = rng.normal(0, 1, n_users), rng.normal(0, 1, n_anime)
    ratings = np.clip(np.round(6 + user_bias[users] + anime_bias[anime] + rng.normal(0, 0.5, n)), 1, 10)
    return pa.table({"user_index": users, "anime_index": anime, "rating": ratings.astype(np.int16)})


def test_bias_model_recovers_biases_and_beats_global_mean():
    rng = np.random.default_rng(1)
    train, test = _biased_ratings(rng), _biased_ratings(np.random.default_rng(1))
    model = fit_bias_model(train, 200, 150)
    actual = test["rating"].to_numpy()
    bias_rmse = rmse(actual, model.predict(test["user_index"].to_numpy(), test["anime_index"].to_numpy()))
    mean_rmse = rmse(actual, np.full(len(actual), model.global_mean))
    assert bias_rmse < 0.7 * mean_rmse


def test_rmse_standard_error_matches_the_bootstrap():
    rng = np.random.default_rng(4)
    actual, predicted = rng.integers(1, 11, 4000), rng.normal(7, 2, 4000)
    scores = Scores.of(actual, predicted)
    resampled = [rmse(actual[i], predicted[i]) for i in (rng.integers(0, 4000, 4000) for _ in range(400))]
    assert scores.rmse_stderr == pytest.approx(np.std(resampled), rel=0.15)


def _reference_ranking(top, users, relevant_pairs, k):
    """Straightforward per-user loops, to check the vectorized metrics against."""
    precision, recall, ndcg = [], [], []
    for row, user in enumerate(users):
        relevant = {a for u, a in relevant_pairs if u == user}
        gains = [1.0 if anime in relevant else 0.0 for anime in top[row][:k]]
        precision.append(sum(gains) / k)
        recall.append(sum(gains) / len(relevant))
        dcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(gains))
        ideal = sum(1 / math.log2(rank + 2) for rank in range(min(len(relevant), k)))
        ndcg.append(dcg / ideal)
    return np.mean(precision), np.mean(recall), np.mean(ndcg), np.std(ndcg) / np.sqrt(len(ndcg))


def test_ranking_metrics_match_a_reference_implementation():
    rng = np.random.default_rng(3)
    n_users, n_anime, k = 40, 30, 10
    users = rng.permutation(n_users) * 3 + 1  # in no order, with gaps
    top = np.stack([rng.permutation(n_anime)[:k] for _ in users])
    pairs = {(int(u), int(a)) for u in users for a in rng.choice(n_anime, rng.integers(1, 6), replace=False)}
    relevant = pa.table({"user_index": [u for u, _ in sorted(pairs)], "anime_index": [a for _, a in sorted(pairs)]})
    report = ranking_report(top, users, relevant, n_anime)
    expected = _reference_ranking(top, users, sorted(pairs), k)
    assert (report.precision, report.recall, report.ndcg, report.ndcg_stderr) == pytest.approx(expected)
    assert report.coverage == pytest.approx(len(np.unique(top)) / n_anime)
    overlaps = [len(set(top[i]) & set(top[j])) / k for i in range(n_users) for j in range(i + 1, n_users)]
    assert report.personalization == pytest.approx(1 - np.mean(overlaps))


def test_identical_lists_have_zero_personalization():
    top = np.tile(np.arange(10), (5, 1))
    relevant = pa.table({"user_index": np.arange(5), "anime_index": np.zeros(5, dtype=np.int64)})
    report = ranking_report(top, np.arange(5), relevant, 50)
    assert report.personalization == pytest.approx(0.0) and report.coverage == pytest.approx(10 / 50)
    assert report.recall == 1.0 and report.ndcg == 1.0


def test_places_left_empty_count_as_misses_and_never_as_anime():
    top = np.array([[3, 1, -1, -1], [2, 3, 0, 1]])  # the first user had only two unseen anime
    relevant = pa.table({"user_index": [0, 1], "anime_index": [1, 0]})
    report = ranking_report(top, np.arange(2), relevant, 6)
    assert report.precision == pytest.approx((1 / 4 + 1 / 4) / 2)
    assert report.coverage == pytest.approx(4 / 6)  # anime 0..3 listed; -1 is not an anime
    assert report.personalization == pytest.approx(1 - 2 / 4)  # the two lists share anime 1 and 3


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
