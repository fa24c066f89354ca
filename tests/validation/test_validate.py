import json

import numpy as np
import pyarrow as pa
import pytest
from conftest import RATING_HEADER, validate_with_both_engines, write_csv, write_dataset

import pipeline.validation.arrow_engine
import pipeline.validation.arrow_kernels
import pipeline.validation.results
import pipeline.validation.suites
import pipeline.validation.validate
from pipeline.data.ingest import ingest
from pipeline.errors import PipelineInputError
from pipeline.validation.suites import run_suite, validate_batches_here
from pipeline.validation.validate import validate

ROWS = [
    [1, 10, 8], [1, 11, 9], [2, 10, 7], [2, 12, -1],  # good: 3 ratings, 1 unrated
    [3, 10, 11],  # rating off the scale
    [3, 11, 0],  # rating off the scale
    [4, 10, "7.5"],  # not an integer
    [5, 10, 6], [5, 10, 6],  # duplicated pair
    [-6, 10, 5],  # negative id
    [7, "", 5],  # missing anime id
]


def test_rows_are_split_into_accepted_unrated_and_quarantined(tmp_path, settings):
    settings.max_quarantine_share = 1.0
    validated = validate_with_both_engines(ingest(write_dataset(tmp_path, ROWS)), settings)
    counts = validated.counts
    assert counts.rows_in == len(ROWS)
    assert (counts.accepted, counts.unrated) == (3, 1)
    assert counts.rows_in == counts.accepted + counts.unrated + counts.quarantined
    reasons = dict(zip(validated.quarantine["row_number"].to_pylist(), validated.quarantine["reason"].to_pylist(),
                       strict=True))
    assert set(reasons) == {5, 6, 7, 8, 9, 10, 11}
    assert "outside the rating scale" in reasons[5] and "outside the rating scale" in reasons[6]
    assert "'7.5' is not an integer" in reasons[7]
    assert "more than once" in reasons[8] and "more than once" in reasons[9]
    assert "user_id is negative" in reasons[10]
    assert "anime_id is missing" in reasons[11]
    assert validated.unrated.to_pylist() == [{"user_id": 2, "anime_id": 12, "watching_status": 0}]


@pytest.mark.parametrize("engine", ["arrow", "gx"])
def test_batched_validation_gives_the_same_quarantine_as_one_batch(tmp_path, settings, engine):
    settings.max_quarantine_share, settings.validation_engine = 1.0, engine
    rows = ROWS + [[user, anime, 1 + (user * anime) % 10] for user in range(8, 40) for anime in (10, 11, 12)]
    rows += [[20, 11, 3], [33, 12, 4]]  # duplicated pairs far apart in the file
    raw = ingest(write_dataset(tmp_path, rows))
    whole = validate(raw, settings)
    settings.validation_batch_rows = 7
    batched = validate(raw, settings, validate_batches_here)  # batches, one after another (as Dask workers get)
    assert batched.quarantine.to_pylist() == whole.quarantine.to_pylist()
    assert batched.counts == whole.counts and batched.data_version == whole.data_version
    assert [o.unexpected_count for o in batched.reports[0].outcomes] == [
        o.unexpected_count for o in whole.reports[0].outcomes]
    assert len(batched.reports[0].gx_result["batches"]) == -(-len(rows) // 7)
    json.dumps(batched.reports[0].gx_result)
    duplicated = {r["row_number"] for r in whole.quarantine.to_pylist() if "more than once" in r["reason"]}
    assert duplicated == {8, 9, 12 + (20 - 8) * 3 + 1, len(rows) - 1, 12 + (33 - 8) * 3 + 2, len(rows)}


def test_rating_scale_comes_from_settings(tmp_path, settings):
    folder = write_dataset(tmp_path, [[1, 1, 4], [1, 2, 5], [2, 1, 3], [2, 2, 1]])
    settings.rating_max = 4
    settings.max_quarantine_share = 1.0
    validated = validate(ingest(folder), settings)
    assert validated.counts.accepted == 3
    assert validated.quarantine["row_number"].to_pylist() == [2]


def test_too_many_quarantined_rows_fail_the_run(tmp_path, settings):
    folder = write_dataset(tmp_path, [[1, 1, 8], [1, 2, 99], [2, 1, 7]])
    with pytest.raises(PipelineInputError, match=r"rating\.csv: 33\.3% of rows failed validation"):
        validate(ingest(folder), settings)


def test_gx_structural_failure_stops_with_file_and_column(settings):
    table = pa.table({"user_id": [1, 2], "anime_id": [1, 2], "rating": [7.5, 8.0]})  # float ratings
    expected = r"rating\.csv: column 'rating' failed expect_column_values_to_be_of_type"
    with pytest.raises(PipelineInputError, match=expected):
        run_suite(table, settings.expectations_dir / "ratings.json", "rating.csv", {"allowed_ratings": [1]})


def test_gx_report_is_serializable_and_counts_failures(tmp_path, settings):
    settings.max_quarantine_share = 1.0
    validated = validate(ingest(write_dataset(tmp_path, ROWS)), settings)
    ratings_report = validated.reports[0]
    failed = {o.column: o.unexpected_count for o in ratings_report.outcomes if not o.success}
    assert failed["rating"] == 2 and failed["source_rank,user_id,anime_id"] == 2
    json.dumps(ratings_report.gx_result)
    assert "FAILED" in validated.summary()


def test_newest_rating_of_a_pair_wins_across_files(tmp_path, settings):
    folder = write_dataset(tmp_path / "base", [[1, 10, 5], [1, 11, 6], [2, 10, 7]])
    inbox = tmp_path / "incoming"
    write_csv(inbox / "2026-01-01.csv", RATING_HEADER, [[1, 10, 9], [3, 12, 8]])  # re-rate + new user, new anime
    write_csv(inbox / "2026-01-02.csv", RATING_HEADER, [[1, 10, 2], [2, 10, -1]])  # re-rate again; now unrated
    raw = ingest(folder, inbox_dir=inbox, archive_dir=tmp_path / "archive")
    assert raw.sources == ("rating.csv", "incoming/2026-01-01.csv", "incoming/2026-01-02.csv")
    validated = validate(raw, settings)
    ratings = {(r["user_id"], r["anime_id"]): r["rating"] for r in validated.ratings.to_pylist()}
    assert ratings == {(1, 10): 2, (1, 11): 6, (3, 12): 8}
    assert validated.unrated.to_pylist() == [{"user_id": 2, "anime_id": 10, "watching_status": 0}]
    counts = validated.counts
    assert (counts.rows_in, counts.superseded, counts.quarantined) == (7, 3, 0)
    assert counts.rows_in == counts.accepted + counts.unrated + counts.quarantined + counts.superseded
    assert set(raw.source_sha256) == {*raw.sources, "anime.csv"}


def test_counts_reconcile_only_when_every_row_lands_in_exactly_one_place(tmp_path, settings, monkeypatch):
    """Each count is measured from its own rows, so a step that puts a row in two places (here: a newest-per-pair
    step that also keeps quarantined rows) breaks the reconciliation instead of hiding in a remainder."""
    folder = write_dataset(tmp_path / "base", [[1, 10, 5], [1, 11, 6], [2, 10, 42]])  # 42: off the scale
    write_csv(tmp_path / "incoming" / "new.csv", RATING_HEADER, [[1, 10, 9]])  # supersedes (1, 10, 5)
    settings.max_quarantine_share = 1.0
    raw = ingest(folder, inbox_dir=tmp_path / "incoming")
    counts = validate(raw, settings).counts
    assert (counts.accepted, counts.quarantined, counts.superseded) == (2, 1, 1)
    monkeypatch.setattr(pipeline.validation.validate, "_newest_per_pair",
                        lambda rows, valid: np.ones(rows.num_rows, bool))
    with pytest.raises(AssertionError, match="counts of all files do not reconcile"):
        validate(raw, settings)


def test_quarantine_names_the_file_of_each_row(tmp_path, settings):
    settings.max_quarantine_share = 1.0
    folder = write_dataset(tmp_path / "base", [[1, 10, 5], [1, 11, 6]])
    write_csv(tmp_path / "incoming" / "new.csv", RATING_HEADER, [[1, 12, 42], [1, 12, 3], [1, 12, 3]])
    validated = validate(ingest(folder, inbox_dir=tmp_path / "incoming"), settings)
    rows = validated.quarantine.to_pylist()
    assert [(r["source"], r["row_number"]) for r in rows] == [("incoming/new.csv", 1), ("incoming/new.csv", 2),
                                                               ("incoming/new.csv", 3)]
    assert "outside the rating scale" in rows[0]["reason"] and "more than once in the same file" in rows[1]["reason"]


def test_a_suite_the_arrow_engine_does_not_evaluate_is_left_to_gx(tmp_path):
    suite = {"name": "other", "meta": {}, "expectations": [
        {"type": "expect_column_values_to_not_be_in_set", "kwargs": {"column": "anime_id", "value_set": [13]},
         "meta": {"on_failure": "quarantine", "reason": "anime 13 is withdrawn"}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "user_id"},
         "meta": {"on_failure": "quarantine", "reason": "user_id is missing"}}]}
    path = tmp_path / "other.json"
    path.write_text(json.dumps(suite))
    table = pa.table({"user_id": [1, None, 3], "anime_id": [12, 13, 13]})
    report, reason = run_suite(table, path, "rating.csv", engine="arrow")
    assert report.gx_result["meta"].get("engine") != "arrow"  # GX's own result
    assert reason.to_pylist() == [None, "anime 13 is withdrawn; user_id is missing", "anime 13 is withdrawn"]
    known = dict(suite, expectations=suite["expectations"][1:])  # only what the Arrow engine evaluates
    path.write_text(json.dumps(known))
    report, reason = run_suite(table, path, "rating.csv", engine="arrow")
    assert report.gx_result["meta"]["engine"] == "arrow" and reason.to_pylist() == [None, "user_id is missing", None]


@pytest.mark.parametrize("case", ["sorted", "shuffled", "wide ids", "nulls", "four columns past 64 bits"])
def test_arrow_uniqueness_agrees_with_pandas_duplicated(case):
    """The compound key of pipeline/validation/arrow_engine.py (increasing-run check, radix sort, ranking when a 64-bit
    key would overflow) against pandas' `duplicated(keep=False)`, which GX's pandas engine uses."""
    rng = np.random.default_rng(4)
    n = 60_000
    columns = {"user_id": np.sort(rng.integers(0, 3_000, n)), "anime_id": rng.integers(0, 500, n)}
    if case == "sorted":
        order = np.lexsort((columns["anime_id"], columns["user_id"]))
        columns = {name: values[order] for name, values in columns.items()}
    if case == "shuffled":
        columns = {name: rng.permutation(values) for name, values in columns.items()}
    if case == "wide ids":
        columns["user_id"] = columns["user_id"] * (2 ** 40) - 2 ** 61  # spans more than 2**32: coded by rank
    if case == "four columns past 64 bits":
        columns = {f"c{i}": rng.integers(0, 100_000, n) for i in range(4)}  # 100,001⁴ codes > 2**63
        for values in columns.values():
            values[n // 2:n // 2 + n // 4] = values[:n // 4]  # a quarter of the rows repeat another quarter
    table = pa.table(columns)
    if case == "nulls":
        table = table.set_column(1, "anime_id", pa.array(columns["anime_id"], mask=rng.random(n) < 0.3))
    expected = table.to_pandas().duplicated(keep=False).to_numpy()
    assert 0 < expected.sum() < n or case == "sorted"
    assert np.array_equal(pipeline.validation.arrow_kernels._repeated(list(table.columns)), expected)
