"""The Kaggle 2020 layout ("Anime Recommendation Database 2020"): the first rows of its real files (shared
data) and small generated folders in that layout, read, validated and run end to end."""

from __future__ import annotations

import csv
import json
import shutil
import zipfile
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import KAGGLE2020_HEAD, SMALL_SPEC, validate_with_both_engines

from pipeline.data.csv_reading import read_anime
from pipeline.data.generate import KAGGLE_2020_ANIME_HEADER, generate_demo_dataset
from pipeline.data.ingest import ingest
from pipeline.data.layouts import KAGGLE_2020, WATCHING_STATUSES
from pipeline.errors import PipelineInputError
from pipeline.matrix.utility_matrix import build_utility_matrix
from pipeline.models.ranking.ease import InteractionWeights
from pipeline.settings import RankingConfig
from pipeline.validation.validate import validate


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _kaggle_anime_csv(path: Path, anime_ids: list[int]) -> None:
    """An anime.csv with the data set's full header; every third score `Unknown`, as for unaired shows."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(KAGGLE_2020_ANIME_HEADER)
        for i, anime_id in enumerate(anime_ids):
            values = dict.fromkeys(KAGGLE_2020_ANIME_HEADER, "Unknown")
            values |= {"MAL_ID": anime_id, "Name": f"Show {anime_id}", "Score": "Unknown" if i % 3 == 0 else "7.25",
                       "Genres": "Action, Drama", "Type": "TV", "Episodes": 12, "Rating": "R - 17+ (violence)",
                       "Members": 1000 + i}
            writer.writerow(values.values())


NEEDS_HEAD = pytest.mark.shared_data(*(KAGGLE2020_HEAD / name for name in (
    "rating_complete.csv", "animelist.csv", "watching_status.csv")))


@pytest.fixture
def head_folder(tmp_path) -> Path:
    """The shared head files as a Kaggle 2020 folder (plus an anime.csv, which shared data does not hold)."""
    folder = tmp_path / "kaggle2020"
    folder.mkdir()
    for name in ("rating_complete.csv", "animelist.csv", "watching_status.csv"):
        shutil.copyfile(KAGGLE2020_HEAD / name, folder / name)
    ids = sorted({int(r["anime_id"]) for name in ("rating_complete.csv", "animelist.csv")
                  for r in _rows(KAGGLE2020_HEAD / name)})
    _kaggle_anime_csv(folder / "anime.csv", ids[::2])  # half of them: the others are missing from anime.csv
    return folder


@NEEDS_HEAD
def test_the_real_head_files_are_read_as_the_kaggle_2020_layout(head_folder, settings):
    raw = ingest(head_folder)
    assert raw.layout == KAGGLE_2020 and raw.watch_list is not None
    validated = validate(raw, settings)
    ratings = {(int(r["user_id"]), int(r["anime_id"])): int(r["rating"])
               for r in _rows(KAGGLE2020_HEAD / "rating_complete.csv")}
    listed = _rows(KAGGLE2020_HEAD / "animelist.csv")
    accepted = {(r["user_id"], r["anime_id"]): r["rating"] for r in validated.ratings.to_pylist()}
    assert accepted == ratings and min(u for u, _ in accepted) == 0  # user 0 is a user
    assert validated.counts.quarantined == 0

    counts = validated.counts.per_source
    rated_elsewhere = [r for r in listed if (int(r["user_id"]), int(r["anime_id"])) in ratings]
    assert counts["animelist.csv"] == {"rows_in": len(listed), "accepted": 0, "superseded": len(rated_elsewhere),
                                       "unrated": len(listed) - len(rated_elsewhere), "quarantined": 0}
    assert counts["rating_complete.csv"]["accepted"] == len(ratings)
    interactions = Counter(WATCHING_STATUSES[int(r["watching_status"])] for r in listed if r not in rated_elsewhere)
    assert validated.counts.unrated_by_status == dict(interactions) and len(interactions) >= 3
    kept = {(r["user_id"], r["anime_id"]): r["watching_status"] for r in validated.unrated.to_pylist()}
    assert all(kept[int(r["user_id"]), int(r["anime_id"])] == int(r["watching_status"])
               for r in listed if r not in rated_elsewhere)
    assert not set(kept) & set(ratings)  # an interaction never repeats a rating (test pairs stay out)


@NEEDS_HEAD
def test_bad_list_entries_are_quarantined_with_their_reason(head_folder, settings):
    settings.max_quarantine_share = 1.0
    with (head_folder / "animelist.csv").open("a") as handle:
        handle.write("7,1,0,5,0\n7,2,11,2,3\n-3,1,0,2,1\n")  # status 5 does not exist; score 11; negative user
    validated = validate_with_both_engines(ingest(head_folder), settings)  # and the Arrow engine's equals GX's
    reasons = {row["row_number"]: row["reason"] for row in validated.quarantine.to_pylist()
               if row["source"] == "animelist.csv"}
    n = len(_rows(KAGGLE2020_HEAD / "animelist.csv"))
    assert "watching_status is not one of" in reasons[n + 1] and "rating is neither 0" in reasons[n + 2]
    assert "user_id is negative" in reasons[n + 3] and len(reasons) == 3
    listed = validated.counts.per_source["animelist.csv"]
    assert listed["rows_in"] == n + 3 == sum(v for k, v in listed.items() if k != "rows_in")


@NEEDS_HEAD
def test_too_many_bad_list_entries_stop_the_run_naming_the_list(head_folder, settings):
    n = len(_rows(KAGGLE2020_HEAD / "animelist.csv"))
    with (head_folder / "animelist.csv").open("a") as handle:  # just over the 5% limit, all with status 5
        handle.writelines(f"{9000 + i},1,0,5,0\n" for i in range(n // 19 + 1))
    with pytest.raises(PipelineInputError, match=r"^animelist\.csv: 5\.\d% of rows failed validation.*status"):
        validate(ingest(head_folder), settings)


@pytest.mark.parametrize("genre_column", ["Genres", "Genders"])
def test_kaggle_2020_anime_csv_is_mapped_to_the_cooperunion_columns(tmp_path, genre_column):
    path = tmp_path / "anime.csv"
    _kaggle_anime_csv(path, [5, 1, 30])
    path.write_text(path.read_text().replace("Genres", genre_column, 1))
    anime = read_anime(path)
    assert anime["anime_id"].to_pylist() == [5, 1, 30] and anime["name"].to_pylist() == ["Show 5", "Show 1", "Show 30"]
    assert anime["rating"].to_pylist() == [None, 7.25, 7.25]  # Score, `Unknown` → null; not the age `Rating`
    assert anime["genre"].to_pylist() == ["Action, Drama"] * 3 and anime["members"].to_pylist() == [1000, 1001, 1002]
    assert anime["parse_error"].null_count == 3


def test_watching_status_sets_what_an_entry_counts_in_the_ranking_model():
    config = RankingConfig(unrated_weight=0.5, on_hold_weight=0.3, dropped_weight=0.05, plan_to_watch_weight=0.2)
    weights = InteractionWeights.of_config(config, 1, 10, -1)
    statuses = np.array([0, 1, 2, 3, 4, 6, 0])
    values = weights.of(np.array([-1, -1, -1, -1, -1, -1, 10]), statuses)
    assert values == pytest.approx([0.5, 0.5, 0.5, 0.3, 0.05, 0.2, 1.0])  # a rating counts by its value
    np.testing.assert_array_equal(weights.of(np.array([-1, -1, -1, -1, -1, -1, 10]), statuses, chunk=3), values)
    loaded = InteractionWeights.from_json(json.loads(json.dumps(asdict(weights))))  # as saved with the model
    assert loaded == weights


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_a_generated_kaggle_2020_download_runs_end_to_end_from_its_zip(tmp_path, settings):
    from flows.retrain import retrain

    folder = generate_demo_dataset(tmp_path / "generated", SMALL_SPEC, layout="kaggle2020")
    download = tmp_path / "archive.zip"  # as Kaggle serves it: every file at the top of one zip
    with zipfile.ZipFile(download, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, path.name)
    summary = retrain(data_dir=download, settings=settings)
    files = {name: len(_rows(folder / name)) for name in ("rating_complete.csv", "animelist.csv")}
    per_source = summary.data.counts.per_source
    assert {name: counts["rows_in"] for name, counts in per_source.items()} == files
    for c in per_source.values():
        assert c["rows_in"] == c["accepted"] + c["unrated"] + c["quarantined"] + c["superseded"]
    assert per_source["rating_complete.csv"]["accepted"] == files["rating_complete.csv"]
    statuses = summary.data.counts.unrated_by_status.keys()
    assert statuses >= {"watching", "completed", "on hold", "dropped", "plan to watch"}
    outcome = summary.outcome
    assert outcome.decision.promoted and outcome.evaluation.ranking.served.ndcg > \
        outcome.evaluation.ranking.popularity.ndcg
    assert outcome.ranking_fit.model.interaction.status_weights[4] == settings.ranking.dropped_weight
    unrated = pq.read_table(outcome.run.matrix.path / "unrated.parquet")
    assert set(unrated["watching_status"].to_pylist()) == {1, 2, 3, 4, 6}
    text = summary.format(settings.registered_model_name)
    assert "(Kaggle 2020 layout)" in text and "animelist.csv" in text and "nan" not in text.lower()


@NEEDS_HEAD
def test_the_matrix_keeps_each_interaction_with_its_status(head_folder, settings):
    validated = validate(ingest(head_folder), settings)
    matrix = build_utility_matrix(validated, settings)
    known = matrix.interactions(("train",), settings.unrated_value)
    unrated = known.filter(known["rating"].to_numpy() == settings.unrated_value)
    assert unrated.num_rows and set(unrated["watching_status"].to_pylist()) <= {1, 2, 3, 4, 6}
    rated = known.filter(known["rating"].to_numpy() != settings.unrated_value)
    assert set(rated["watching_status"].to_pylist()) == {0}
