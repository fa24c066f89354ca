import mlflow
import pytest
from mlflow import MlflowClient

from pipeline import tracking
from pipeline.cli import main as cli_main
from pipeline.evaluate import EvaluationReport, Scores, evaluate_model
from pipeline.ingest import ingest
from pipeline.matrix import build_utility_matrix
from pipeline.registry import (
    CHALLENGER,
    CHAMPION,
    decide_promotion,
    list_versions,
    promote_manually,
    register_and_decide,
    score_version_on_split,
)
from pipeline.train import train_model
from pipeline.validate import validate


def test_promotion_rule():
    assert decide_promotion(1.2, 1.3, None)[0] is True
    assert decide_promotion(1.1, 1.3, 1.2)[0] is True
    assert decide_promotion(1.3, 1.4, 1.2)[0] is False
    assert decide_promotion(1.2, 1.3, 1.2)[0] is False  # a tie keeps the champion
    assert decide_promotion(1.35, 1.3, None)[0] is False  # must beat the bias baseline, even with no champion
    promoted, reason = decide_promotion(1.1, 1.05, 1.2)
    assert not promoted and "bias baseline" in reason


def _report(model_rmse: float, n_test: int) -> EvaluationReport:
    return EvaluationReport(Scores(model_rmse, model_rmse), Scores(9.0, 9.0), Scores(9.0, 9.0), n_test)


@pytest.fixture
def trained_run(small_data, settings):
    """One real training run logged to a temp sqlite MLflow store."""
    validated = validate(ingest(small_data), settings)
    matrix = build_utility_matrix(validated, settings)
    trained = train_model(matrix, settings.training, verbose=0)
    run_id = tracking.start_run(settings, small_data)
    model_uri = tracking.log_trained_model(run_id, trained, settings.training, matrix, settings.unrated_value)
    tracking.log_matrix(run_id, matrix)
    tracking.finish_run(run_id, True)
    return validated, matrix, trained, run_id, model_uri


def _aliases(name):
    return {alias: str(version) for alias, version in MlflowClient().get_registered_model(name).aliases.items()}


def test_better_model_becomes_champion_worse_stays_challenger(trained_run, settings):
    _, matrix, _, run_id, model_uri = trained_run
    name = settings.registered_model_name
    first = register_and_decide(name, model_uri, run_id, _report(1.30, matrix.split_sizes["test"]), matrix)
    assert first.promoted and _aliases(name) == {CHAMPION: "1"}

    worse = register_and_decide(name, model_uri, run_id, _report(1.40, matrix.split_sizes["test"]), matrix)
    assert not worse.promoted and not worse.champion_rescored
    assert worse.champion_version == "1" and worse.champion_rmse == pytest.approx(1.30)
    assert _aliases(name) == {CHAMPION: "1", CHALLENGER: "2"}

    better = register_and_decide(name, model_uri, run_id, _report(1.20, matrix.split_sizes["test"]), matrix)
    assert better.promoted and _aliases(name) == {CHAMPION: "3"}
    version = MlflowClient().get_model_version(name, "3")
    assert version.tags["data_version"] == matrix.data_version and version.tags["promotion"] == CHAMPION
    assert "1.2" in version.tags["promotion_reason"]


def test_champion_is_rescored_when_the_split_changed(trained_run, settings, tmp_path):
    validated, matrix, trained, run_id, model_uri = trained_run
    name = settings.registered_model_name
    real = evaluate_model(trained.model, matrix, settings.unrated_value, settings.relevance_threshold)
    register_and_decide(name, model_uri, run_id, real, matrix)

    settings.split_seed += 1  # same data, new split: stored scores are no longer comparable
    settings.data_root = tmp_path / "other"
    new_matrix = build_utility_matrix(validated, settings)
    assert new_matrix.split_id != matrix.split_id
    expected = score_version_on_split(name, "1", new_matrix)
    decision = register_and_decide(name, model_uri, run_id, _report(expected + 0.5, 10), new_matrix)
    assert decision.champion_rescored and decision.champion_rmse == pytest.approx(expected)
    assert not decision.promoted
    assert expected != pytest.approx(real.model.rmse)  # a different test split gives a different score
    assert mlflow.get_run(run_id).data.metrics["champion_test_rmse_rescored"] == pytest.approx(expected)


def _use_store(monkeypatch, settings):
    monkeypatch.setenv("ANIMEREC_DATA_ROOT", str(settings.data_root))
    monkeypatch.setenv("ANIMEREC_MLRUNS_DIR", str(settings.mlruns_dir))


def test_compare_lists_every_version_with_its_aliases(trained_run, settings, tmp_path, monkeypatch, capsys):
    _, matrix, _, run_id, model_uri = trained_run
    name = settings.registered_model_name
    for model_rmse in (1.30, 1.40, 1.20, 1.50):
        register_and_decide(name, model_uri, run_id, _report(model_rmse, 10), matrix)
    rows = list_versions(name)
    assert [(r.version, r.aliases) for r in rows] == [("1", ()), ("2", ()), ("3", (CHAMPION,)), ("4", (CHALLENGER,))]
    assert [r.test_rmse for r in rows] == [1.30, 1.40, 1.20, 1.50]
    assert rows[0].params["embedding_dim"] == str(settings.training.embedding_dim)

    _use_store(monkeypatch, settings)
    chart = tmp_path / "chart.png"
    assert cli_main(["compare", "--chart", str(chart)]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = {line.split()[0]: line.split()[1] for line in lines[2:6]}
    assert table == {"1": "-", "2": "-", "3": CHAMPION, "4": CHALLENGER}
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = MlflowClient().search_runs([mlflow.get_experiment_by_name(settings.experiment_name).experiment_id],
                                      filter_string="tags.purpose = 'registry-comparison'")
    assert [a.path for a in MlflowClient().list_artifacts(runs[0].info.run_id)] == ["rmse_per_version.png"]


def test_manual_promotion_moves_the_alias_and_records_the_reason(trained_run, settings, monkeypatch, capsys):
    _, matrix, _, run_id, model_uri = trained_run
    name = settings.registered_model_name
    register_and_decide(name, model_uri, run_id, _report(1.30, 10), matrix)
    register_and_decide(name, model_uri, run_id, _report(1.40, 10), matrix)
    assert _aliases(name) == {CHAMPION: "1", CHALLENGER: "2"}

    assert promote_manually(name, "2", "won the online A/B test", "alice") == "1"
    assert _aliases(name) == {CHAMPION: "2"}
    tags = MlflowClient().get_model_version(name, "2").tags
    assert tags["promotion_reason"] == "manual: won the online A/B test"
    assert tags["manual_promotion_by"] == "alice" and tags["manual_promotion_replaced"] == "1"

    _use_store(monkeypatch, settings)
    assert cli_main(["promote", "1", "--reason", "roll back"]) == 0
    assert _aliases(name) == {CHAMPION: "1"}
    assert MlflowClient().get_model_version(name, "1").tags["promotion_reason"] == "manual: roll back"
    assert cli_main(["promote", "9", "--reason", "x"]) == 2
    assert cli_main(["promote", "2", "--reason", " "]) == 2
    assert _aliases(name) == {CHAMPION: "1"}
    assert capsys.readouterr().err.count("error:") == 2
