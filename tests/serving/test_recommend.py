"""Recommendations from both trained models: exclusions, filters, batch scoring, reasons, someone new,
similarity, lookup."""

import inspect

import numpy as np
import pyarrow.compute as pc
import pytest
from conftest import SMALL_SPEC

from pipeline.data.generate import generate_demo_dataset
from pipeline.data.ingest import ingest
from pipeline.errors import UnknownIdError
from pipeline.matrix.utility_matrix import build_utility_matrix
from pipeline.models.interface import AnimeModel
from pipeline.models.ranking.fit import train_ranking_model
from pipeline.models.rating.train import predict_scaled, train_model
from pipeline.serving.bundle import load_bundle, save_bundle
from pipeline.serving.catalog import normalize_title
from pipeline.serving.presentation import recommend, recommend_from_ratings, similar_anime, similar_users
from pipeline.serving.recommend import Recommender
from pipeline.settings import Settings, TrainingConfig
from pipeline.validation.validate import validate

pytestmark = pytest.mark.xdist_group("recommend")  # one worker trains each kind of model once


@pytest.fixture(scope="module", params=["feature_mf", "biased_mf", "seed_cosine"])
def trained(tmp_path_factory, request):
    root = tmp_path_factory.mktemp("recommend")
    data = generate_demo_dataset(root / "demo", SMALL_SPEC)
    settings = Settings(data_root=root / "data", training=TrainingConfig(
        architecture=request.param, embedding_dim=32, batch_size=512, epochs=20, learning_rate=0.02,
        early_stopping_patience=2))
    matrix = build_utility_matrix(validate(ingest(data), settings), settings)
    fit = train_model(matrix, settings.training)
    ranking = train_ranking_model(matrix, settings.ranking, settings.unrated_value, settings.relevance_threshold).model
    return matrix, fit.model, Recommender.from_matrix(fit.model, ranking, matrix, settings.unrated_value,
                                                      features=fit.features)


def _seen(recommender, user_id):
    return set(recommender.anime.ids[recommender.known_anime(recommender.users.index(user_id))])


def test_recommendations_exclude_rated_and_watched_anime_and_follow_the_ranking_model(trained):
    matrix, _, recommender = trained
    watched_only = recommender.known.filter(pc.equal(recommender.known["rating"], -1))
    user_with_unrated = int(recommender.users.ids[watched_only["user_index"][0].as_py()])
    for user_id in (int(recommender.users.ids[0]), user_with_unrated):
        top = recommend(recommender, user_id, n=15)
        assert len(top) == 15 and not set(top["anime_id"]) & _seen(recommender, user_id)
        index = recommender.users.index(user_id)
        ranking_scores = recommender.ranking_scores(np.array([index]))[0]
        listed = ranking_scores[[recommender.anime.index(a) for a in top["anime_id"]]]
        assert np.all(np.diff(listed) <= 0)  # listed by the ranking model, best first
        unseen = np.setdiff1d(np.arange(len(recommender.anime.ids)), recommender.known_anime(index))
        assert listed[-1] >= np.sort(ranking_scores[unseen])[-15]  # and nothing unseen scored higher was left out
        predicted = recommender.predict_pairs(np.full(15, user_id), top["anime_id"].to_numpy())
        np.testing.assert_allclose(top["predicted_rating"], predicted, atol=1e-3)  # the rating model's rating
    unrated_anime = int(recommender.anime.ids[watched_only["anime_index"][0].as_py()])
    assert unrated_anime in _seen(recommender, user_with_unrated)


def test_scores_match_the_keras_model(trained):
    matrix, model, recommender = trained
    test = matrix.split("test")
    keras_scaled = predict_scaled(model, test["user_index"].to_numpy(), test["anime_index"].to_numpy())
    np.testing.assert_allclose(recommender.predict_pairs(test["user_id"].to_numpy(), test["anime_id"].to_numpy()),
                               matrix.scale.unscale(keras_scaled), atol=1e-4)
    assert test.num_rows > 2 * 397  # a chunk size that leaves a partial last chunk
    np.testing.assert_allclose(recommender.rating.predict(test["user_index"].to_numpy(), test["anime_index"].to_numpy(),
                                                          chunk=397), matrix.scale.unscale(keras_scaled), atol=1e-4)


def test_filters_restrict_the_candidates(trained):
    _, _, recommender = trained
    user_id = int(recommender.users.ids[3])
    movies = recommend(recommender, user_id, n=5, anime_type="movie")
    assert (movies["type"] == "Movie").all() and len(movies) == 5
    action = recommend(recommender, user_id, n=5, genre="action")
    assert action["genre"].str.contains("Action").all()
    counts = recommender.rating_counts()
    threshold = int(np.quantile(counts, 0.9))
    popular = recommend(recommender, user_id, n=5, min_ratings=threshold)
    assert all(counts[recommender.anime.index(a)] >= threshold for a in popular["anime_id"])


def test_batch_scoring_in_chunks_matches_one_user_at_a_time(trained):
    _, _, recommender = trained
    users = np.arange(0, len(recommender.users.ids), 7)
    batch = recommender.top_n_batch(users, 10, chunk_size=16)
    for row, index in enumerate(users[:20]):
        single = recommend(recommender, int(recommender.users.ids[index]), n=10)["anime_id"].to_numpy()
        assert recommender.anime.ids[batch[row]].tolist() == single.tolist()


def test_the_rating_models_scores_list_what_its_predicted_ratings_list(trained):
    _, _, recommender = trained
    users = np.arange(0, len(recommender.users.ids), 3)
    by_rating = recommender.top_n_batch(users, 10, scores_for=recommender.rating.rating_scores)
    by_order = recommender.top_n_batch(users, 10, scores_for=recommender.rating.scores)
    ratings = recommender.rating.rating_scores(users)
    rows = np.arange(len(users))[:, None]
    # the same predicted ratings, best first (anime whose outputs tie may trade places)
    np.testing.assert_allclose(ratings[rows, by_order], ratings[rows, by_rating], rtol=1e-6)
    assert np.all(np.diff(ratings[rows, by_order], axis=1) <= 1e-6)


def test_both_served_models_share_the_model_interface_and_save_and_load_alike(trained, tmp_path):
    _, _, recommender = trained
    users = np.arange(0, len(recommender.users.ids), 4)
    history = recommender.ranking.interaction.matrix(recommender.known, len(recommender.users.ids),
                                                     len(recommender.anime.ids))[users]
    for model in (recommender.rating, recommender.ranking):
        for method in ("scores", "save", "load"):  # isinstance alone checks the names only: the signatures too
            assert (list(inspect.signature(getattr(type(model), method)).parameters)
                    == list(inspect.signature(getattr(AnimeModel, method)).parameters)), (type(model), method)
        scores = model.scores(users, history)
        assert scores.shape == (len(users), len(recommender.anime.ids))
        loaded = type(model).load(model.save(tmp_path / type(model).__name__))
        np.testing.assert_array_equal(loaded.scores(users, history), scores)


def test_fold_in_of_a_training_user_recovers_their_predicted_ratings(trained):
    matrix, _, recommender = trained
    train = matrix.split("train")
    heavy_users = np.argsort(-np.bincount(train["user_index"].to_numpy()))[:5]
    for index in heavy_users:
        rows = train.filter(pc.equal(train["user_index"], int(index)))
        vector, bias = recommender.fold_in(rows["anime_id"].to_numpy(), rows["rating"].to_numpy())
        own_vector = recommender.rating.user_vectors[index]
        assert float(vector @ own_vector) / np.linalg.norm(vector) / np.linalg.norm(own_vector) > 0.8
        folded = recommender.rating.score_users(vector[None, :], np.array([bias]))[0]
        own = recommender.rating.rating_scores(np.array([index]))[0]
        assert np.corrcoef(folded, own)[0, 1] > 0.9  # the same taste over every anime


def test_a_bundle_keeps_the_training_l2_and_fold_in_uses_it(trained, tmp_path):
    matrix, model, recommender = trained
    rows = matrix.split("train").slice(0, 40)
    loaded = {l2: load_bundle(save_bundle(model, recommender.ranking, matrix, recommender.unrated_value, l2,
                                          tmp_path / str(l2))) for l2 in (0.0, 0.5)}
    assert {l2: bundle.rating.l2 for l2, bundle in loaded.items()} == {0.0: 0.0, 0.5: 0.5}
    vectors = {l2: bundle.fold_in(rows["anime_id"].to_numpy(), rows["rating"].to_numpy())[0]
               for l2, bundle in loaded.items()}
    if recommender.rating.kind == "biased":  # squared error + L2: a stronger L2 pulls the vector toward zero
        assert np.linalg.norm(vectors[0.5]) < np.linalg.norm(vectors[0.0])
    else:  # the seed model's cosine has no L2 to apply
        np.testing.assert_allclose(vectors[0.5], vectors[0.0])


def test_someone_new_with_a_users_history_gets_that_users_list_and_reasons(trained):
    _, _, recommender = trained
    index = int(np.argmax(np.bincount(recommender.known["user_index"].to_numpy())))
    mine = recommender.known.filter(pc.equal(recommender.known["user_index"], index))
    new = recommend_from_ratings(recommender, recommender.anime.ids[mine["anime_index"].to_numpy()],
                                             mine["rating"].to_numpy(), 10)
    known = recommend(recommender, int(recommender.users.ids[index]), 10)
    assert new["anime_id"].tolist() == known["anime_id"].tolist()  # the ranking model needs no retraining
    assert new["because_you_watched"].tolist() == known["because_you_watched"].tolist()


def test_because_you_watched_names_the_users_own_anime_that_added_most(trained):
    _, _, recommender = trained
    for index in (0, 5, 17):
        user_id = int(recommender.users.ids[index])
        top = recommend(recommender, user_id, 10)
        own = recommender.known_anime(index)
        names = recommender.catalog.anime["name"].reindex(recommender.anime.ids)
        weights = recommender.ranking.weights.toarray()
        history = recommender._known_matrix[index].toarray()[0]
        for anime_id, reasons in zip(top["anime_id"], top["because_you_watched"], strict=True):
            target = recommender.anime.index(int(anime_id))
            contribution = history[own] * weights[own, target]  # brute force over the whole history
            expected = [names.iloc[own[j]] for j in np.argsort(-contribution, kind="stable")[:2]
                        if contribution[j] > 0]
            assert reasons.split("; ") == expected if expected else reasons == ""


def test_similar_anime_returns_itself_first_and_is_symmetric(trained):
    _, _, recommender = trained
    a = int(recommender.anime.ids[0])
    with_self = similar_anime(recommender, a, n=5, include_self=True)
    assert with_self["anime_id"].iloc[0] == a and with_self["similarity"].iloc[0] == pytest.approx(1.0)
    neighbours = similar_anime(recommender, a, n=5)
    assert a not in set(neighbours["anime_id"]) and neighbours["similarity"].is_monotonic_decreasing
    full = len(recommender.anime.ids)
    for b in neighbours["anime_id"]:
        ab = similar_anime(recommender, a, n=full).set_index("anime_id")["similarity"][b]
        ba = similar_anime(recommender, int(b), n=full).set_index("anime_id")["similarity"][a]
        assert ab == pytest.approx(ba, rel=1e-4)


def test_similar_users_show_liked_genres(trained):
    _, _, recommender = trained
    neighbours = similar_users(recommender, int(recommender.users.ids[0]), n=3)
    assert len(neighbours) == 3 and neighbours["similarity"].is_monotonic_decreasing
    assert int(recommender.users.ids[0]) not in set(neighbours["user_id"])
    assert all(likes for likes in neighbours["likes"])


def test_name_lookup_survives_entities_case_and_punctuation(trained):
    _, _, recommender = trained
    modelled = recommender.catalog.anime.reindex(recommender.anime.ids)
    name = modelled["name"][modelled["name"].str.contains("'")].iloc[0]
    anime_id = int(modelled.index[modelled["name"] == name][0])
    assert recommender.find_anime(name.upper().replace("'", "&#039;")) == anime_id
    assert recommender.find_anime(f"  {name.replace(chr(39), '')}!! ") == anime_id
    assert recommender.find_anime(str(anime_id)) == anime_id
    assert normalize_title("Hero&#039;s  Journey!") == normalize_title("HEROS journey")
    with pytest.raises(UnknownIdError, match="did you mean"):
        recommender.find_anime(name[:-3] + "zzq")
    with pytest.raises(UnknownIdError, match=r"no anime named 'Qxjvw Pfft'; did you mean: '[^']+'"):
        recommender.find_anime("Qxjvw Pfft")  # like no title at all: still the nearest names


def test_unknown_ids_give_one_clear_line(trained):
    _, _, recommender = trained
    for call in (lambda: recommend(recommender, 987_654_321), lambda: similar_anime(recommender, 987_654_321),
                 lambda: recommender.fold_in(np.array([987_654_321]), np.array([8]))):
        with pytest.raises(UnknownIdError) as error:
            call()
        assert "987654321" in str(error.value) and "\n" not in str(error.value)
