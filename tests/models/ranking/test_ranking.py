"""The ranking model (EASE on rating-weighted interactions): its linear algebra, what it learns, how λ is chosen,
and how it serves people who are not in the data."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import scipy.sparse as sp

from pipeline.data.ingest import ingest
from pipeline.matrix.utility_matrix import build_utility_matrix
from pipeline.models.ranking.ease import (
    InteractionWeights,
    ItemToItemModel,
    gram_matrix,
    invert_spd_in_place,
    keep_strongest,
    solve_item_weights,
    top_n_for_history,
)
from pipeline.models.ranking.fit import train_ranking_model
from pipeline.validation.validate import validate


@pytest.fixture(scope="module")
def matrix(small_data, tmp_path_factory):
    from pipeline.settings import Settings

    settings = Settings(data_root=tmp_path_factory.mktemp("ranking") / "data")
    return build_utility_matrix(validate(ingest(small_data), settings), settings)


def _random_history(rng, n_users=300, n_anime=120, density=0.08) -> sp.csr_matrix:
    mask = rng.random((n_users, n_anime)) < density
    return sp.csr_matrix(np.where(mask, rng.uniform(0.1, 1.0, (n_users, n_anime)), 0.0).astype(np.float32))


def test_gram_matrix_equals_the_dense_product_across_column_blocks():
    history = _random_history(np.random.default_rng(0))
    dense = history.toarray().astype(np.float64)
    np.testing.assert_allclose(gram_matrix(history, block=17), dense.T @ dense, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inverse_in_place_matches_numpy(dtype):
    rng = np.random.default_rng(1)
    factors = rng.standard_normal((300, 500))
    matrix = (factors @ factors.T / 500 + 0.5 * np.eye(300)).astype(dtype)
    expected = np.linalg.inv(matrix.astype(np.float64))
    work = matrix.copy()
    invert_spd_in_place(work, block=37)  # mirrored in blocks of odd sizes
    np.testing.assert_allclose(work, expected, rtol=1e-4, atol=1e-5)
    assert np.array_equal(work, work.T)


def test_inverse_of_a_matrix_that_is_not_positive_definite_fails():
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
        invert_spd_in_place(np.array([[1.0, 2.0], [2.0, 1.0]], dtype=np.float32))


def test_item_weights_meet_the_ease_optimality_conditions():
    """B minimises ‖X − XB‖² + λ‖B‖² with diag(B) = 0 iff diag(B) = 0 and (XᵀX + λI)B − XᵀX is diagonal
    (the Lagrange multipliers of the constraint): checked on the unpruned solution."""
    history = _random_history(np.random.default_rng(2))
    gram = gram_matrix(history)
    weights, diagonal = solve_item_weights(gram, l2=5.0, neighbours=gram.shape[0])
    b = weights.toarray().astype(np.float64)
    assert np.all(np.diag(b) == 0)
    residual = (gram + 5.0 * np.eye(len(gram))) @ b - gram
    off_diagonal = residual - np.diag(np.diag(residual))
    assert np.abs(off_diagonal).max() < 1e-3 * np.abs(gram).max()
    np.testing.assert_allclose(diagonal, np.diag(np.linalg.inv(gram + 5.0 * np.eye(len(gram)))), rtol=1e-3)


def test_pruning_keeps_the_strongest_entries_of_each_row():
    dense = np.random.default_rng(3).standard_normal((40, 30)).astype(np.float32)
    pruned = keep_strongest(dense, 4, chunk=7).toarray()
    for row, kept in zip(dense, pruned, strict=True):
        assert np.count_nonzero(kept) == 4
        assert set(np.flatnonzero(kept)) == set(np.argsort(-np.abs(row))[:4])
        np.testing.assert_array_equal(kept[kept != 0], row[kept != 0])


def test_interaction_weights_grow_with_the_rating_and_count_watched_rows():
    weights = InteractionWeights(rating_min=1, rating_max=10, power=2.0, unrated_weight=0.4, unrated_value=-1)
    values = weights.of(np.array([1, 3, 8, 9, 10, -1]))
    assert np.all(np.diff(values[:5]) > 0) and values[4] == pytest.approx(1.0) and values[5] == pytest.approx(0.4)
    five_point = InteractionWeights(rating_min=1, rating_max=5, power=1.0, unrated_weight=0.5, unrated_value=-1)
    assert five_point.of(np.array([5, 1])) == pytest.approx([1.0, 0.2])  # any scale: the top counts 1


def test_one_persons_row_is_their_row_of_the_users_matrix():
    weights = InteractionWeights(rating_min=1, rating_max=10, power=2.0, unrated_weight=0.4, unrated_value=-1)
    anime, ratings = np.array([7, 2, 9, 2]), np.array([8, -1, 3, 10])  # in no order, anime 2 listed twice
    row = weights.row(anime, ratings, 12)
    users = weights.matrix(pa.table({"user_index": np.zeros(4, np.int32), "anime_index": anime, "rating": ratings}),
                           1, 12)
    np.testing.assert_array_equal(row.toarray(), users.toarray())
    assert row.indices.tolist() == [2, 7, 9]


def test_ranking_model_recovers_planted_taste_far_better_than_popularity(matrix, settings):
    """The generated users watch what their hidden taste favours: the lists must find it."""
    from pipeline.evaluation.evaluate import judged_users
    from pipeline.metrics import ranking_report

    fit = train_ranking_model(matrix, settings.ranking, settings.unrated_value, settings.relevance_threshold)
    users, relevant = judged_users(matrix, settings.relevance_threshold)
    history = fit.model.interaction.matrix(matrix.interactions(("train", "validation"), settings.unrated_value),
                                           matrix.n_users, matrix.n_anime)
    served = ranking_report(top_n_for_history(fit.model, history[users]), users, relevant, matrix.n_anime)
    popular = np.argsort(-np.bincount(matrix.split("train")["anime_index"].to_numpy(), minlength=matrix.n_anime))
    scores = np.tile(-np.argsort(popular).astype(float), (len(users), 1))
    rows, anime = history[users].nonzero()
    scores[rows, anime] = -np.inf
    popularity = ranking_report(np.argsort(-scores, axis=1)[:, :10], users, relevant, matrix.n_anime)
    assert served.ndcg > 1.5 * popularity.ndcg and served.precision > 1.5 * popularity.precision
    assert served.coverage > 2 * popularity.coverage


def test_lists_never_hold_a_rated_or_watched_anime(matrix, settings):
    fit = train_ranking_model(matrix, settings.ranking, settings.unrated_value, settings.relevance_threshold)
    known = matrix.interactions(("train", "validation", "test"), settings.unrated_value)
    history = fit.model.interaction.matrix(known, matrix.n_users, matrix.n_anime)
    top = top_n_for_history(fit.model, history, n=25)
    seen = {(u, a) for u, a in zip(known["user_index"].to_numpy(), known["anime_index"].to_numpy(), strict=True)}
    assert not any((user, anime) in seen for user, row in enumerate(top) for anime in row)
    unseen = matrix.n_anime - np.diff(history.indptr)
    assert np.all((top >= 0).sum(axis=1) == np.minimum(unseen, 25))  # shorter lists only when nothing is left
    assert unseen.min() < 25  # (this data has such a user)
    assert pc.sum(pc.equal(known["rating"], settings.unrated_value)).as_py() > 0  # watched rows were among `seen`


def test_watched_rows_counting_zero_are_still_never_listed(matrix, settings):
    config = settings.ranking.model_copy(update={"unrated_weight": 0.0, "l2_max_trials": 1})
    model = train_ranking_model(matrix, config, settings.unrated_value, settings.relevance_threshold).model
    known = matrix.interactions(("train", "validation"), settings.unrated_value)
    watched = known.filter(pc.equal(known["rating"], settings.unrated_value))
    history = model.interaction.matrix(known, matrix.n_users, matrix.n_anime)
    users = np.unique(watched["user_index"].to_numpy())
    top = top_n_for_history(model, history[users], n=matrix.n_anime)  # every anime they could be shown
    listed = {(int(user), int(anime)) for user, row in zip(users, top, strict=True) for anime in row if anime >= 0}
    pairs = set(zip(watched["user_index"].to_numpy().tolist(), watched["anime_index"].to_numpy().tolist(),
                    strict=True))
    assert watched.num_rows > 0 and not listed & pairs


def test_lambda_is_walked_on_validation_and_the_best_kept(matrix, settings):
    config = settings.ranking.model_copy(update={"relative_l2": 400.0, "l2_step": 4.0, "l2_max_trials": 5})
    fit = train_ranking_model(matrix, config, settings.unrated_value, settings.relevance_threshold)
    tried = [trial.relative_l2 for trial in fit.trials]
    assert tried[:2] == [400.0, 1600.0] and len(tried) == 5
    assert tried[2:] == [400.0 / 4, 400.0 / 16, 400.0 / 64]  # far too strong: the walk turns down
    assert fit.chosen.validation.ndcg == max(t.validation.ndcg for t in fit.trials)
    assert fit.chosen.relative_l2 < 400.0
    history = fit.model.interaction.matrix(matrix.interactions(("train",), settings.unrated_value), matrix.n_users,
                                           matrix.n_anime)
    mean_count = history.power(2).sum() / matrix.n_anime  # the mean of diag(XᵀX) of the validation fit
    assert fit.trials[0].l2 == pytest.approx(400.0 * mean_count, rel=1e-4)
    final = fit.model.interaction.matrix(matrix.interactions(("train", "validation"), settings.unrated_value),
                                         matrix.n_users, matrix.n_anime)
    assert fit.model.l2 == pytest.approx(fit.chosen.relative_l2 * final.power(2).sum() / matrix.n_anime, rel=1e-4)
    fixed = train_ranking_model(matrix, config.model_copy(update={"l2_max_trials": 1}), settings.unrated_value,
                                settings.relevance_threshold)
    assert [t.relative_l2 for t in fixed.trials] == [400.0]


def test_someone_new_gets_the_list_a_retrain_with_them_would_give(matrix, settings):
    """Scoring a new user from their history (no retraining) against refitting with that user included.

    Tolerance: adding one user changes XᵀX by their own outer product only, so at least 8 of the 10 anime
    must agree for each of these users, and the whole list agrees on average for most."""
    config = settings.ranking  # the same λ for both fits: 2 × the mean interactions per anime of the full data
    weights = InteractionWeights(matrix.scale.minimum, matrix.scale.maximum, config.rating_weight_power,
                                 config.unrated_weight, settings.unrated_value)
    history = weights.matrix(matrix.interactions(("train", "validation"), settings.unrated_value), matrix.n_users,
                             matrix.n_anime)
    busiest = np.argsort(-np.diff(history.indptr))[:5]
    l2 = config.relative_l2 * history.power(2).sum() / matrix.n_anime
    with_everyone = ItemToItemModel(*solve_item_weights(gram_matrix(history), l2, config.neighbours), weights, l2)
    overlaps = []
    for user in busiest:
        others = history[np.setdiff1d(np.arange(history.shape[0]), [user])]
        without = ItemToItemModel(*solve_item_weights(gram_matrix(others), l2, config.neighbours), weights, l2)
        new = top_n_for_history(without, history[[user]])[0]
        retrained = top_n_for_history(with_everyone, history[[user]])[0]
        overlaps.append(len(set(new) & set(retrained)))
    assert min(overlaps) >= 8 and np.mean(overlaps) >= 9


def test_saved_model_loads_back_identical(matrix, settings, tmp_path):
    model = train_ranking_model(matrix, settings.ranking, settings.unrated_value, settings.relevance_threshold).model
    loaded = ItemToItemModel.load(model.save(tmp_path / "ranking"))
    assert (loaded.weights != model.weights).nnz == 0 and loaded.l2 == model.l2
    np.testing.assert_array_equal(loaded.precision_diagonal, model.precision_diagonal)
    assert loaded.interaction == model.interaction
    history = model.interaction.matrix(pa.table({"user_index": [0, 0], "anime_index": [1, 2], "rating": [9, -1]}),
                                       1, model.n_anime)
    np.testing.assert_array_equal(loaded.scores(None, history), model.scores(None, history))


def test_scores_are_the_history_times_the_weights(matrix, settings):
    model = train_ranking_model(matrix, settings.ranking, settings.unrated_value, settings.relevance_threshold).model
    history = model.interaction.matrix(matrix.interactions(("train",), settings.unrated_value), matrix.n_users,
                                       matrix.n_anime)
    expected = (history @ model.weights).toarray()
    expected[:, model.precision_diagonal <= 0] = -np.inf
    np.testing.assert_array_equal(model.scores(None, history), expected)  # scipy's product, to the bit
    assert model.scores(None, history[:0]).shape == (0, matrix.n_anime)


def test_past_max_anime_only_the_most_watched_are_modelled(matrix, settings):
    config = settings.ranking.model_copy(update={"max_anime": 60, "l2_max_trials": 1})
    model = train_ranking_model(matrix, config, settings.unrated_value, settings.relevance_threshold).model
    history = model.interaction.matrix(matrix.interactions(("train",), settings.unrated_value), matrix.n_users,
                                       matrix.n_anime)
    most_watched = set(np.argsort(-np.diff(history.tocsc().indptr), kind="stable")[:60])
    coo = model.weights.tocoo()
    assert set(coo.row) <= most_watched and set(coo.col) <= most_watched and len(set(coo.row)) > 50
    top = top_n_for_history(model, history[:50])
    assert set(top[top >= 0].ravel()) <= most_watched
