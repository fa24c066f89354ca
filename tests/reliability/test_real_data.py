"""Real data as people bring it: files from other tools and other data sets, one case per test.

docs/reliability.md lists each case. Every test compares against the same data written plainly, so what is
checked is "read the same", not a count written into the test.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import logging.handlers
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pyarrow.csv as pacsv
import pytest
from conftest import ANIME_HEADER, PROJECT_ROOT, RATING_HEADER, validate_with_both_engines, write_csv, write_dataset

from flows import cli
from pipeline.data.dataset_config import DATASET_FILE, for_dataset
from pipeline.data.ingest import ingest
from pipeline.errors import PipelineInputError
from pipeline.matrix.utility_matrix import build_utility_matrix
from pipeline.serving.presentation import recommend
from pipeline.validation.validate import validate

GOOD = [[1, 10, 8], [1, 11, 9], [2, 10, 7], [2, 12, -1], [3, 11, 6], [3, 12, 10], [4, 13, 5]]
ANIME = [[i, f"Anime {i}", "Action", "TV", 12, 7.5, 100] for i in (10, 11, 12, 13)]


def _validated(folder, settings):
    """Validated by the Arrow engine, checked equal to GX's own engine (conftest.validate_with_both_engines)."""
    return validate_with_both_engines(ingest(folder, settings.inbox_dir, settings.archive_dir), settings)


def _plain(tmp_path, settings):
    return _validated(write_dataset(tmp_path / "plain", GOOD, ANIME), settings)


@pytest.fixture
def lenient(settings):
    settings.max_quarantine_share = 1.0  # tiny fixtures: one bad row is far above 5%
    return settings


def _text(header: list[str], rows: list[list[object]], separator: str = ",") -> str:
    return "".join(separator.join(str(v) for v in row) + "\n" for row in [header, *rows])


def test_user_and_anime_id_zero_are_valid_ids(tmp_path, lenient):
    rows = [*GOOD, [0, 10, 9], [0, 11, 4], [5, 0, 7]]
    validated = _validated(write_dataset(tmp_path / "data", rows, [*ANIME, [0, "Anime 0", "", "TV", 1, 7.0, 1]]),
                           lenient)
    assert validated.counts.quarantined == 0
    assert {(0, 10, 9), (0, 11, 4), (5, 0, 7)} <= {tuple(r.values()) for r in validated.ratings.to_pylist()}
    negative = _validated(write_dataset(tmp_path / "negative", [*GOOD, [-1, 10, 9]], ANIME), lenient)
    assert [r["reason"] for r in negative.quarantine.to_pylist()] == ["user_id is negative"]


@pytest.mark.parametrize("column", ["user_id", "anime_id"])
def test_an_id_of_20_digits_is_quarantined_and_the_rest_is_kept(tmp_path, lenient, column):
    huge = "12345678901234567890"
    bad = [huge, 10, 8] if column == "user_id" else [5, huge, 8]
    validated = _validated(write_dataset(tmp_path / "data", [*GOOD, bad], ANIME), lenient)
    [row] = validated.quarantine.to_pylist()
    assert column in row["reason"] and "out of range" in row["reason"] and row["row_number"] == len(GOOD) + 1
    plain = _plain(tmp_path, lenient)
    assert validated.ratings.to_pylist() == plain.ratings.to_pylist()


def test_spaces_after_commas_read_the_same(tmp_path, lenient):
    folder = write_dataset(tmp_path / "data", GOOD, ANIME)
    (folder / "rating.csv").write_text(_text(RATING_HEADER, GOOD, separator=", "))
    (folder / "anime.csv").write_text(_text(ANIME_HEADER, ANIME, separator=" , "))
    spaced, plain = _validated(folder, lenient), _plain(tmp_path, lenient)
    assert spaced.counts == plain.counts and spaced.counts.quarantined == 0
    assert spaced.ratings.to_pylist() == plain.ratings.to_pylist()
    assert spaced.anime.to_pylist() == plain.anime.to_pylist()


@pytest.mark.parametrize("header", [["User_ID", "Anime_ID", "Rating"], ["userId", "animeId", "rating"],
                                    ["User ID", "Anime ID", "Rating"], ["user_id", "item_id", "rating"]])
def test_column_names_are_matched_ignoring_case(tmp_path, lenient, header):
    folder = write_dataset(tmp_path / "data", GOOD, ANIME)
    write_csv(folder / "rating.csv", header, GOOD)
    write_csv(folder / "anime.csv", [name.upper() for name in ANIME_HEADER], ANIME)
    upper, plain = _validated(folder, lenient), _plain(tmp_path, lenient)
    assert upper.ratings.to_pylist() == plain.ratings.to_pylist() and upper.anime.to_pylist() == plain.anime.to_pylist()


def test_integer_valued_decimals_are_accepted_and_fractions_quarantined(tmp_path, lenient):
    decimals = [[f"{u}.0", f"{a}.0", f"{r}.0"] for u, a, r in GOOD]
    validated = _validated(write_dataset(tmp_path / "data", [*decimals, [5, 10, "7.5"]], ANIME), lenient)
    assert validated.ratings.to_pylist() == _plain(tmp_path, lenient).ratings.to_pylist()
    assert [r["reason"] for r in validated.quarantine.to_pylist()] == ["column 'rating' value '7.5' is not an integer"]


@pytest.mark.parametrize("packing", ["gz", "bz2", "zip", "zip in a folder", "zip given as --data"])
def test_compressed_and_zipped_files_are_read_directly(tmp_path, lenient, packing):
    plain = write_dataset(tmp_path / "plain", GOOD, ANIME)
    folder = tmp_path / "packed"
    folder.mkdir()
    files = {name: (plain / name).read_bytes() for name in ("rating.csv", "anime.csv")}
    if packing in ("gz", "bz2"):
        compress = gzip.compress if packing == "gz" else bz2.compress
        (folder / f"rating.csv.{packing}").write_bytes(compress(files["rating.csv"]))
        (folder / "anime.csv").write_bytes(files["anime.csv"])
    else:
        with zipfile.ZipFile(folder / "archive.zip", "w", zipfile.ZIP_DEFLATED) as archive:
            for name, content in files.items():
                archive.writestr(f"anime-data/{name}" if packing == "zip in a folder" else name, content)
    data = folder / "archive.zip" if packing == "zip given as --data" else folder
    packed = validate(ingest(data), lenient)
    unpacked = validate(ingest(plain), lenient)
    assert packed.ratings.to_pylist() == unpacked.ratings.to_pylist() and packed.counts == unpacked.counts
    assert packed.anime.to_pylist() == unpacked.anime.to_pylist()


def test_data_given_as_the_rating_file_itself_says_to_give_its_folder(tmp_path, lenient):
    folder = write_dataset(tmp_path / "data", GOOD, ANIME)
    with pytest.raises(PipelineInputError, match=r"rating\.csv: is a file; give the folder that holds it"):
        ingest(folder / "rating.csv")


def test_a_damaged_archive_stops_with_one_line(tmp_path, lenient):
    folder = write_dataset(tmp_path / "data", GOOD, ANIME)
    (folder / "rating.csv").unlink()
    (folder / "rating.csv.gz").write_bytes(gzip.compress(b"user_id,anime_id,rating\n" + b"1,10,8\n" * 5000)[:-200])
    with pytest.raises(PipelineInputError) as raised:
        _validated(folder, lenient)
    assert str(raised.value).startswith(str(folder / "rating.csv.gz")) and "\n" not in str(raised.value)


@pytest.mark.parametrize("variant", ["BOM", "quoted fields", "blank lines", "columns in another order"])
def test_files_that_were_already_read_well_still_are(tmp_path, lenient, variant):
    folder = write_dataset(tmp_path / "data", GOOD, ANIME)
    text = _text(RATING_HEADER, GOOD)
    if variant == "BOM":
        text = "\ufeff" + text
    elif variant == "quoted fields":
        text = "".join(",".join(f'"{v}"' for v in line.split(",")) + "\n" for line in text.splitlines())
    elif variant == "blank lines":
        text = text.replace("\n", "\n\n")
    else:
        text = _text(["rating", "anime_id", "user_id"], [row[::-1] for row in GOOD])
    (folder / "rating.csv").write_text(text, encoding="utf-8")
    assert _validated(folder, lenient).ratings.to_pylist() == _plain(tmp_path, lenient).ratings.to_pylist()


def _five_point(folder: Path) -> Path:
    """GOOD on a 1–5 scale (each rating halved, rounded up), with enough users for a test split."""
    rows = [[u, a, (r + 1) // 2 if r > 0 else r] for u, a, r in GOOD]
    rows += [[u, 10 + a, 1 + (u * 7 + a * 3) % 5] for u in range(10, 60) for a in range(4)]
    return write_dataset(folder, rows, ANIME)


def test_the_rating_scale_is_declared_per_data_set_and_checked(tmp_path, settings):
    folder = _five_point(tmp_path / "five")
    declared, origin = for_dataset(settings, folder)
    assert (declared.rating_min, declared.rating_max, origin.rating_scale) == (1, 10, "default")
    warning = validate(ingest(folder), declared).scale.warning
    assert "only 1-5 of the declared 1-10 scale" in warning and "RATING_SCALE=1-5" in warning

    (folder / DATASET_FILE).write_text('rating_scale = "1-5"\n')
    declared, origin = for_dataset(settings, folder)
    assert (declared.rating_min, declared.rating_max, declared.relevant_rating) == (1, 5, 4)
    assert origin.rating_scale == str(folder / DATASET_FILE)
    assert validate(ingest(folder), declared).scale.warning is None
    explicit, origin = for_dataset(settings, folder, "0-10")  # the command line wins over dataset.toml
    assert (explicit.rating_min, explicit.rating_max, origin.rating_scale) == (0, 10, "RATING_SCALE")
    assert settings.relevant_rating == 8  # ≥ 8 of 1–10, as before

    for bad in ("5-1", "one to five", "1-5-7"):
        with pytest.raises(PipelineInputError, match="RATING_SCALE: rating scale"):
            for_dataset(settings, folder, bad)
    (folder / DATASET_FILE).write_text('rating_scale = "1-5"\nscale_max = 5\n')
    with pytest.raises(PipelineInputError, match=r"dataset\.toml: unknown key scale_max"):
        for_dataset(settings, folder)


def test_a_rerun_with_another_scale_writes_its_own_matrix_folder(tmp_path, settings):
    folder = _five_point(tmp_path / "five")
    validated = validate(ingest(folder), settings)
    ten = build_utility_matrix(validated, settings)
    five_settings = for_dataset(settings, folder, "1-5")[0]
    five = build_utility_matrix(validate(ingest(folder), five_settings), five_settings)
    assert ten.data_version == five.data_version and ten.path != five.path and ten.split_id != five.split_id
    assert ten.path.is_dir() and five.path.is_dir()
    assert ten.scale.maximum == 10 and type(ten).open(ten.path).scale.maximum == 10  # not overwritten
    settings.split_seed += 1  # split settings too
    assert build_utility_matrix(validated, settings).path not in (ten.path, five.path)


@pytest.mark.slow
def test_a_five_point_data_set_prints_its_scale_and_real_top_10_numbers(tmp_path, prefect_server, monkeypatch,
                                                                        capsys):
    """`animerec retrain` as a user runs it (what it prints and what Prefect logs are both checked), here in this
    process on the session's Prefect server."""
    folder = _five_point(tmp_path / "five")
    monkeypatch.setenv("ANIMEREC_DATA_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("ANIMEREC_MLRUNS_DIR", str(tmp_path / "mlruns"))
    monkeypatch.setenv("ANIMEREC_TRAINING__EMBEDDING_DIM", "16")
    logs = logging.handlers.BufferingHandler(capacity=100_000)
    logging.getLogger("prefect").addHandler(logs)

    def retrain(*options: str) -> str:
        logs.flush()
        capsys.readouterr()
        assert cli.main(["retrain", "--data", str(folder), "--epochs", "3", *options]) == 0
        logged = "\n".join(record.getMessage() for record in logs.buffer)
        assert "Finished in state Completed()" in logged  # the flow's logs were seen
        printed = capsys.readouterr().out
        assert not re.search(r"\bnan\b", printed + logged, re.IGNORECASE)
        return printed

    try:
        out = retrain()
        assert "1-10 (default)" in out and "only 1-5 of the declared 1-10 scale" in out
        assert "not measured: no test rating >= 8" in out

        out = retrain("--rating-scale", "1-5")
        assert "rating scale      1-5 (RATING_SCALE); relevant for top-10: rating >= 4" in out
        assert "test scores (1-5 scale)" in out and "warning" not in out
        served = next(line for line in out.splitlines() if "served (ranking model)" in line).split()
        assert 0 < float(served[-3]) <= 1  # NDCG@10 measured
    finally:
        logging.getLogger("prefect").removeHandler(logs)


def test_an_expected_stop_prints_one_error_line_and_no_traceback(tmp_path, prefect_home):
    """`animerec retrain` as a user runs it: its own process and temporary Prefect server, all output kept."""
    folder = write_dataset(tmp_path / "data", GOOD, ANIME)
    write_csv(folder / "rating.csv", ["user_id", "anime_id", "score"], GOOD)
    env = os.environ | {"ANIMEREC_DATA_ROOT": str(tmp_path / "root"), "ANIMEREC_MLRUNS_DIR": str(tmp_path / "mlruns"),
                        "PREFECT_HOME": str(prefect_home)}
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run([sys.executable, "-m", "flows", "retrain", "--data", str(folder)], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {folder / 'rating.csv'}: missing column 'rating' (header has user_id,anime_id,score)"]
    assert "Traceback" not in done.stderr and "PipelineInputError" not in done.stderr


def test_an_anime_missing_from_anime_csv_is_null_in_served_json(small_data, settings, tmp_path, capsys):
    from mlflow.pyfunc.scoring_server import predictions_to_json

    from flows.commands import show
    from pipeline.models.ranking.fit import train_ranking_model
    from pipeline.models.rating.train import train_model
    from pipeline.serving.bundle import RecommenderModel
    from pipeline.serving.catalog import NOT_IN_METADATA
    from pipeline.serving.recommend import Recommender

    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "rating.csv").write_bytes((small_data / "rating.csv").read_bytes())
    anime = pacsv.read_csv(small_data / "anime.csv")
    anime.slice(0, anime.num_rows // 2).to_pandas().to_csv(folder / "anime.csv", index=False)  # half the names
    settings.training.epochs = 2
    matrix = build_utility_matrix(validate(ingest(folder), settings), settings)
    served = RecommenderModel()
    served.recommender = Recommender.from_matrix(
        train_model(matrix, settings.training).model,
        train_ranking_model(matrix, settings.ranking, settings.unrated_value, settings.relevance_threshold).model,
        matrix, settings.unrated_value)
    users = served.recommender.users.ids[:20]
    answer = served.predict(None, pd.DataFrame({"user_id": users}), {"n": 10})
    text = io.StringIO()
    predictions_to_json(answer, text)

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    rows = json.loads(text.getvalue(), parse_constant=refuse)["predictions"]  # strict, as JSON.parse
    named = set(anime["anime_id"].to_pylist()[: anime.num_rows // 2])
    missing = [r for r in rows if r["anime_id"] not in named]
    assert missing and all(r["name"] is None for r in missing)
    assert all(isinstance(r["name"], str) for r in rows if r["anime_id"] in named)

    show(recommend(served.recommender, int(users[0]), 50))
    out = capsys.readouterr().out
    assert NOT_IN_METADATA in out and "NaN" not in out and "nan" not in out
