"""The monitoring stage's parts on real matrices: which ratings are new to a champion, and Evidently's drift."""

import json

import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest
from conftest import RATING_HEADER, write_csv, write_dataset

from pipeline.data.ingest import ingest
from pipeline.matrix.utility_matrix import build_utility_matrix
from pipeline.monitoring.drift import DRIFT_COLUMNS, measure_drift
from pipeline.monitoring.new_ratings import all_ratings, new_ratings
from pipeline.validation.validate import validate

pytestmark = pytest.mark.slow  # builds matrices and runs Evidently (seconds)


def _matrix_with_inbox(small_data, settings, rows):
    """The small data set plus `rows` dropped in its inbox, as a run would build it."""
    write_csv(settings.inbox_dir / "new.csv", RATING_HEADER, rows)
    return build_utility_matrix(validate(ingest(small_data, settings.inbox_dir, settings.archive_dir), settings),
                                settings)


def _ratings(matrix):
    return all_ratings(matrix, [*DRIFT_COLUMNS, "scaled_rating"])


def _drift(reference, current, config):
    """measure_drift as the monitoring stage calls it."""
    return measure_drift(_ratings(reference), _ratings(current), reference.anime_metadata(), config)


@pytest.fixture(scope="module")
def anime_ids(small_data):
    return pacsv.read_csv(small_data / "anime.csv")["anime_id"].to_pylist()


def test_new_ratings_are_the_pairs_the_reference_never_rated(small_models, small_data, settings, anime_ids):
    ratings = pacsv.read_csv(small_data / "rating.csv")
    first = ratings.slice(0, 1).to_pylist()[0]
    rerated = [first["user_id"], first["anime_id"], 11 - first["rating"] if first["rating"] > 0 else 5]
    listed = set(ratings.filter(pc.equal(ratings["user_id"], first["user_id"]))["anime_id"].to_pylist())
    unlisted = next(anime for anime in reversed(anime_ids) if anime not in listed)  # no row of that user's yet
    added = [[999_001, anime_ids[0], 9], [999_001, anime_ids[1], 3], [first["user_id"], unlisted, 7]]
    current = _matrix_with_inbox(small_data, settings, [rerated, *added])

    new = new_ratings(_ratings(small_models.matrix), _ratings(current))

    assert {(r["user_id"], r["anime_id"], r["rating"]) for r in new.to_pylist()} == {tuple(row) for row in added}
    assert new_ratings(_ratings(current), _ratings(current)).num_rows == 0


def test_same_data_do_not_drift_and_a_wave_of_low_ratings_from_new_users_does(small_models, small_data, settings,
                                                                           anime_ids):
    same = _drift(small_models.matrix, small_models.matrix, settings.drift)
    assert same.drifted == ()
    assert all(m.value < 1e-9 for m in same.measures), same.measures

    new_users = range(990_000, 990_150)  # 150 newcomers rating 40 anime each 1 out of 10
    current = _matrix_with_inbox(small_data, settings, [[u, a, 1] for u in new_users for a in anime_ids[:40]])
    shifted = _drift(small_models.matrix, current, settings.drift)

    by_key = {m.key: m for m in shifted.measures}
    assert by_key["new_user_share"].value == pytest.approx(150 / current.n_users)
    assert by_key["new_anime_share"].value == 0
    assert {"rating", "new_user_share"} <= {m.key for m in shifted.drifted}
    reported = {m["config"]["column"]: m["value"] for m in json.loads(shifted.evidently.json())["metrics"]}
    assert reported["rating"] == pytest.approx(by_key["rating"].value) and reported["rating"] > 0.1


def test_new_data_of_other_anime_and_users_only_drift_on_every_count_without_failing(small_models, tmp_path, settings):
    """A data folder replaced wholesale: none of the champion's most-rated anime is rated any more."""
    rows = [[800_000 + user, 900_000 + anime, 1 + (user * anime) % 10] for user in range(40) for anime in range(25)]
    other = build_utility_matrix(validate(ingest(write_dataset(tmp_path / "other", rows)), settings), settings)

    by_key = {m.key: m for m in _drift(small_models.matrix, other, settings.drift).measures}

    assert by_key["new_user_share"].value == 1 and by_key["new_anime_share"].value == 1
    assert by_key["most_rated_anime"].drifted and by_key["most_rated_anime"].statistic.startswith("none of them")
    assert {"rating", "ratings_per_user", "ratings_per_anime"} <= set(by_key)
