"""End to end through the real Prefect engine (temporary local server) and a temp MLflow sqlite store."""

import mlflow
import pandas as pd
import pytest
from conftest import write_csv
from mlflow import MlflowClient

from flows.cli import main
from flows.retrain import retrain
from pipeline.errors import PipelineInputError
from pipeline.registry.promotion import CHALLENGER, CHAMPION
from pipeline.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


def test_retrain_twice_registers_two_versions(small_data, settings):
    summary = retrain(data_dir=small_data, settings=settings)
    counts, first = summary.data.counts, summary.outcome
    assert counts.rows_in == counts.accepted + counts.unrated + counts.quarantined + counts.superseded
    assert first.decision.version == "1" and first.decision.promoted

    run = mlflow.get_run(first.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_rmse"] == pytest.approx(first.evaluation.model.rmse)
    assert run.data.metrics["rows_accepted"] == counts.accepted
    assert run.data.params["embedding_dim"] == str(settings.training.embedding_dim)
    assert run.data.tags["data_version"] == first.matrix.data_version
    assert len(MlflowClient().get_metric_history(run.info.run_id, "val_loss")) == first.trained.epochs_run
    # Keras trained it, GX validated: the run says so, with the seed's ideas as params and a rate per epoch
    params, training = run.data.params, settings.training
    assert params["validation_engine"] == "gx" and params["trainer"] == training.method
    assert "by Keras fit" in training.method and f"rating model      {training.method}" in summary.format("m")
    assert params["initializer"] == str(training.initializer)
    assert params["learning_rate_schedule"] == str(training.learning_rate_schedule)
    rates = [m.value for m in MlflowClient().get_metric_history(run.info.run_id, "learning_rate")]
    assert len(rates) == first.trained.epochs_run and rates[0] == pytest.approx(training.learning_rate)
    artifacts = {a.path for a in MlflowClient().list_artifacts(run.info.run_id)}
    assert {"learning_curves.png", "id_maps", "validation", "promotion.json"} <= artifacts

    second_summary = retrain(data_dir=small_data, settings=settings)
    second = second_summary.outcome
    decision = second.decision
    assert decision.version == "2" and decision.champion_version == "1"
    assert decision.champion.rmse == round(first.evaluation.model.rmse, 4)  # tagged and compared at 4 decimals
    assert decision.champion.ndcg == round(first.evaluation.ranking.served.ndcg, 4)
    assert not decision.promoted  # seeded training and a closed-form ranking model: the same scores, a tie
    registered = MlflowClient().get_registered_model(settings.registered_model_name)
    aliases = {alias: str(version) for alias, version in registered.aliases.items()}
    assert aliases[CHAMPION] == ("2" if decision.promoted else "1")
    assert decision.promoted or aliases[CHALLENGER] == "2"
    text = second_summary.format(settings.registered_model_name)
    assert "version 2" in text and "champion v1" in text and f"{counts.rows_in:>10,}" in text

    metrics = run.data.metrics
    assert metrics["ndcg_at_10"] == pytest.approx(first.evaluation.ranking.served.ndcg)
    assert metrics["ndcg_at_10"] > metrics["popularity_ndcg_at_10"] and "rating_model_ndcg_at_10" in metrics
    assert metrics["ranking_relative_l2_tried"] == pytest.approx(first.ranking_fit.trials[-1].relative_l2)
    assert run.data.params["ranking_relative_l2_chosen"] == str(first.ranking_fit.chosen.relative_l2)
    champion = mlflow.pyfunc.load_model(f"models:/{settings.registered_model_name}@{CHAMPION}")
    answer = champion.predict(pd.DataFrame({"user_id": [1, 2]}), params={"n": 3})
    assert answer["user_id"].tolist() == [1, 1, 1, 2, 2, 2] and answer["rank"].tolist() == [1, 2, 3, 1, 2, 3]
    assert answer["predicted_rating"].between(settings.rating_min, settings.rating_max).all()


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
