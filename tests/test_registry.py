import mlflow
import pytest
from mlflow import MlflowClient

from pipeline import tracking
from pipeline.cli import main as cli_main
from pipeline.evaluate import EvaluationReport, RankingReports, evaluate_model
from pipeline.ingest import ingest
from pipeline.matrix import build_utility_matrix
from pipeline.metrics import RankingReport, Scores
from pipeline.ranking import train_ranking_model
from pipeline.registry import (
    CHALLENGER,
    CHAMPION,
    Tolerances,
    VersionScores,
    decide_promotion,
    list_versions,
    promote_manually,
    register_and_decide,
    score_version_on_split,
)
from pipeline.train import train_model
from pipeline.validate import validate

NO_TOLERANCE = Tolerances(rmse=0.0, ndcg=0.0)


def test_promotion_rule_on_rmse():
    def decide(challenger_rmse, bias_rmse, champion_rmse):
        champion = None if champion_rmse is None else VersionScores(champion_rmse, 0.3)
        return decide_promotion(VersionScores(challenger_rmse, 0.3), bias_rmse, champion, NO_TOLERANCE)

    assert decide(1.2, 1.3, None)[0] is True
    assert decide(1.1, 1.3, 1.2)[0] is True
    assert decide(1.3, 1.4, 1.2)[0] is False
    assert decide(1.2, 1.3, 1.2)[0] is False  # a tie on both keeps the champion
    assert decide(1.35, 1.3, None)[0] is False  # must beat the bias baseline, even with no champion
    promoted, reason = decide(1.1, 1.05, 1.2)
    assert not promoted and "bias baseline" in reason


def test_promotion_refuses_a_version_that_regresses_either_metric_beyond_its_tolerance():
    champion = VersionScores(rmse=1.20, ndcg=0.40)
    tolerances = Tolerances(rmse=0.01, ndcg=0.005)
    better_rmse_worse_lists = decide_promotion(VersionScores(1.10, 0.39), 1.3, champion, tolerances)
    assert not better_rmse_worse_lists[0] and "NDCG@10 0.3900 is worse" in better_rmse_worse_lists[1]
    assert "RMSE" not in better_rmse_worse_lists[1].split("NDCG@10")[0]  # the reason names the metric that failed
    better_lists_worse_rmse = decide_promotion(VersionScores(1.25, 0.45), 1.3, champion, tolerances)
    assert not better_lists_worse_rmse[0] and better_lists_worse_rmse[1].startswith("test RMSE 1.2500 is worse")
    within = decide_promotion(VersionScores(1.205, 0.45), 1.3, champion, tolerances)  # RMSE within tolerance
    assert within[0] and "NDCG@10 0.4500 > champion's 0.4000" in within[1]
    within = decide_promotion(VersionScores(1.10, 0.397), 1.3, champion, tolerances)  # NDCG within tolerance
    assert within[0] and "test RMSE 1.1000 < champion's 1.2000" in within[1]
    assert not decide_promotion(VersionScores(1.20, 0.40), 1.3, champion, tolerances)[0]  # a tie
    old_champion = VersionScores(rmse=1.20, ndcg=None)  # registered before lists were measured
    promoted, reason = decide_promotion(VersionScores(1.10, 0.10), 1.3, old_champion, tolerances)
    assert promoted and "RMSE only" in reason


def _report(model_rmse: float, n_test: int, ndcg: float = 0.3, ndcg_stderr: float = 0.0) -> EvaluationReport:
    lists = RankingReport(0.1, 0.1, ndcg, 0.5, 0.9, 100, ndcg_stderr)
    return EvaluationReport(Scores(model_rmse, model_rmse), Scores(9.0, 9.0), Scores(9.0, 9.0), n_test,
                            RankingReports(lists, lists, lists))


@pytest.fixture
def trained_run(small_data, settings):
    """One real training run logged to a temp sqlite MLflow store."""
    validated = validate(ingest(small_data), settings)
    matrix = build_utility_matrix(validated, settings)
    trained = train_model(matrix, settings.training, verbose=0)
    ranking = train_ranking_model(matrix, settings.ranking, settings.unrated_value, settings.relevance_threshold)
    run_id = tracking.start_run(settings, small_data)
    tracking.log_rating_model(run_id, trained, settings.training, matrix)
    model_uri = tracking.log_model_bundle(run_id, trained.model, ranking.model, matrix, settings.unrated_value)
    tracking.log_matrix(run_id, matrix)
    tracking.finish_run(run_id, True)
    return validated, matrix, (trained, ranking), run_id, model_uri


def _aliases(name):
    return {alias: str(version) for alias, version in MlflowClient().get_registered_model(name).aliases.items()}


def test_better_model_becomes_champion_worse_stays_challenger(trained_run, settings):
    _, matrix, _, run_id, model_uri = trained_run
    name = settings.registered_model_name
    def register(report):
        return register_and_decide(name, model_uri, run_id, report, matrix, settings.relevance_threshold)

    first = register(_report(1.30, matrix.split_sizes["test"]))
    assert first.promoted and _aliases(name) == {CHAMPION: "1"}

    worse = register(_report(1.40, matrix.split_sizes["test"]))
    assert not worse.promoted and not worse.champion_rescored
    assert worse.champion_version == "1" and worse.champion == VersionScores(pytest.approx(1.30), pytest.approx(0.3))
    assert _aliases(name) == {CHAMPION: "1", CHALLENGER: "2"}

    better = register(_report(1.20, matrix.split_sizes["test"]))
    assert better.promoted and _aliases(name) == {CHAMPION: "3"}
    version = MlflowClient().get_model_version(name, "3")
    assert version.tags["data_version"] == matrix.data_version and version.tags["promotion"] == CHAMPION
    assert "1.2" in version.tags["promotion_reason"]

    worse_lists = register(_report(1.10, matrix.split_sizes["test"], ndcg=0.25, ndcg_stderr=0.01))
    assert not worse_lists.promoted and _aliases(name) == {CHAMPION: "3", CHALLENGER: "4"}
    assert "NDCG@10 0.2500 is worse than the champion's 0.3000" in worse_lists.reason
    assert MlflowClient().get_model_version(name, "4").tags["promotion_reason"] == worse_lists.reason


def test_champion_is_rescored_when_the_split_changed(trained_run, settings, tmp_path):
    validated, matrix, (trained, ranking), run_id, model_uri = trained_run
    name = settings.registered_model_name
    threshold = settings.relevance_threshold
    real = evaluate_model(trained.model, ranking.model, matrix, settings.unrated_value, threshold)
    register_and_decide(name, model_uri, run_id, real, matrix, threshold)

    settings.split_seed += 1  # same data, new split: stored scores are no longer comparable
    settings.data_root = tmp_path / "other"
    new_matrix = build_utility_matrix(validated, settings)
    assert new_matrix.split_id != matrix.split_id
    expected = score_version_on_split(name, "1", new_matrix, threshold)
    decision = register_and_decide(name, model_uri, run_id, _report(expected.rmse + 0.5, 10), new_matrix, threshold)
    assert decision.champion_rescored and decision.champion == expected and not decision.promoted
    assert expected.rmse != pytest.approx(real.model.rmse)  # a different test split gives a different score
    # the champion's lists re-scored on the new split equal those of its models evaluated there directly
    direct = evaluate_model(trained.model, ranking.model, new_matrix, settings.unrated_value, threshold)
    assert expected.ndcg == pytest.approx(direct.ranking.served.ndcg) and expected.rmse == pytest.approx(
        direct.model.rmse)
    metrics = mlflow.get_run(run_id).data.metrics
    assert metrics["champion_test_rmse_rescored"] == pytest.approx(expected.rmse)
    assert metrics["champion_ndcg_at_10_rescored"] == pytest.approx(expected.ndcg)


def _use_store(monkeypatch, settings):
    monkeypatch.setenv("ANIMEREC_DATA_ROOT", str(settings.data_root))
    monkeypatch.setenv("ANIMEREC_MLRUNS_DIR", str(settings.mlruns_dir))


def test_compare_lists_every_version_with_its_aliases(trained_run, settings, tmp_path, monkeypatch, capsys):
    _, matrix, _, run_id, model_uri = trained_run
    name = settings.registered_model_name
    for model_rmse in (1.30, 1.40, 1.20, 1.50):
        register_and_decide(name, model_uri, run_id, _report(model_rmse, 10), matrix, settings.relevance_threshold)
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
    register_and_decide(name, model_uri, run_id, _report(1.30, 10), matrix, settings.relevance_threshold)
    register_and_decide(name, model_uri, run_id, _report(1.40, 10), matrix, settings.relevance_threshold)
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
