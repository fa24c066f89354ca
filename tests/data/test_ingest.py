import hashlib

import pyarrow as pa
import pytest
from conftest import ANIME_HEADER, write_csv, write_dataset

from pipeline.data.csv_reading import read_anime, read_ratings
from pipeline.data.ingest import ingest
from pipeline.data.ratings_db.export import APP_SOURCE, AppRatingsExport
from pipeline.data.ratings_db.schema import APP_USER_ID_BASE
from pipeline.errors import PipelineInputError


def test_ingest_reads_typed_tables_and_hashes_sources(small_data):
    raw = ingest(small_data)
    assert raw.ratings.schema.field("rating").type == pa.int64()
    assert raw.ratings.schema.field("user_id").type == pa.int64()
    assert raw.anime.schema.field("episodes").type == pa.int64()
    assert raw.ratings["row_number"].to_pylist()[:3] == [1, 2, 3]
    assert raw.ratings["parse_error"].null_count == raw.rows_in
    for name, digest in raw.source_sha256.items():
        assert digest == hashlib.sha256((small_data / name).read_bytes()).hexdigest()


def test_anime_names_are_decoded_and_unknown_episodes_are_null(tmp_path):
    path = write_csv(tmp_path / "anime.csv", ANIME_HEADER, [
        [1, "Hero&#039;s &amp; Villain&quot;s", "Action, Drama", "TV", "Unknown", "", 10],
        [2, "Plain", "Comedy", "Movie", "1", "8.5", 20],
    ])
    anime = read_anime(path)
    assert anime["name"].to_pylist() == ["Hero's & Villain\"s", "Plain"]
    assert anime["episodes"].to_pylist() == [None, 1]
    assert anime["rating"].to_pylist() == [None, 8.5]


def test_unparseable_cells_are_flagged_per_row_not_fatal(tmp_path):
    write_dataset(tmp_path, [[1, 10, 8], [1, 11, "7.5"], [2, 10, "abc"], [3, 12, -1]])
    ratings = read_ratings(tmp_path / "rating.csv")
    assert ratings["rating"].to_pylist() == [8, None, None, -1]
    errors = ratings["parse_error"].to_pylist()
    assert errors[0] is None and errors[3] is None
    assert "'rating'" in errors[1] and "'7.5'" in errors[1]
    assert "'abc'" in errors[2]


def test_optional_anime_columns_may_be_absent(tmp_path):
    path = write_csv(tmp_path / "anime.csv", ["name", "anime_id", "studio"], [["A", 3, "x"]])
    anime = read_anime(path)
    assert anime["anime_id"].to_pylist() == [3] and anime["genre"].to_pylist() == [None]
    assert "studio" not in anime.column_names


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(PipelineInputError, match=r"rating\.csv: file not found"):
        ingest(tmp_path)


def test_missing_column_names_file_and_column(tmp_path):
    write_csv(tmp_path / "rating.csv", ["user_id", "anime_id", "score"], [[1, 2, 3]])
    write_csv(tmp_path / "anime.csv", ANIME_HEADER, [[2, "A", "", "TV", 1, 7.0, 1]])
    with pytest.raises(PipelineInputError) as error:
        ingest(tmp_path)
    message = str(error.value)
    assert "rating.csv" in message and "'rating'" in message and "\n" not in message


def test_app_ratings_are_the_newest_source_and_a_data_set_may_not_use_their_ids(tmp_path):
    """The web app's ratings join as the last rating source (they win a pair over any file), with a digest of their
    values in the lineage; a data set whose own user ids reach the profiles' range stops with one line naming it."""
    write_dataset(tmp_path / "data", [[1, 10, 8], [2, 11, 7]])
    app = AppRatingsExport("tests", pa.table({"user_id": pa.array([APP_USER_ID_BASE + 1], pa.int64()),
                                              "anime_id": pa.array([10], pa.int64()),
                                              "rating": pa.array([9], pa.int64())}), watermark=3, since=0,
                           new_ratings=1)
    raw = ingest(tmp_path / "data", app_ratings=app)
    assert raw.sources == ("rating.csv", APP_SOURCE)
    assert raw.ratings["source_rank"].to_pylist() == [0, 0, 1] and raw.ratings["row_number"].to_pylist()[-1] == 1
    changed = ingest(tmp_path / "data", app_ratings=AppRatingsExport(
        "tests", app.ratings.set_column(2, "rating", pa.array([4], pa.int64())), 4, 3, 1))
    assert raw.source_sha256[APP_SOURCE] != changed.source_sha256[APP_SOURCE]

    write_dataset(tmp_path / "taken", [[1, 10, 8], [APP_USER_ID_BASE + 7, 11, 7]])
    with pytest.raises(PipelineInputError, match=rf"^rating\.csv: column user_id: id {APP_USER_ID_BASE + 7} is in "
                                                 r"the range kept for the web app's profiles"):
        ingest(tmp_path / "taken")
