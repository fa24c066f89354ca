"""Security: servers local by default, models loaded as arrays or in Keras safe mode, data never evaluated, no writes
outside the data folders."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlsplit

import keras
import numpy as np
import pytest
from conftest import RATING_HEADER, listening_hosts, write_csv, write_dataset

from flows.arguments import build_parser
from pipeline.data.ingest import ingest
from pipeline.matrix.anime_features import AnimeFeatures
from pipeline.matrix.utility_matrix import build_utility_matrix
from pipeline.models.ranking.fit import train_ranking_model
from pipeline.models.rating.scorer import ARRAYS_FILE
from pipeline.models.rating.train import build_model
from pipeline.serving.bundle import MODEL_FILE, RATING_DIR, load_bundle, save_bundle
from pipeline.validation.validate import validate

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]
SERVER_COMMANDS = ("ui", "serve-model", "serve", "app")


def test_every_server_command_binds_to_localhost_unless_a_host_is_given(prefect_server):
    parser = build_parser()
    assert {command: parser.parse_args([command]).host for command in SERVER_COMMANDS} == dict.fromkeys(
        SERVER_COMMANDS, "127.0.0.1")
    assert parser.parse_args(["ui", "--host", "10.0.0.5"]).host == "10.0.0.5"  # only when a person asks
    # The tests' Prefect server, started by the code the flows use for a temporary one: its socket, as bound.
    assert listening_hosts(urlsplit(prefect_server).port) == {"127.0.0.1"}
    # the other servers started for real, listening on 127.0.0.1 only: `make ui` in test_lineage.py, `make serve`'s
    # Prefect server in test_schedule.py


@pytest.fixture
def bundle(small_data, settings, tmp_path) -> Path:
    matrix = build_utility_matrix(validate(ingest(small_data), settings), settings)
    features = AnimeFeatures.of(matrix.anime_metadata()).rows(matrix.anime_ids())  # the default: the feature model
    model = build_model(matrix.n_users, matrix.n_anime, settings.training, anime_features=features)
    ranking = train_ranking_model(matrix, settings.ranking, settings.unrated_value, settings.relevance_threshold)
    return save_bundle(model, ranking.model, matrix, settings.unrated_value, settings.training.l2, tmp_path / "bundle")


def test_keras_models_of_older_bundles_are_loaded_in_safe_mode(bundle):
    shutil.rmtree(bundle / RATING_DIR)  # as bundles were saved before the served rating model had its own folder
    inputs = keras.Input(shape=(1,))
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)  # arbitrary Python: only loadable with safe_mode off
    keras.Model(inputs, outputs).save(bundle / MODEL_FILE)
    with pytest.raises(ValueError, match="safe_mode"):
        load_bundle(bundle)


def test_served_weights_are_loaded_as_arrays_never_unpickled(bundle):
    arrays = bundle / RATING_DIR / ARRAYS_FILE
    with np.load(arrays) as saved:
        weights = dict(saved)
    weights["user_bias"] = np.array([object()], dtype=object)  # an object array is stored pickled
    np.savez(arrays, **weights)
    with pytest.raises(ValueError, match="allow_pickle"):
        load_bundle(bundle)


def test_data_files_are_read_as_data_never_evaluated(tmp_path, settings):
    marker = tmp_path / "pwned"
    payload = f"__import__('pathlib').Path('{marker}').touch()"
    folder = write_dataset(tmp_path / "data", [[1, 10, 8], [2, 10, 7], [2, 11, 9]], [
        [10, payload, "Action", "TV", 12, 7.5, 100], [11, "{{7*7}} ${7*7}", "Drama", "TV", 1, 8.0, 5]])
    settings.max_quarantine_share = 1.0
    write_csv(settings.inbox_dir / "new.csv", RATING_HEADER, [[3, 11, payload]])
    validated = validate(ingest(folder, settings.inbox_dir), settings)
    assert payload in validated.anime["name"].to_pylist()
    assert "not an integer" in validated.quarantine["reason"][0].as_py()
    assert not marker.exists()


def test_an_inbox_symlink_cannot_move_or_change_a_file_outside(small_data, settings, tmp_path):
    from flows.retrain import retrain

    outside = write_csv(tmp_path / "elsewhere" / "precious.csv", RATING_HEADER, [[999_001, 1, 5]])
    original = outside.read_bytes()
    settings.inbox_dir.mkdir(parents=True)
    (settings.inbox_dir / "link.csv").symlink_to(outside)
    with pytest.raises(Exception, match="symbolic link"):
        retrain(data_dir=small_data, settings=settings)
    assert outside.read_bytes() == original and (settings.inbox_dir / "link.csv").is_symlink()
    assert not settings.archive_dir.exists()


def test_the_data_folder_given_on_the_command_line_is_only_read(small_data, settings, tmp_path, monkeypatch):
    from flows.cli import main

    data = tmp_path / "their-data"
    shutil.copytree(small_data, data)
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    monkeypatch.setenv("ANIMEREC_DATA_ROOT", str(settings.data_root))
    monkeypatch.setenv("ANIMEREC_MLRUNS_DIR", str(settings.mlruns_dir))
    monkeypatch.setenv("ANIMEREC_TRAINING__EPOCHS", "2")
    assert main(["retrain", "--data", str(data)]) == 0
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before
    written = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*") if p.is_file()}
    assert written <= {"their-data", settings.data_root.name, settings.mlruns_dir.name}

