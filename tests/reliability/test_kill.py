"""`make pipeline` as a user runs it (its own process and temporary Prefect server, all output kept), killed with
`kill -9` while it trains (its MLflow run open, TensorFlow's threads running) and then run to the end: no process of
the killed run survives it, it registers nothing and leaves the inbox and the app ratings' export uncommitted, the next
run marks its MLflow run KILLED and exports each app rating exactly once, and every line a run prints is a Prefect log
line or the summary."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.csv as pacsv
import pytest
from conftest import PROJECT_ROOT, RATING_HEADER, new_postgres_database, write_csv
from mlflow import MlflowClient
from sqlalchemy import select

from pipeline.data.ratings_db.export import read_app_ratings
from pipeline.data.ratings_db.schema import APP_USER_ID_BASE, exports
from pipeline.data.ratings_db.store import RatingsStore, WriteLimits
from pipeline.matrix.utility_matrix import UtilityMatrix
from pipeline.monitoring.new_ratings import all_ratings

pytestmark = pytest.mark.slow

PREFECT_LINE = r"\d\d:\d\d:\d\d\.\d{3} \| (INFO|WARNING) +\| (Flow|Task) run '[\w-]+' - "
ALLOWED_LINES = [re.compile(shape) for shape in (
    PREFECT_LINE,
    r"suite '\w+' on .+: \d+/\d+ expectations passed",  # the lines of the validation log record
    r"Retrain finished \(MLflow run [0-9a-f]{32}\)$",
    r" {2,}\S",  # the summary's rows
)]
NOISE = ("absl", "oneDNN", "CloudPickle", "Downloading artifacts", "Traceback", "Error logging to API")
KILL_POINT = re.compile(r".* \| Task run 'train-\w{3}' - Finished in state Completed")  # then train-ranking runs


def _children(pid: int) -> list[int]:
    found = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in found.read_text().split()] if found.exists() else []


def _descendants(pid: int) -> list[int]:
    return [child for direct in _children(pid) for child in [direct, *_descendants(direct)]]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; only its exit status is left for its parent


def _pipeline(small_data: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(["make", "-s", "pipeline", f"DATA={small_data}"], cwd=PROJECT_ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _kill_the_run_after(make: subprocess.Popen, point: re.Pattern) -> list[int]:
    """Read the run's output until `point`, then kill -9 the `animerec` process (not make); its processes then."""
    lines = []
    for line in make.stdout:
        lines.append(line)
        if point.match(line):
            break
    else:
        pytest.fail("the run ended before its kill point:\n" + "".join(lines))
    run = next(pid for pid in _children(make.pid) if "animerec" in Path(f"/proc/{pid}/cmdline").read_text())
    processes = [run, *_descendants(run)]
    assert len(processes) >= 2, "the run has its temporary Prefect server"
    os.kill(run, signal.SIGKILL)
    make.wait(timeout=60)  # make ends with its child; a survivor may still hold the output pipe
    make.stdout.close()
    return processes


def _app_ratings(url: str, dataset: str, anime: list[int]) -> RatingsStore:
    """Two profiles' ratings kept by the app (the second changes one of its ratings), in the database at `url`."""
    ratings = RatingsStore.open(url)
    limits = WriteLimits(per_minute=100, max_ratings=100)
    for profile in (ratings.create_profile()[1] for _ in range(2)):
        for rating, anime_id in enumerate(anime, start=5):
            ratings.rate(profile, dataset, anime_id, rating, limits)
    ratings.rate(profile, dataset, anime[0], 10, limits)
    return ratings


def _exports(ratings: RatingsStore) -> list[tuple]:
    with ratings.engine.connect() as connection:
        return connection.execute(select(exports.c.run_id, exports.c.ratings, exports.c.new_ratings)).all()


def test_a_killed_run_leaves_no_process_and_the_next_run_cleans_up_and_prints_only_its_log(
        small_data, settings, prefect_home, postgres_server):
    database = new_postgres_database(postgres_server)  # the app's ratings on a real PostgreSQL server
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_API")}
    env |= {"PREFECT_HOME": str(prefect_home), "ANIMEREC_DATA_ROOT": str(settings.data_root),
            "ANIMEREC_MLRUNS_DIR": str(settings.mlruns_dir), "ANIMEREC_DATASET_NAME": settings.dataset_name,
            "ANIMEREC_TRAINING__EPOCHS": "3", "ANIMEREC_TRAINING__EMBEDDING_DIM": "16",
            "ANIMEREC_RATINGS_DB": database}
    anime = pacsv.read_csv(small_data / "anime.csv")["anime_id"].to_pylist()[:3]
    inbox_file = write_csv(settings.inbox_dir / "late.csv", RATING_HEADER, [[999_002, anime[0], 8]])
    store = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    ratings = _app_ratings(database, settings.dataset_name, anime)

    processes = _kill_the_run_after(_pipeline(small_data, env), KILL_POINT)
    deadline = time.monotonic() + 10
    while any(map(_alive, processes)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in processes if _alive(pid)], "processes of the killed run survive"
    assert store.search_registered_models() == [] and inbox_file.exists()
    assert _exports(ratings) == []  # it had read the app's ratings, and died before committing their export
    experiment = store.get_experiment_by_name(settings.experiment_name)
    killed = store.search_runs([experiment.experiment_id])
    assert [run.info.status for run in killed] == ["RUNNING"]  # nobody closed it

    make = _pipeline(small_data, env)
    output, _ = make.communicate(timeout=300)
    assert make.returncode == 0, output
    assert not [word for word in NOISE if word in output], output
    unexpected = [line for line in output.splitlines() if not any(shape.match(line) for shape in ALLOWED_LINES)]
    assert unexpected == [], output
    assert "Retrain finished" in output and "registered        anime-recommender version 1" in output
    assert store.get_run(killed[0].info.run_id).info.status == "KILLED"
    assert not inbox_file.exists()
    finished = next(run for run in store.search_runs([experiment.experiment_id]) if run.info.status == "FINISHED")
    assert _exports(ratings) == [(finished.info.run_id, 6, 6)]  # exported once, by the run that finished
    assert read_app_ratings(ratings, settings.dataset_name, -1).new_ratings == 0  # and never again
    matrices = [UtilityMatrix.open(path.parent) for path in settings.matrix_root.glob("*/metadata.json")]
    for matrix in matrices:  # the killed run built the same matrix: both hold each app rating once, the last value
        table = all_ratings(matrix, ["user_id", "anime_id", "rating"]).to_pandas()
        app = table[table.user_id >= APP_USER_ID_BASE]
        assert len(app) == 6 and not app.duplicated(["user_id", "anime_id"]).any()
        assert sorted(app.rating) == [5, 6, 6, 7, 7, 10]
    assert matrices
    ratings.close()
