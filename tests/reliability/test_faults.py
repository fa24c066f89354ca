"""Faults: a process killed mid-write or mid-training, a registry that fails, a damaged champion.

Kills are real SIGKILLs of child processes; the store is a real MLflow sqlite store; flows run on the
real Prefect engine (the session's temporary server).
"""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.csv as pacsv
import pytest
from conftest import PROJECT_ROOT, RATING_HEADER, child_env, copy_store, write_csv
from mlflow import MlflowClient

import flows.retrain
from flows import cli
from flows.retrain import retrain
from pipeline.data.ingest import ingest
from pipeline.errors import RegistryUnavailableError
from pipeline.matrix.utility_matrix import UtilityMatrix, build_utility_matrix
from pipeline.models.rating.scorer import ARRAYS_FILE
from pipeline.registry.scores import CHAMPION
from pipeline.serving.bundle import BUNDLE, load_recommender
from pipeline.serving.presentation import recommend
from pipeline.validation.validate import validate

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


def _client(settings) -> MlflowClient:
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def _versions(settings) -> list[str]:
    found = _client(settings).search_model_versions(f"name = '{settings.registered_model_name}'")
    return sorted(str(v.version) for v in found)


def _champion(settings) -> str:
    return str(_client(settings).get_model_version_by_alias(settings.registered_model_name, CHAMPION).version)


def _kill_when(marker: Path, child: subprocess.Popen, timeout: float = 240) -> None:
    """SIGKILL the child as soon as it has created `marker` (it then sleeps, waiting to be killed)."""
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert child.poll() is None, f"child exited early: {child.communicate()}"
        assert time.monotonic() < deadline, "child never reached the kill point"
        time.sleep(0.1)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL


def _changed_copy(small_data: Path, target: Path) -> Path:
    """The same data set with one more rating (so a new data version)."""
    target.mkdir(parents=True)
    for name in ("rating.csv", "anime.csv"):
        (target / name).write_bytes((small_data / name).read_bytes())
    anime = pacsv.read_csv(small_data / "anime.csv")["anime_id"][0].as_py()
    with (target / "rating.csv").open("a") as handle:
        handle.write(f"999001,{anime},7\n")
    return target


KILL_DURING_MATRIX_WRITE = """
import sys, time
from pathlib import Path
from pipeline.matrix import utility_matrix
from pipeline.data.ingest import ingest
from pipeline.settings import Settings
from pipeline.validation.validate import validate

settings = Settings()
validated = validate(ingest(Path(sys.argv[1])), settings)
write_table = utility_matrix.pq.write_table

def write_then_wait(table, where, **kwargs):
    write_table(table, where, **kwargs)
    Path(sys.argv[2]).touch()  # one Parquet file is written: kill me now
    time.sleep(120)

utility_matrix.pq.write_table = write_then_wait
utility_matrix.build_utility_matrix(validated, settings)
"""


def test_sigkill_while_writing_the_matrix_keeps_the_previous_one(small_data, settings, tmp_path):
    previous = build_utility_matrix(validate(ingest(small_data), settings), settings)
    before = {p.name: p.read_bytes() for p in previous.path.iterdir()}
    changed = _changed_copy(small_data, tmp_path / "changed")
    marker = tmp_path / "written-one-file"
    child = subprocess.Popen([sys.executable, "-c", KILL_DURING_MATRIX_WRITE, str(changed), str(marker)],
                             env=child_env(settings), cwd=PROJECT_ROOT)
    _kill_when(marker, child)

    assert {p.name: p.read_bytes() for p in previous.path.iterdir()} == before
    assert UtilityMatrix.open(previous.path).data_version == previous.data_version
    finished = [p.name for p in settings.matrix_root.iterdir() if not p.name.startswith(".")]
    assert finished == [previous.path.name]  # the killed build left no folder under a real name
    rebuilt = build_utility_matrix(validate(ingest(changed), settings), settings)
    assert rebuilt.data_version != previous.data_version and rebuilt.split_sizes["train"] > 0
    assert not [p for p in settings.matrix_root.iterdir() if p.name.startswith(f".{rebuilt.data_version}.")]


def test_registry_errors_are_retried_with_backoff(small_data, settings, monkeypatch):
    settings.registry_retry_delay_seconds = 0.1
    calls = []
    register = flows.retrain.register_and_decide

    def locked_twice(*args, **kwargs):
        calls.append(time.monotonic())
        if len(calls) <= 2:
            raise sqlite3.OperationalError("database is locked")
        return register(*args, **kwargs)

    monkeypatch.setattr(flows.retrain, "register_and_decide", locked_twice)
    summary = retrain(data_dir=small_data, settings=settings)
    assert len(calls) == 3 and summary.outcome.decision.version == "1"
    gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    assert gaps[1] > gaps[0] >= 0.1  # backoff grows


@pytest.mark.xdist_group("champion-store")  # one worker copies one trained store
def test_a_registry_that_stays_down_fails_the_run_and_leaves_the_champion_and_the_inbox(
        small_data, settings, tmp_path, monkeypatch, champion_store):
    """The run fails before its commit: the champion stays, and the inbox file it read stays for the next run (which
    merges it: the kill test's last run)."""
    copy_store(champion_store, settings)
    assert _champion(settings) == "1"
    anime = pacsv.read_csv(small_data / "anime.csv")["anime_id"][0].as_py()
    inbox_file = write_csv(settings.inbox_dir / "late.csv", RATING_HEADER, [[999_002, anime, 8]])
    settings.registry_retry_delay_seconds = 0.05
    attempts = []

    def unreachable(*args, **kwargs):
        attempts.append(1)
        raise ConnectionError("MLflow registry unreachable")

    monkeypatch.setattr(flows.retrain, "register_and_decide", unreachable)
    with pytest.raises(RegistryUnavailableError, match=r"after 4 attempts \(ConnectionError: MLflow registry unr"):
        retrain(data_dir=_changed_copy(small_data, tmp_path / "changed"), settings=settings)
    assert len(attempts) == settings.registry_retries + 1
    assert _versions(settings) == ["1"] and _champion(settings) == "1"
    assert inbox_file.exists() and list(settings.archive_dir.glob("*")) == []  # nothing archived


def _corrupt_champion(settings) -> str:
    """Overwrite the champion's served rating weights in the store (the only version so far) with garbage."""
    version = _client(settings).get_model_version_by_alias(settings.registered_model_name, CHAMPION)
    weight_files = list(settings.mlruns_dir.rglob(ARRAYS_FILE))
    assert len(weight_files) == 1, weight_files
    weight_files[0].write_bytes(b"not an array archive")
    return str(version.version)


@pytest.mark.xdist_group("champion-store")  # one worker copies one trained store
def test_a_corrupted_champion_fails_recommendations_clearly_and_retraining_still_works(
        small_data, settings, tmp_path, monkeypatch, capsys, champion_store):
    copy_store(champion_store, settings)
    version = _corrupt_champion(settings)
    monkeypatch.setenv("ANIMEREC_DATA_ROOT", str(settings.data_root))
    monkeypatch.setenv("ANIMEREC_MLRUNS_DIR", str(settings.mlruns_dir))
    user = pacsv.read_csv(small_data / "rating.csv")["user_id"][0].as_py()
    capsys.readouterr()
    assert cli.main(["recommend", "--user-id", str(user)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and f"cannot load anime-recommender version {version} (champion)" in err[0]

    summary = retrain(data_dir=_changed_copy(small_data, tmp_path / "changed"), settings=settings)
    decision = summary.outcome.decision
    assert decision.version == "2" and decision.promoted and _champion(settings) == "2"
    assert f"champion v{version} could not be loaded" in decision.reason
    assert f"champion v{version} could not be loaded" in summary.outcome.new_data.not_scored  # and drift measured
    assert summary.outcome.new_data.drift is not None
    assert cli.main(["recommend", "--user-id", str(user)]) == 0


@pytest.mark.xdist_group("champion-store")  # one worker copies one trained store
def test_a_champion_from_before_the_ranking_model_is_migrated_and_compared_fairly(
        small_data, settings, tmp_path, monkeypatch, capsys, champion_store):
    """A version registered before there was a ranking model (its bundle has no `ranking/` folder) is brought to
    today's shape as it loads: a ranking model fitted on its own known pairs. It serves lists with their reasons,
    and a retrain re-scores it like any champion."""
    copy_store(champion_store, settings)
    ranking_folders = [p for p in settings.mlruns_dir.rglob("ranking") if p.is_dir() and p.parent.name == BUNDLE]
    assert len(ranking_folders) == 1, ranking_folders
    today = load_recommender(f"models:/{settings.registered_model_name}@{CHAMPION}")
    shutil.rmtree(ranking_folders[0])
    old = load_recommender(f"models:/{settings.registered_model_name}@{CHAMPION}")
    assert old.ranking.weights.nnz and old.ranking.weights.shape == today.ranking.weights.shape
    user = int(old.users.ids[0])
    top = recommend(old, user, 10)
    assert len(top) == 10 and top["because_you_watched"].str.len().gt(0).all()
    assert not set(top["anime_id"]) & set(old.anime.ids[old.known_anime(old.users.index(user))])
    monkeypatch.setenv("ANIMEREC_DATA_ROOT", str(settings.data_root))
    monkeypatch.setenv("ANIMEREC_MLRUNS_DIR", str(settings.mlruns_dir))
    assert cli.main(["recommend", "--user-id", str(user), "--top", "3"]) == 0
    assert cli.main(["similar", "--anime", str(int(old.anime.ids[0])), "--top", "3"]) == 0

    summary = retrain(data_dir=_changed_copy(small_data, tmp_path / "changed"), settings=settings)
    decision = summary.outcome.decision
    assert decision.champion_rescored and decision.champion.ndcg is not None
