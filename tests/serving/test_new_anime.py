"""New anime: those of anime.csv that no rating names (the demo data has some: `DemoSpec.new_anime`). The feature
model scores them from their features; lists of them sit beside the ranking model's, with the reason."""

import numpy as np
import pyarrow.compute as pc
import pytest

from pipeline.errors import UnknownIdError
from pipeline.models.rating.feature_model import tower_outputs
from pipeline.serving.bundle import load_bundle, save_bundle
from pipeline.serving.new_anime import genre_taste, new_listing, similar_to_new
from pipeline.serving.presentation import rating_of, recommend_new, similar_anime
from pipeline.serving.recommend import Recommender


@pytest.fixture(scope="module")
def served(small_models):
    matrix, trained, ranking = small_models.matrix, small_models.trained, small_models.ranking.model
    assert trained.features is not None  # the default rating model reads the anime's features
    recommender = Recommender.from_matrix(trained.model, ranking, matrix, -1, features=trained.features)
    return matrix, trained, recommender


def _ratings_of(recommender, index):
    mine = recommender.known.filter(pc.equal(recommender.known["user_index"], index))
    return recommender.anime.ids[mine["anime_index"].to_numpy()], mine["rating"].to_numpy()


def test_new_anime_are_the_catalogs_unrated_ones_scored_from_their_features(served):
    matrix, trained, recommender = served
    catalog = matrix.anime_metadata()["anime_id"].to_numpy()
    expected = np.setdiff1d(catalog, matrix.anime_ids())
    assert len(expected) > 0
    np.testing.assert_array_equal(np.sort(recommender.rating.new_anime_ids), expected)
    vectors, bias = tower_outputs(trained.model, trained.features.rows(recommender.rating.new_anime_ids))
    np.testing.assert_allclose(recommender.rating.new_anime_vectors, vectors, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(recommender.rating.new_anime_bias, bias, rtol=1e-5, atol=1e-6)
    user = int(recommender.users.ids[0])
    predicted = recommender.predict_pairs(np.full(len(expected), user), expected)
    assert np.ptp(predicted) > 0 and not np.any(predicted == recommender.fallback_rating)  # not the train mean
    np.testing.assert_allclose(predicted[0], rating_of(recommender, int(expected[0]), user)["predicted_rating"][0],
                               atol=1e-3)


def test_a_new_list_is_ranked_by_predicted_rating_and_says_why(served):
    _, _, recommender = served
    index = int(np.argmax(np.bincount(recommender.known["user_index"].to_numpy())))
    user = int(recommender.users.ids[index])
    listing = new_listing(recommender, 5, user_id=user)
    assert len(listing.anime_ids) == 5 and np.all(np.diff(listing.predicted_rating) <= 0)
    everything = recommender.predict_pairs(np.full(len(recommender.rating.new_anime_ids), user),
                                           recommender.rating.new_anime_ids)
    assert listing.predicted_rating[0] == pytest.approx(everything.max(), abs=1e-3)
    taste = genre_taste(recommender, *_ratings_of(recommender, index))
    for anime_id, why in zip(listing.anime_ids, listing.reasons, strict=True):
        liked = [g for g in recommender.catalog.card(int(anime_id))["genres"] if taste.get(g, 0) > 0]
        if liked:  # the reason names genres of the anime this user rates above their own mean
            assert why.startswith("you rate ") and why.endswith(" highly")
            assert set(why[len("you rate "):-len(" highly")].split(", ")) <= set(liked)
        else:
            assert why.startswith("predicted from what it is: ")
    table = recommend_new(recommender, 5, user)
    assert table["anime_id"].tolist() == listing.anime_ids.tolist() and table["why"].tolist() == listing.reasons


def test_someone_new_bringing_a_users_ratings_gets_that_users_new_list_and_reasons(served):
    _, _, recommender = served
    index = int(np.argmax(np.bincount(recommender.known["user_index"].to_numpy())))
    ids, ratings = _ratings_of(recommender, index)
    known = new_listing(recommender, 5, user_id=int(recommender.users.ids[index]))
    folded = new_listing(recommender, 5, anime_ids=ids, ratings=ratings)
    assert len(set(known.anime_ids) & set(folded.anime_ids)) >= 3  # fold-in recovers the user's taste
    same = dict(zip(known.anime_ids, known.reasons, strict=True))
    assert all(same[a] == why for a, why in zip(folded.anime_ids, folded.reasons, strict=True) if a in same)


def test_one_anime_asked_for_gets_the_rating_the_lists_show(served):
    _, _, recommender = served
    user, warm = int(recommender.users.ids[3]), int(recommender.anime.ids[7])
    asked = rating_of(recommender, warm, user)
    assert asked["anime_id"].tolist() == [warm] and asked["because_you_watched"].tolist() == [""]
    assert asked["predicted_rating"][0] == pytest.approx(recommender.predict_pairs([user], [warm])[0], abs=1e-3)
    watched_only = rating_of(recommender, warm, anime_ids=np.array([warm]), ratings=np.array([-1]))
    assert np.isfinite(watched_only["predicted_rating"][0])  # nothing rated: the model's answer for no taste
    with pytest.raises(UnknownIdError, match="unknown anime id"):
        rating_of(recommender, 10**9, user)


def test_similar_anime_of_a_new_title_are_the_nearest_by_its_feature_vector(served):
    _, _, recommender = served
    new_id = int(recommender.rating.new_anime_ids[0])
    best, similarity = similar_to_new(recommender, new_id, 5)
    vector = recommender.rating.new_anime_vectors[0]
    direct = recommender.rating.anime_units @ (vector / np.linalg.norm(vector))
    np.testing.assert_allclose(similarity, np.sort(direct)[::-1][:5], rtol=1e-5)
    table = similar_anime(recommender, new_id, 5)
    assert table["anime_id"].tolist() == recommender.anime.ids[best].tolist()
    with pytest.raises(UnknownIdError, match="not a new anime"):
        similar_to_new(recommender, int(recommender.anime.ids[0]))


def test_a_bundle_keeps_the_new_anime(served, tmp_path):
    matrix, trained, recommender = served
    bundle = save_bundle(trained.model, recommender.ranking, matrix, -1, 0.02, tmp_path / "bundle", trained.features)
    loaded = load_bundle(bundle)
    np.testing.assert_array_equal(loaded.rating.new_anime_ids, recommender.rating.new_anime_ids)
    np.testing.assert_allclose(loaded.rating.new_anime_vectors, recommender.rating.new_anime_vectors)
    without = load_bundle(save_bundle(trained.model, recommender.ranking, matrix, -1, 0.02, tmp_path / "plain"))
    assert len(without.rating.new_anime_ids) == 0 and len(new_listing(without, 5, user_id=1).anime_ids) == 0
