"""Anime features as people's files bring them (docs/reliability.md): every odd value is read, or left out as the
neutral feature value and counted, or quarantined with its reason; never a stop, and never a lost rating. Each case
goes through the real reading, both validation engines (GX's and Arrow's, checked equal) and the feature encoding.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ANIME_HEADER, validate_with_both_engines, write_csv, write_dataset

from pipeline.data.ingest import ingest
from pipeline.matrix.anime_features import AnimeFeatures

RATINGS = [[1, 10, 8], [1, 11, 9], [2, 10, 7], [2, 12, 6], [3, 11, 6], [3, 12, 10], [3, 13, 5]]
CLEAN = [[10, "Anime 10", "Action, Comedy", "TV", 12, 7.5, 100], [11, "Anime 11", "Action, Comedy", "TV", 12, 7.5, 100],
         [12, "Anime 12", "Drama", "Movie", 1, 8.1, 300], [13, "Anime 13", "Drama", "Movie", 1, 6.0, 50]]


def _validated(tmp_path, settings, anime, header=ANIME_HEADER, ratings=RATINGS):
    folder = write_dataset(tmp_path / "data", ratings)
    write_csv(folder / "anime.csv", header, anime)
    return validate_with_both_engines(ingest(folder), settings)


def _features(validated) -> AnimeFeatures:
    return AnimeFeatures.of(validated.anime, min_anime=1)


def _row(features: AnimeFeatures, anime_id: int) -> dict[str, float]:
    return dict(zip(features.names, features.rows(np.array([anime_id]))[0], strict=True))


def _kept_everything(validated) -> bool:
    """No anime row quarantined and every rating accepted: odd features never cost a rating."""
    return validated.counts.anime_quarantined == 0 and validated.ratings.num_rows == len(RATINGS)


def test_a_genre_list_with_odd_spacing_reads_as_the_clean_one(tmp_path, settings):
    odd = [row.copy() for row in CLEAN]
    odd[0][2] = " Action ,Comedy,,  "  # spaces around items, an empty item, a trailing comma
    validated = _validated(tmp_path, settings, odd)
    assert validated.anime.to_pylist()[0]["genre"] == "Action, Comedy" and _kept_everything(validated)
    features = _features(validated)
    assert _row(features, 10) == _row(features, 11)  # anime 11 has the clean list
    assert features.neutral["genre"] == 0


@pytest.mark.parametrize(("value", "left_out"), [("Unknown", 0), ("", 0), ("Cartoon", 1)])
def test_an_unknown_type_is_the_neutral_value_and_counted(tmp_path, settings, value, left_out):
    odd = [row.copy() for row in CLEAN]
    odd[2][3] = value
    validated = _validated(tmp_path, settings, odd)
    assert _kept_everything(validated) and validated.anime.to_pylist()[2]["type"] is None
    assert validated.counts.anime_neutralized.get("type", 0) == left_out  # a value GX's set does not hold
    features = _features(validated)
    assert features.neutral["type"] == 1
    assert all(value == 0 for name, value in _row(features, 12).items() if name.startswith("type="))
    assert _row(features, 13)["type=Movie"] == 1


@pytest.mark.parametrize(("value", "left_out"), [("Unknown", 0), ("", 0), ("12 eps", 0), ("-3", 1), ("0", 1)])
def test_episodes_that_are_not_a_count_are_the_neutral_value_and_counted(tmp_path, settings, value, left_out):
    odd = [row.copy() for row in CLEAN]
    odd[0][4] = value
    validated = _validated(tmp_path, settings, odd)
    assert _kept_everything(validated) and validated.anime.to_pylist()[0]["episodes"] is None
    assert validated.counts.anime_neutralized.get("episodes", 0) == left_out
    features = _features(validated)
    row, known = _row(features, 10), _row(features, 11)
    assert features.neutral["episodes"] == 1
    assert row["episodes missing"] == 1 and row["episodes (log, standardized)"] == 0  # the mean of the known ones
    assert known["episodes missing"] == 0 and known["episodes (log, standardized)"] != 0


@pytest.mark.parametrize("value", ["abc", "-5", "1,234"])
def test_members_that_are_not_a_count_are_the_neutral_value(tmp_path, settings, value):
    odd = [row.copy() for row in CLEAN]
    odd[1][6] = value
    validated = _validated(tmp_path, settings, odd)
    assert _kept_everything(validated) and validated.anime.to_pylist()[1]["members"] is None
    features = _features(validated)
    assert features.neutral["members"] == 1 and _row(features, 11)["members missing"] == 1


@pytest.mark.parametrize("score", ["", "Unknown", "N/A"])
def test_an_empty_score_never_quarantines_and_is_no_feature(tmp_path, settings, score):
    """A new anime has no MAL score yet; the score is known only after ratings exist, so no feature reads it."""
    odd = [row.copy() for row in CLEAN]
    odd[3][5] = score
    validated = _validated(tmp_path, settings, odd)
    assert _kept_everything(validated) and validated.anime.to_pylist()[3]["rating"] is None
    features = _features(validated)
    assert not any("rating" in name or "score" in name for name in features.names)
    rescored = [row.copy() for row in CLEAN]
    rescored[3][5] = 1.0
    assert _row(_features(_validated(tmp_path / "again", settings, rescored)), 13) == _row(features, 13)


def test_an_anime_missing_from_anime_csv_keeps_its_ratings_and_gets_the_neutral_row(tmp_path, settings):
    validated = _validated(tmp_path, settings, CLEAN[:3])  # anime 13 is rated but not listed
    assert validated.counts.ratings_without_metadata == 1 and validated.ratings.num_rows == len(RATINGS)
    features = _features(validated)
    missing = features.rows(np.array([13]))[0]
    np.testing.assert_array_equal(missing, features.neutral_row())
    assert missing.sum() == sum(name.endswith(" missing") for name in features.names) > 0


def test_a_missing_column_is_absent_for_every_anime(tmp_path, settings):
    header = ["anime_id", "name", "genre", "members"]  # no type, episodes or score
    validated = _validated(tmp_path, settings, [[r[0], r[1], r[2], r[6]] for r in CLEAN], header)
    assert _kept_everything(validated)
    features = _features(validated)
    assert {"type", "episodes"} <= set(features.absent) and "type" not in features.neutral
    assert "not in anime.csv: " in features.summary() and "type" in features.summary()
    assert any(name.startswith("genre=") for name in features.names)


KAGGLE_2020_HEADER = ["MAL_ID", "Name", "Score", "Genres", "Type", "Episodes", "Premiered", "Studios", "Source",
                      "Members"]


def test_kaggle_2020_studios_source_and_season_are_read_and_odd_ones_left_out(tmp_path, settings):
    rows = [[10, "A", "8.1", "Action", "TV", "12", "Spring 1998", "Sunrise", "Original", "1000"],
            [11, "B", "Unknown", "Action", "TV", "Unknown", "Unknown", "None found, add some", "Unknown", "20"],
            [12, "C", "7.0", "Drama", "Movie", "1", "1998", "Sunrise, Bones", "Manga", "300"],
            [13, "D", "6.5", "Drama", "TV", "24", "fall  2001", "Bones", "Manga", "50"]]
    folder = tmp_path / "data"
    write_csv(folder / "rating_complete.csv", ["user_id", "anime_id", "rating"], RATINGS)
    write_csv(folder / "anime.csv", KAGGLE_2020_HEADER, rows)
    validated = validate_with_both_engines(ingest(folder), settings)
    anime = {row["anime_id"]: row for row in validated.anime.to_pylist()}
    assert validated.counts.anime_quarantined == 0 and validated.ratings.num_rows == len(RATINGS)
    assert anime[11]["studios"] is None and anime[11]["source"] is None and anime[11]["premiered"] is None
    assert anime[12]["premiered"] is None and validated.counts.anime_neutralized == {"premiered": 2}  # "1998", "fall"
    features = _features(validated)
    assert _row(features, 10)["premiered=Spring"] == 1 and _row(features, 12)["studios=Bones"] == 1
    assert _row(features, 12)["studios=Sunrise"] == 1 and _row(features, 11)["premiere year missing"] == 1
    assert features.neutral == {"genre": 0, "studios": 1, "type": 0, "source": 1, "episodes": 1, "members": 0,
                                "premiered": 3}
