"""Bad input, one case per test, for rating.csv, anime.csv and inbox files (docs/reliability.md lists them).

Structural problems stop with one line naming the file and what is wrong; row problems go to quarantine
with a reason and the counts reconcile (in = accepted + unrated + quarantined + superseded).
"""

from __future__ import annotations

import pytest
from conftest import ANIME_HEADER, RATING_HEADER, validate_with_both_engines, write_csv, write_dataset

from pipeline.data.ingest import ingest
from pipeline.errors import PipelineInputError

GOOD = [[1, 10, 8], [1, 11, 9], [2, 10, 7], [2, 12, -1], [3, 11, 6], [3, 12, 10]]
ANIME = [[i, f"Anime {i}", "Action", "TV", 12, 7.5, 100] for i in (10, 11, 12, 13)]


def _validated(folder, settings):
    """Validated by the Arrow engine, checked equal to GX's own engine (conftest.validate_with_both_engines)."""
    return validate_with_both_engines(ingest(folder, settings.inbox_dir, settings.archive_dir), settings)


def _reconciles(counts) -> bool:
    return counts.rows_in == counts.accepted + counts.unrated + counts.quarantined + counts.superseded


def _write_raw(path, text: bytes | str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


@pytest.fixture
def lenient(settings):
    settings.max_quarantine_share = 1.0  # these fixtures are tiny: one bad row is far above 5%
    return settings


# ---- row problems: quarantined with a reason, in the base file and in an inbox file -----------------------

ROW_CASES = {
    "non-numeric rating": ([4, 10, "abc"], "'abc' is not an integer"),
    "rating 0": ([4, 10, 0], "outside the rating scale"),
    "rating 11": ([4, 10, 11], "outside the rating scale"),
    "rating 7.5": ([4, 10, "7.5"], "'7.5' is not an integer"),
    "rating NaN": ([4, 10, "NaN"], "rating is missing"),  # NaN, NA, null read as missing values
    "negative user id": ([-4, 10, 5], "user_id is negative"),
    "negative anime id": ([4, -10, 5], "anime_id is negative"),
    "non-integer anime id": ([4, "10.5", 5], "'10.5' is not an integer"),
    "missing rating": ([4, 10, ""], "rating is missing"),
}


@pytest.mark.parametrize("where", ["rating.csv", "inbox"])
@pytest.mark.parametrize("case", ROW_CASES)
def test_bad_row_is_quarantined_with_its_reason(tmp_path, lenient, case, where):
    bad, reason = ROW_CASES[case]
    if where == "rating.csv":
        folder = write_dataset(tmp_path / "data", GOOD + [bad], ANIME)
    else:
        folder = write_dataset(tmp_path / "data", GOOD, ANIME)
        write_csv(lenient.inbox_dir / "new.csv", RATING_HEADER, [[5, 13, 9], bad])
    validated = _validated(folder, lenient)
    quarantine = validated.quarantine.to_pylist()
    assert len(quarantine) == 1 and reason in quarantine[0]["reason"]
    assert quarantine[0]["source"] == ("rating.csv" if where == "rating.csv" else "incoming/new.csv")
    assert quarantine[0]["row_number"] == (len(GOOD) + 1 if where == "rating.csv" else 2)
    counts = validated.counts
    assert _reconciles(counts) and counts.unrated == 1
    assert counts.accepted == len(GOOD) - 1 + (where == "inbox")


@pytest.mark.parametrize("where", ["rating.csv", "inbox"])
def test_minus_one_is_watched_history_not_a_rating(tmp_path, lenient, where):
    folder = write_dataset(tmp_path / "data", GOOD + ([[4, 13, -1]] if where == "rating.csv" else []), ANIME)
    if where == "inbox":
        write_csv(lenient.inbox_dir / "new.csv", RATING_HEADER, [[4, 13, -1]])
    validated = _validated(folder, lenient)
    assert validated.counts.unrated == 2 and validated.counts.quarantined == 0
    assert {"user_id": 4, "anime_id": 13, "watching_status": 0} in validated.unrated.to_pylist()
    assert 4 not in validated.ratings["user_id"].to_pylist()


@pytest.mark.parametrize("second_rating", [8, 3], ids=["equal", "different"])
@pytest.mark.parametrize("where", ["rating.csv", "inbox"])
def test_duplicate_pair_in_one_file_quarantines_every_copy(tmp_path, lenient, where, second_rating):
    duplicates = [[4, 10, 8], [4, 10, second_rating]]
    folder = write_dataset(tmp_path / "data", GOOD + (duplicates if where == "rating.csv" else []), ANIME)
    if where == "inbox":
        write_csv(lenient.inbox_dir / "new.csv", RATING_HEADER, duplicates)
    validated = _validated(folder, lenient)
    reasons = [row["reason"] for row in validated.quarantine.to_pylist()]
    assert len(reasons) == 2 and all("more than once in the same file" in r for r in reasons)
    assert _reconciles(validated.counts)


def test_same_pair_in_a_later_file_replaces_the_earlier_rating(tmp_path, lenient):
    folder = write_dataset(tmp_path / "data", GOOD, ANIME)
    write_csv(lenient.inbox_dir / "new.csv", RATING_HEADER, [[1, 10, 2]])
    validated = _validated(folder, lenient)
    assert {"user_id": 1, "anime_id": 10, "rating": 2} in validated.ratings.to_pylist()
    assert validated.counts.superseded == 1 and _reconciles(validated.counts)


def test_ratings_of_anime_missing_from_anime_csv_are_kept_and_counted(tmp_path, lenient):
    folder = write_dataset(tmp_path / "data", GOOD + [[4, 999, 7]], ANIME)
    validated = _validated(folder, lenient)
    assert {"user_id": 4, "anime_id": 999, "rating": 7} in validated.ratings.to_pylist()
    assert validated.counts.ratings_without_metadata == 1 and validated.counts.quarantined == 0


@pytest.mark.parametrize("where", ["rating.csv", "inbox"])
def test_truncated_last_line_is_quarantined(tmp_path, lenient, where):
    body = "".join(f"{u},{a},{r}\n" for u, a, r in GOOD)
    if where == "rating.csv":
        folder = write_dataset(tmp_path / "data", GOOD, ANIME)
        _write_raw(folder / "rating.csv", "user_id,anime_id,rating\n" + body + "4,1")  # cut mid-row, no newline
    else:
        folder = write_dataset(tmp_path / "data", GOOD, ANIME)
        _write_raw(lenient.inbox_dir / "new.csv", "user_id,anime_id,rating\n5,13,9\n4,1")
    validated = _validated(folder, lenient)
    quarantine = validated.quarantine.to_pylist()
    assert len(quarantine) == 1
    assert "2 fields, expected 3" in quarantine[0]["reason"] and quarantine[0]["row_number"] == (
        len(GOOD) + 1 if where == "rating.csv" else 2)
    assert _reconciles(validated.counts)


def test_non_utf8_name_quarantines_the_anime_row_and_keeps_its_ratings(tmp_path, lenient):
    folder = write_dataset(tmp_path / "data", GOOD, ANIME)
    text = (folder / "anime.csv").read_bytes().replace(b"Anime 11", b"Anim\xe9 \xff11")
    _write_raw(folder / "anime.csv", text)
    validated = _validated(folder, lenient)
    rows = validated.anime_quarantine.to_pylist()
    assert [r["anime_id"] for r in rows] == [11] and "not valid UTF-8" in rows[0]["reason"]
    assert validated.counts.ratings_without_metadata == 2  # anime 11's ratings stay
    assert validated.counts.anime_accepted == len(ANIME) - 1


@pytest.mark.parametrize("where", ["rating.csv", "inbox"])
def test_non_utf8_bytes_in_a_rating_row_quarantine_that_row(tmp_path, lenient, where):
    folder = write_dataset(tmp_path / "data", GOOD, ANIME)
    bad = b"4,10,\xff8\n"
    if where == "rating.csv":
        _write_raw(folder / "rating.csv", (folder / "rating.csv").read_bytes() + bad)
    else:
        _write_raw(lenient.inbox_dir / "new.csv", b"user_id,anime_id,rating\n" + bad)
    validated = _validated(folder, lenient)
    assert [("not an integer" in r) for r in validated.quarantine["reason"].to_pylist()] == [True]


@pytest.mark.parametrize("where", ["rating.csv", "anime.csv", "inbox"])
def test_windows_line_endings_read_the_same(tmp_path, lenient, where):
    unix = _validated(write_dataset(tmp_path / "unix", GOOD, ANIME), lenient)
    folder = write_dataset(tmp_path / "windows", GOOD, ANIME)
    target = {"rating.csv": folder / "rating.csv", "anime.csv": folder / "anime.csv"}.get(where)
    if target is None:
        target = _write_raw(lenient.inbox_dir / "new.csv", "user_id,anime_id,rating\r\n5,13,9\r\n")
    target.write_bytes(target.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    windows = _validated(folder, lenient)
    assert windows.counts.quarantined == 0 and windows.counts.anime_quarantined == 0
    assert windows.anime.to_pylist() == unix.anime.to_pylist()
    assert windows.counts.accepted == unix.counts.accepted + (where == "inbox")


@pytest.mark.parametrize("where", ["rating.csv", "anime.csv", "inbox"])
def test_extra_columns_are_ignored(tmp_path, lenient, where):
    folder = write_dataset(tmp_path / "data", GOOD, ANIME)
    if where == "rating.csv":
        write_csv(folder / "rating.csv", RATING_HEADER + ["timestamp"], [row + ["2020-01-01"] for row in GOOD])
    elif where == "anime.csv":
        write_csv(folder / "anime.csv", ANIME_HEADER + ["studio"], [row + ["Sunrise"] for row in ANIME])
    else:
        write_csv(lenient.inbox_dir / "new.csv", ["comment", *RATING_HEADER], [["great", 5, 13, 9]])
    validated = _validated(folder, lenient)
    assert validated.counts.quarantined == 0 and validated.counts.anime_accepted == len(ANIME)
    assert validated.counts.accepted == len(GOOD) - 1 + (where == "inbox")


# ---- structural problems: the run stops with one line naming the file ------------------------------------

def _break(folder, settings, where: str, content: bytes | None):
    """Replace the file at `where` with `content` (None: remove it)."""
    path = {"rating.csv": folder / "rating.csv", "anime.csv": folder / "anime.csv"}.get(
        where, settings.inbox_dir / "new.csv")
    if content is None:
        path.unlink()
    else:
        _write_raw(path, content)
    return path


STRUCTURAL = {
    "missing file": (None, "file not found"),
    "empty file": (b"", "empty file"),
    "missing column": (b"user_id,anime_id\n1,10\n", "missing column 'rating'"),
    "renamed column": (b"user_id,anime_id,score\n1,10,8\n", "missing column 'rating' (header has user_id,anime_id,"
                                                           "score)"),
    "wrong delimiter": (b"user_id;anime_id;rating\n1;10;8\n", "delimiter"),
}
ANIME_STRUCTURAL = {
    "missing file": (None, "file not found"),
    "empty file": (b"", "empty file"),
    "missing column": (b"anime_id,genre\n10,Action\n", "missing column 'name'"),
    "renamed column": (b"id,name\n10,x\n", "missing column 'anime_id' (header has id,name)"),
    "wrong delimiter": (b"anime_id\tname\n10\tx\n", "delimiter"),
    "header only": (b"anime_id,name,genre\n", "no rows"),
}


@pytest.mark.parametrize("where, case", [("rating.csv", case) for case in [*STRUCTURAL, "header only"]] + [
    ("inbox", case) for case in [*STRUCTURAL, "header only"] if case != "missing file"])  # inbox: what is there
def test_structural_problem_in_ratings_stops_with_one_line(tmp_path, settings, where, case):
    folder = write_dataset(tmp_path / "data", GOOD, ANIME)
    content, message = STRUCTURAL.get(case, (b"user_id,anime_id,rating\n", "no rows"))
    if where == "inbox" and case == "header only":
        _break(folder, settings, where, content)  # an empty increment is fine
        assert _validated(folder, settings).counts.accepted == len(GOOD) - 1
        return
    path = _break(folder, settings, where, content)
    with pytest.raises(PipelineInputError) as raised:
        _validated(folder, settings)
    line = str(raised.value)
    assert "\n" not in line and line.startswith(str(path)) and message in line


@pytest.mark.parametrize("case", ANIME_STRUCTURAL)
def test_structural_problem_in_anime_csv_stops_with_one_line(tmp_path, settings, case):
    folder = write_dataset(tmp_path / "data", GOOD, ANIME)
    content, message = ANIME_STRUCTURAL[case]
    path = _break(folder, settings, "anime.csv", content)
    with pytest.raises(PipelineInputError) as raised:
        _validated(folder, settings)
    line = str(raised.value)
    assert "\n" not in line and line.startswith(str(path)) and message in line


@pytest.mark.parametrize("where", ["rating.csv", "inbox"])
def test_a_feed_with_too_many_bad_rows_fails_validation(tmp_path, settings, where):
    rows = [[u, 10 + u % 3, 1 + u % 10] for u in range(1, 101)]
    bad = [[u, 13, 42] for u in range(200, 206)]  # 6 of 106 rows: above the 5% default
    folder = write_dataset(tmp_path / "data", rows + (bad if where == "rating.csv" else []), ANIME)
    if where == "inbox":
        write_csv(settings.inbox_dir / "new.csv", RATING_HEADER, bad)
    with pytest.raises(PipelineInputError, match=r"5\.7% of rows failed validation, above the 5% limit"):
        _validated(folder, settings)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize("where, case", [("rating.csv", "renamed column"), ("inbox", "wrong delimiter"),
                                         ("anime.csv", "empty file")])
def test_a_stopped_run_exits_2_with_one_line_and_writes_nothing(tmp_path, settings, monkeypatch, capsys, where,
                                                                 case):
    from mlflow import MlflowClient

    from flows.cli import main

    monkeypatch.setenv("ANIMEREC_DATA_ROOT", str(settings.data_root))
    monkeypatch.setenv("ANIMEREC_MLRUNS_DIR", str(settings.mlruns_dir))
    monkeypatch.setenv("ANIMEREC_DATASET_NAME", settings.dataset_name)  # its inbox is the one written to
    folder = write_dataset(tmp_path / "data", GOOD, ANIME)
    content = (ANIME_STRUCTURAL if where == "anime.csv" else STRUCTURAL)[case][0]
    path = _break(folder, settings, where, content)
    inbox_before = sorted(p.name for p in settings.inbox_dir.glob("*")) if settings.inbox_dir.exists() else []

    assert main(["retrain", "--data", str(folder)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and str(path) in err[0]
    assert not settings.matrix_root.exists()  # no partial outputs
    registry = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    assert registry.search_registered_models() == []
    assert (sorted(p.name for p in settings.inbox_dir.glob("*")) if settings.inbox_dir.exists() else []) == \
        inbox_before and not settings.archive_dir.exists()
