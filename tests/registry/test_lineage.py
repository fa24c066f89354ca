"""Two unrelated data sets, one after the other, through the real retrain flow: two lineages in one registry, each
with its own inbox; then the MLflow UI server over that store, checked through the REST API its pages render from."""

import os
import signal
import subprocess
from pathlib import Path

import httpx
import pyarrow.csv as pacsv
import pytest
from conftest import (
    PROJECT_ROOT,
    RATING_HEADER,
    SMALL_SPEC,
    free_port,
    listening_hosts,
    quick_settings,
    wait_until_answers,
    write_csv,
)
from mlflow import MlflowClient

from flows.retrain import retrain
from pipeline.data.dataset_config import DATASET_FILE, for_dataset
from pipeline.data.generate import DemoSpec, generate_demo_dataset
from pipeline.errors import PipelineInputError
from pipeline.registry.registration import VERSION_TAGS
from pipeline.registry.scores import CHALLENGER, CHAMPION

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server"),
              pytest.mark.xdist_group("lineage")]  # one worker builds the module's fixtures once


@pytest.fixture(scope="module")
def two_lineages(tmp_path_factory, prefect_server):
    """`alpha` (with an inbox file of its own) then `beta`, each named after its folder, then `alpha` again with
    skip_unchanged; a file dropped loose in the inbox root belongs to neither."""
    root = tmp_path_factory.mktemp("lineages")
    settings = quick_settings(root)
    alpha = generate_demo_dataset(root / "alpha", SMALL_SPEC)
    beta = generate_demo_dataset(root / "beta", DemoSpec(n_users=250, n_anime=150, n_ratings=9_000, seed=11))
    some_anime = pacsv.read_csv(alpha / "anime.csv")["anime_id"].to_pylist()[:3]
    write_csv(settings.inbox_root / "alpha" / "late.csv", RATING_HEADER, [[999_001, a, 9] for a in some_anime])
    loose = write_csv(settings.inbox_root / "loose.csv", RATING_HEADER, [[999_002, some_anime[0], 3]])
    first = retrain(data_dir=alpha, settings=settings)
    second = retrain(data_dir=beta, settings=settings)
    again = retrain(data_dir=alpha, settings=settings, skip_unchanged=True)
    return settings, (alpha, beta, loose), (first, second, again)


def _rows(folder: Path) -> int:
    return pacsv.read_csv(folder / "rating.csv").num_rows


def test_two_data_sets_leave_two_lineages_and_keep_their_inboxes_apart(two_lineages):
    settings, (alpha, beta, loose), (first, second, again) = two_lineages
    names = (first.settings.dataset_name, second.settings.dataset_name, first.origins.name)
    assert names == ("alpha", "beta", "folder name")
    assert first.outcome.decision.promoted and first.data.counts.rows_in == _rows(alpha) + 3  # its inbox merged

    decision = second.outcome.decision
    assert decision.version == "2" and not decision.promoted and not decision.same_dataset
    assert decision.champion is None and not decision.champion_rescored  # alpha's champion never saw beta's split
    assert decision.reason.startswith("not compared with champion v1: it learned from data set 'alpha', this "
                                      "version from 'beta'")
    text = second.format(settings.registered_model_name)
    assert "champion v1  of another data set: not compared" in text
    decision_line, next_line = text.splitlines()[-2:]
    assert f"MODEL_NAME={settings.registered_model_name}-beta" in decision_line
    user_id = second.outcome.run.matrix.user_map.ids[0]
    for said in ("make app MODEL=2 serves this version", "the champion: v1",
                 f"make recommend USER_ID={user_id} MODEL=2", 'make promote VERSION=2 REASON="…"'):
        assert said in next_line, said
    assert first.format(settings.registered_model_name).splitlines()[-1].split()[:6] == [
        "next", "make", "app", "(serves", "version", "1),"]
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    aliases = client.get_registered_model(settings.registered_model_name).aliases
    assert {alias: str(v) for alias, v in aliases.items()} == {CHAMPION: "1", CHALLENGER: "2"}

    # alpha's inbox file went into alpha's archive and never reached beta; the loose file reached neither
    assert second.data.counts.rows_in == _rows(beta) and loose.exists()
    assert [p.name for p in settings.inbox_root.rglob("*.csv")] == ["loose.csv"]
    assert [p.relative_to(settings.data_root / "archive").as_posix()
            for p in (settings.data_root / "archive").rglob("*.csv")] == ["alpha/000001-late.csv"]
    # alpha again: its own last run (not beta's, the newest) says the data are unchanged, archive included
    assert again.outcome is None and again.data.data_version == first.data.data_version
    assert again.data.counts.rows_in == _rows(alpha) + 3

    for summary in (first, second):
        run = client.get_run(summary.outcome.run.run_id)
        assert run.info.run_name == f"retrain {summary.settings.dataset_name} {summary.data.data_version[:8]}"
        assert run.data.tags["dataset"] == summary.settings.dataset_name
        version = client.get_model_version(settings.registered_model_name, summary.outcome.decision.version)
        assert version.tags["dataset"] == summary.settings.dataset_name
        assert version.tags["data_version"] == summary.data.data_version


def test_make_ui_serves_versions_aliases_tags_and_dataset_inputs_on_localhost_only(two_lineages):
    """`make ui` over the store of the settings (ANIMEREC_* variables reach it): it listens on 127.0.0.1 only, and
    what the registry and runs pages render is read through the REST API the UI itself uses."""
    settings, _, (first, second, _) = two_lineages
    port = free_port()
    env = os.environ | {"ANIMEREC_DATA_ROOT": str(settings.data_root), "ANIMEREC_MLRUNS_DIR": str(settings.mlruns_dir)}
    server = subprocess.Popen(["make", "-s", "ui", f"PORT={port}"], cwd=PROJECT_ROOT, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url, name = f"http://127.0.0.1:{port}", settings.registered_model_name
    api = f"{url}/api/2.0/mlflow"
    try:
        wait_until_answers(server, f"{url}/health", 120)
        assert listening_hosts(port) == {"127.0.0.1"}
        assert "<html" in httpx.get(url, timeout=10).text.lower()  # the UI itself is served

        model = httpx.get(f"{api}/registered-models/get", params={"name": name}, timeout=10).json()["registered_model"]
        assert {a["alias"]: a["version"] for a in model["aliases"]} == {CHAMPION: "1", CHALLENGER: "2"}
        versions = httpx.get(f"{api}/model-versions/search", params={"filter": f"name='{name}'"},
                             timeout=10).json()["model_versions"]
        by_version = {v["version"]: v for v in versions}
        assert set(by_version) == {"1", "2"}
        for summary in (first, second):
            shown = by_version[summary.outcome.decision.version]
            tags = {tag["key"]: tag["value"] for tag in shown["tags"]}
            assert len(tags) <= 8 and set(tags) == set(VERSION_TAGS)
            assert tags["dataset"] == summary.settings.dataset_name and tags["test_rmse"] == (
                f"{summary.outcome.evaluation.model.rmse:.4f}")
            assert shown["description"].startswith(f"Learned from data set '{summary.settings.dataset_name}'")

        experiment = httpx.get(f"{api}/experiments/get-by-name", params={"experiment_name": settings.experiment_name},
                               timeout=10).json()["experiment"]
        runs = httpx.post(f"{api}/runs/search", json={"experiment_ids": [experiment["experiment_id"]]},
                          timeout=10).json()["runs"]
        by_id = {run["info"]["run_id"]: run for run in runs}
        for summary in (first, second):
            run = by_id[summary.outcome.run.run_id]
            (dataset_input,) = run["inputs"]["dataset_inputs"]
            assert dataset_input["dataset"]["name"] == summary.settings.dataset_name
            assert dataset_input["dataset"]["digest"] == summary.data.data_version[:8]
            input_tags = {tag["key"]: tag["value"] for tag in dataset_input["tags"]}
            assert input_tags["mlflow.data.context"] == "training"
            assert input_tags["data_version"] == summary.data.data_version
            artifacts = httpx.get(f"{api}/artifacts/list", params={"run_id": summary.outcome.run.run_id},
                                  timeout=10).json()["files"]
            assert {"learning_curves.png", "ranking.png"} <= {a["path"] for a in artifacts}
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


def test_the_data_set_is_named_by_the_command_line_dataset_toml_or_its_folder(tmp_path):
    settings = quick_settings(tmp_path)
    folder = tmp_path / "My Ratings (2024)"
    folder.mkdir()
    named, origins = for_dataset(settings, folder)
    assert (named.dataset_name, origins.name) == ("My-Ratings-2024", "folder name")
    assert named.inbox_dir == settings.inbox_root / "My-Ratings-2024"
    assert named.archive_dir == settings.data_root / "archive" / "My-Ratings-2024"
    assert for_dataset(settings, tmp_path / "archive.zip")[0].dataset_name == "archive"  # a download, unpacked or not
    (folder / DATASET_FILE).write_text('name = "mal-2017"\n')
    assert for_dataset(settings, folder)[0].dataset_name == "mal-2017"
    named, origins = for_dataset(settings, folder, dataset_name="mine")  # the command line wins
    assert (named.dataset_name, origins.name) == ("mine", "--dataset-name")
    with pytest.raises(PipelineInputError, match="--dataset-name: data set name '///' has no letters or digits"):
        for_dataset(settings, folder, dataset_name="///")
    with pytest.raises(ValueError, match="name no data set"):
        _ = settings.inbox_dir  # settings not bound to a data set have no inbox
