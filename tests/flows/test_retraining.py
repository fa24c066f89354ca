"""Retraining as it runs unattended: new files in the inbox, unchanged data, and a second run while one is in
flight (a run that fails before its commit: tests/reliability). Real Prefect flow, real MLflow sqlite store."""

import subprocess
import sys

import pyarrow.csv as pacsv
import pytest
from conftest import RATING_HEADER, write_csv
from mlflow import MlflowClient

from flows.retrain import retrain
from pipeline.settings import DriftConfig
from pipeline.storage import LockBusyError

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


def _versions(settings):
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    return client.search_model_versions(f"name = '{settings.registered_model_name}'")


def _some_anime_ids(small_data, n=2):
    return pacsv.read_csv(small_data / "anime.csv")["anime_id"].to_pylist()[:n]


def _new_anime_id(small_data) -> int:
    rated = set(pacsv.read_csv(small_data / "rating.csv")["anime_id"].to_pylist())
    return min(set(pacsv.read_csv(small_data / "anime.csv")["anime_id"].to_pylist()) - rated)


def test_inbox_is_merged_archived_and_unchanged_data_skip_training(small_data, settings):
    base_rows = pacsv.read_csv(small_data / "rating.csv").num_rows
    all_anime = _some_anime_ids(small_data, 12)
    first_anime, second_anime = all_anime[:2]
    write_csv(settings.inbox_dir / "2026-11-27.csv", RATING_HEADER,
              [[1, first_anime, 10], [999_001, first_anime, 7], [999_001, second_anime, 9]])
    summary = retrain(data_dir=small_data, skip_unchanged=True, settings=settings)

    assert summary.data.counts.rows_in == base_rows + 3
    assert list(settings.inbox_dir.iterdir()) == []
    assert [p.name for p in settings.archive_dir.iterdir()] == ["000001-2026-11-27.csv"]
    user_ids = pacsv.read_csv(small_data / "rating.csv")["user_id"].to_pylist()
    assert summary.outcome.run.matrix.n_users == len(set(user_ids)) + 1  # the new user is in the matrix
    assert len(_versions(settings)) == 1

    again = retrain(data_dir=small_data, skip_unchanged=True, settings=settings)
    assert again.outcome is None and again.data.data_version == summary.data.data_version
    assert again.data.counts.rows_in == base_rows + 3  # archived files stay part of the data, applied once
    assert len(_versions(settings)) == 1
    assert "Retrain skipped" in again.format(settings.registered_model_name)

    newcomers = [[user, anime, 1 + (user + anime) % 10] for user in (999_002, 999_003) for anime in all_anime[:12]]
    on_new_anime = [1, _new_anime_id(small_data), 5]  # a known user rates an anime of anime.csv nobody had rated
    write_csv(settings.inbox_dir / "2026-11-28.csv", RATING_HEADER,
              [[999_001, first_anime, 2], *newcomers, on_new_anime])
    drift_on_any_new_user = settings.model_copy(update={"drift": DriftConfig(new_user_share=0)})
    changed = retrain(data_dir=small_data, skip_unchanged=True, settings=drift_on_any_new_user)
    assert changed.outcome is not None and changed.data.data_version != summary.data.data_version
    assert changed.data.counts.superseded == again.data.counts.superseded + 1  # 999_001 re-rated: the newest rating won
    assert [p.name for p in sorted(settings.archive_dir.iterdir())] == ["000001-2026-11-27.csv",
                                                                        "000002-2026-11-28.csv"]
    _check_the_champion_was_judged_on_the_new_ratings(changed, [*newcomers, on_new_anime], settings)


def _check_the_champion_was_judged_on_the_new_ratings(summary, newcomers, settings):
    """Before training, version 1 (the champion) was scored on the ratings it never saw (the newcomers'; the re-rated
    pair it saw), beside its registered test scores; the drift report went to the run and noted on version 2."""
    new_data = summary.outcome.new_data
    assert new_data.champion_version == "1" and new_data.new_ratings == len(newcomers)
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    on_new, version_1 = new_data.champion_on_new, client.get_model_version(settings.registered_model_name, "1")
    assert on_new.n_ratings == len(newcomers) and on_new.rmse > 0
    assert new_data.champion_test_scores.rmse == pytest.approx(float(version_1.tags["test_rmse"]))
    assert on_new.n_users == 0  # newcomers only: no list the champion could have made from their history
    fresh = new_data.champion_on_new_anime  # the new anime's one rating, scored from its features
    assert new_data.new_anime == 1 and fresh.n_ratings == 1
    assert fresh.rmse != pytest.approx(abs(5 - summary.outcome.run.matrix.train_mean_rating), abs=1e-3)
    run = client.get_run(summary.outcome.run.run_id)
    assert run.data.metrics["champion_new_ratings_rmse"] == pytest.approx(on_new.rmse)
    assert run.data.metrics["drift_new_user_share"] == pytest.approx(2 / summary.outcome.run.matrix.n_users)
    assert "new_user_share" in run.data.tags["drift_detected"].split(", ")
    assert {a.path for a in client.list_artifacts(run.info.run_id, "drift")} == {"drift/report.html",
                                                                                  "drift/report.json"}
    text = summary.format(settings.registered_model_name)
    assert f"champion v1 on {len(newcomers)} new ratings: RMSE {on_new.rmse:.4f}" in text
    assert "share of new users" in text and "DRIFTED" in text
    assert f"1 new anime (rated now, not in its data): RMSE {fresh.rmse:.4f} on their 1 ratings" in text
    version_2 = client.get_model_version(settings.registered_model_name, "2")
    assert "drifted from champion v1's: share of new users" in version_2.description


def test_a_second_run_is_refused_while_another_holds_the_lock(small_data, settings):
    script = ("import sys, time\nfrom pathlib import Path\nfrom pipeline.storage import exclusive_lock\n"
              "with exclusive_lock(Path(sys.argv[1]), 0):\n    print('held', flush=True)\n    time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", script, str(settings.lock_path)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        settings.lock_wait_seconds = 1
        with pytest.raises(LockBusyError, match="another retrain is running"):
            retrain(data_dir=small_data, settings=settings)
        assert not settings.matrix_root.exists() and _versions(settings) == []
    finally:
        holder.kill()
        holder.wait()
