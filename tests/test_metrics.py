"""The metrics every stage judges by: RMSE and MAE with their standard errors, and the top-10 list metrics against
straightforward reference loops."""

import math

import numpy as np
import pyarrow as pa
import pytest

from pipeline.metrics import Scores, mae, ranking_report, rmse


def test_rmse_and_mae_follow_their_definitions():
    rng = np.random.default_rng(0)
    actual, predicted = rng.integers(1, 11, 50), rng.uniform(1, 10, 50)
    squared = [(a - p) ** 2 for a, p in zip(actual, predicted, strict=True)]
    assert rmse(actual, predicted) == pytest.approx(math.sqrt(sum(squared) / len(squared)))
    assert mae(actual, predicted) == pytest.approx(sum(abs(a - p) for a, p in zip(actual, predicted, strict=True)) / 50)
    assert rmse(actual, actual) == 0.0


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
