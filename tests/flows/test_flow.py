"""End to end through the real Prefect engine (the session's Prefect server) and a temp MLflow sqlite store."""

import subprocess
import sys
import time

import mlflow
import pandas as pd
import pytest
from conftest import PROJECT_ROOT, child_env, write_csv
from mlflow import MlflowClient

from flows.cli import main
from flows.retrain import retrain
from pipeline.errors import PipelineInputError
from pipeline.registry.scores import CHALLENGER, CHAMPION
from pipeline.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


def _started_runs(client: MlflowClient, settings: Settings, process: subprocess.Popen) -> list:
    """Wait until the retrain in `process` has started its MLflow run (it holds the lock by then); its runs."""
    deadline = time.monotonic() + 240
    while not ((experiment := client.get_experiment_by_name(settings.experiment_name))
               and (started := client.search_runs([experiment.experiment_id]))):
        assert process.poll() is None and time.monotonic() < deadline, "the scheduled run never started"
        time.sleep(0.1)
    return started


def test_two_runs_at_once_are_serialized_and_register_two_versions(small_data, settings):
    """A scheduled run (another process) holds the lock when a manual one (this process) starts: the manual one waits
    for it, then runs, logs and registers version 2, compared with version 1 on the same split."""
    script = "import sys\nfrom pathlib import Path\nfrom flows.retrain import retrain\nretrain(Path(sys.argv[1]))"
    scheduled = subprocess.Popen([sys.executable, "-c", script, str(small_data)], env=child_env(settings),
                                 cwd=PROJECT_ROOT)
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    started = _started_runs(client, settings, scheduled)
    settings.lock_wait_seconds = 240
    summary = retrain(data_dir=small_data, settings=settings)
    assert scheduled.wait(timeout=400) == 0
    runs = sorted(client.search_runs([started[0].info.experiment_id]), key=lambda r: r.info.start_time)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert runs[0].info.run_id == started[0].info.run_id  # the scheduled run first, this one after it
    assert runs[1].info.start_time >= runs[0].info.end_time  # never interleaved
    first, this = runs[0].data, summary.outcome
    assert this.run.run_id == runs[1].info.run_id
    _check_the_run_log(client, runs[1], summary, settings)

    decision = this.decision
    assert decision.version == "2" and decision.champion_version == "1"
    assert decision.champion.rmse == round(first.metrics["test_rmse"], 4)  # tagged and compared at 4 decimals
    assert decision.champion.ndcg == round(first.metrics["ndcg_at_10"], 4)
    assert this.evaluation.model.rmse == pytest.approx(first.metrics["test_rmse"], abs=1e-4)  # seeded: the same
    # Seeded runs on the same split score (nearly) alike: promoted only if strictly better on one metric, the rule's
    # tie-break; the aliases follow the decision.
    better = decision.challenger.rmse < decision.champion.rmse or decision.challenger.ndcg > decision.champion.ndcg
    assert decision.promoted == better, decision.reason
    assert better or "no better than the champion on the same split" in decision.reason
    registered = client.get_registered_model(settings.registered_model_name)
    aliases = {alias: str(version) for alias, version in registered.aliases.items()}
    assert aliases == ({CHAMPION: "2"} if decision.promoted else {CHAMPION: "1", CHALLENGER: "2"})
    text = summary.format(settings.registered_model_name)
    assert "version 2" in text and "champion v1" in text and f"{summary.data.counts.rows_in:>10,}" in text

    champion = mlflow.pyfunc.load_model(f"models:/{settings.registered_model_name}@{CHAMPION}")
    answer = champion.predict(pd.DataFrame({"user_id": [1, 2]}), params={"n": 3})
    assert answer["user_id"].tolist() == [1, 1, 1, 2, 2, 2] and answer["rank"].tolist() == [1, 2, 3, 1, 2, 3]
    assert answer["predicted_rating"].between(settings.rating_min, settings.rating_max).all()


def _check_the_run_log(client: MlflowClient, run, summary, settings: Settings) -> None:
    """What a retrain's MLflow run holds: its counts, scores, data version, the seed's ideas as params (Keras trained
    it, GX validated), a loss and a learning rate per epoch, the ranking model's λ walk, its artifacts."""
    counts, outcome = summary.data.counts, summary.outcome
    assert counts.rows_in == counts.accepted + counts.unrated + counts.quarantined + counts.superseded
    metrics, params, training = run.data.metrics, run.data.params, settings.training
    assert metrics["test_rmse"] == pytest.approx(outcome.evaluation.model.rmse)
    assert metrics["rows_accepted"] == counts.accepted
    assert params["embedding_dim"] == str(training.embedding_dim)
    assert run.data.tags["data_version"] == outcome.run.matrix.data_version
    assert len(client.get_metric_history(run.info.run_id, "val_loss")) == outcome.trained.epochs_run
    assert params["validation_engine"] == "gx" and params["trainer"] == training.method
    assert params["training_device"] == outcome.trained.device == "CPU"  # what trained it (the tests see no GPU)
    assert "by Keras fit" in training.method and f"rating model      {training.method}" in summary.format("m")
    assert params["initializer"] == str(training.initializer)
    assert params["learning_rate_schedule"] == str(training.learning_rate_schedule)
    rates = [m.value for m in client.get_metric_history(run.info.run_id, "learning_rate")]
    assert len(rates) == outcome.trained.epochs_run and rates[0] == pytest.approx(training.learning_rate)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"learning_curves.png", "id_maps", "validation", "promotion.json", "anime_features.txt"} <= artifacts
    features = outcome.trained.features  # the default reads the anime's features: what it answers for from them
    new_anime = len(features.not_in(outcome.run.matrix.anime_map)[0])
    assert metrics["anime_from_features_only"] == new_anime > 0 and params["anime_features"] == features.summary()
    assert f"new anime         {new_anime} in anime.csv with no rating" in summary.format("m")
    assert metrics["ndcg_at_10"] == pytest.approx(outcome.evaluation.ranking.served.ndcg)
    assert metrics["ndcg_at_10"] > metrics["popularity_ndcg_at_10"] and "rating_model_ndcg_at_10" in metrics
    assert metrics["ranking_relative_l2_tried"] == pytest.approx(outcome.ranking_fit.trials[-1].relative_l2)
    assert params["ranking_relative_l2_chosen"] == str(outcome.ranking_fit.chosen.relative_l2)


def test_structural_failure_stops_before_anything_is_registered(tmp_path, settings):
    write_csv(tmp_path / "rating.csv", ["user_id", "anime"], [[1, 2]])
    write_csv(tmp_path / "anime.csv", ["anime_id", "name"], [[2, "x"]])
    with pytest.raises(PipelineInputError, match="rating.csv: missing column 'anime_id'"):
        retrain(data_dir=tmp_path, settings=settings)
    assert not settings.matrix_root.exists()
    registry = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    assert registry.search_registered_models() == []


def test_cli_reports_bad_input_in_one_line(tmp_path, settings, monkeypatch, capsys):
    monkeypatch.setenv("ANIMEREC_DATA_ROOT", str(settings.data_root))
    monkeypatch.setenv("ANIMEREC_MLRUNS_DIR", str(settings.mlruns_dir))
    assert Settings().mlruns_dir == settings.mlruns_dir
    write_csv(tmp_path / "rating.csv", ["user_id", "anime_id", "rating"], [[1, 2, 99], [1, 3, 8]])
    write_csv(tmp_path / "anime.csv", ["anime_id", "name"], [[2, "x"], [3, "y"]])
    assert main(["retrain", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: rating.csv: 50.0% of rows failed validation")
    assert not settings.matrix_root.exists()
