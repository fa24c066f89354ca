import re
import shutil
from dataclasses import replace

import mlflow
import pyarrow.csv as pacsv
import pytest
from conftest import evaluate_served, evaluation_report, register_trained_run
from mlflow import MlflowClient

from flows.cli import main as cli_main
from pipeline.data.ingest import ingest
from pipeline.matrix.utility_matrix import build_utility_matrix
from pipeline.monitoring.version_scoring import score_version_on_split
from pipeline.registry.promotion import Tolerances, decide_promotion
from pipeline.registry.registration import VERSION_TAGS, promote_manually
from pipeline.registry.scores import CHALLENGER, CHAMPION, OTHER_DATASET, VersionScores
from pipeline.registry.versions import list_versions, registry_chart_name
from pipeline.validation.validate import validate

NO_TOLERANCE = Tolerances(rmse=0.0, ndcg=0.0)
ARCHITECTURE = "biased_mf ratings + EASE lists"


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


def _aliases(name):
    return {alias: str(version) for alias, version in MlflowClient().get_registered_model(name).aliases.items()}


def test_better_model_becomes_champion_worse_stays_challenger(trained_run, settings):
    matrix, name = trained_run[0], settings.registered_model_name
    def register(report):
        return register_trained_run(trained_run, settings, report)

    first = register(evaluation_report(1.30, matrix.split_sizes["test"]))
    assert first.promoted and _aliases(name) == {CHAMPION: "1"}

    worse = register(evaluation_report(1.40, matrix.split_sizes["test"]))
    assert not worse.promoted and not worse.champion_rescored
    assert worse.champion_version == "1" and worse.champion == VersionScores(pytest.approx(1.30), pytest.approx(0.3))
    assert _aliases(name) == {CHAMPION: "1", CHALLENGER: "2"}

    better = register(evaluation_report(1.20, matrix.split_sizes["test"]))
    assert better.promoted and _aliases(name) == {CHAMPION: "3"}
    version = MlflowClient().get_model_version(name, "3")
    assert version.tags["data_version"] == matrix.data_version and version.tags["decision"] == CHAMPION
    assert set(version.tags) == set(VERSION_TAGS)  # a short line per version in the registry page
    assert version.tags["dataset"] == "tests" and version.tags["architecture"] == ARCHITECTURE
    assert "Promoted to champion: " + better.reason in version.description
    assert "data set 'tests'" in version.description and "Test RMSE 1.2000" in version.description

    worse_lists = register(evaluation_report(1.10, matrix.split_sizes["test"], ndcg=0.25, ndcg_stderr=0.01))
    assert not worse_lists.promoted and _aliases(name) == {CHAMPION: "3", CHALLENGER: "4"}
    assert "NDCG@10 0.2500 is worse than the champion's 0.3000" in worse_lists.reason
    fourth = MlflowClient().get_model_version(name, "4")
    assert fourth.tags["decision"] == CHALLENGER and "Kept as challenger: " + worse_lists.reason in fourth.description


def test_champion_is_rescored_when_the_split_changed(trained_run, settings, small_data, tmp_path):
    matrix, (trained, ranking), run_id, _, lineage = trained_run
    name = settings.registered_model_name
    threshold = settings.relevance_threshold
    real = evaluate_served(trained.model, ranking.model, matrix, settings)
    register_trained_run(trained_run, settings, real)

    settings.split_seed += 1  # same data, new split: stored scores are no longer comparable
    settings.data_root = tmp_path / "other"
    new_matrix = build_utility_matrix(validate(ingest(small_data), settings), settings)
    assert new_matrix.split_id != matrix.split_id
    expected = score_version_on_split(name, "1", new_matrix, threshold)
    decision = register_trained_run(trained_run, settings, evaluation_report(expected.rmse + 0.5, 10), new_matrix,
                                    replace(lineage, data_version=new_matrix.data_version))
    assert decision.champion_rescored and decision.champion == expected and not decision.promoted
    assert expected.rmse != pytest.approx(real.model.rmse)  # a different test split gives a different score
    # the champion's lists re-scored on the new split equal those of its models evaluated there directly
    direct = evaluate_served(trained.model, ranking.model, new_matrix, settings)
    assert expected.ndcg == pytest.approx(direct.ranking.served.ndcg, abs=5e-5)  # compared at 4 decimals
    assert expected.rmse == pytest.approx(direct.model.rmse, abs=5e-5)
    metrics = mlflow.get_run(run_id).data.metrics
    assert metrics["champion_test_rmse_rescored"] == pytest.approx(expected.rmse)
    assert metrics["champion_ndcg_at_10_rescored"] == pytest.approx(expected.ndcg)


def _use_store(monkeypatch, settings):
    monkeypatch.setenv("ANIMEREC_DATA_ROOT", str(settings.data_root))
    monkeypatch.setenv("ANIMEREC_MLRUNS_DIR", str(settings.mlruns_dir))


def test_compare_lists_every_version_by_data_set_with_its_aliases(trained_run, settings, tmp_path, monkeypatch,
                                                                  capsys):
    name, lineage = settings.registered_model_name, trained_run[4]
    other = replace(lineage, dataset="other-data")
    for model_rmse, of in ((1.30, lineage), (1.40, lineage), (1.10, other), (1.20, lineage)):
        register_trained_run(trained_run, settings, evaluation_report(model_rmse, 10), lineage=of)
    rows = list_versions(name)
    assert [(r.dataset, r.version, r.aliases) for r in rows] == [
        ("tests", "1", ()), ("tests", "2", ()), ("tests", "4", (CHAMPION,)), ("other-data", "3", ())]
    assert [r.test_rmse for r in rows] == [1.30, 1.40, 1.20, 1.10]
    assert rows[0].params["embedding_dim"] == str(settings.training.embedding_dim)

    _use_store(monkeypatch, settings)
    chart = tmp_path / "chart.png"
    assert cli_main(["compare", "--chart", str(chart)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "data set tests (3 versions)" and lines[7] == "data set other-data (1 version)"
    table = {line.split()[0]: line.split()[1] for line in lines[3:6] + lines[10:11]}
    assert table == {"1": "-", "2": "-", "4": CHAMPION, "3": "-"}
    assert lines[10].split()[7:9] == ["1.1000", "0.3000"]  # test RMSE and NDCG@10 side by side
    assert lines[-2].startswith("4 version(s) of 'anime-recommender' from 2 data set(s)")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    trained = MlflowClient().get_run(trained_run[2]).data.metrics["epochs_run"]
    assert rows[0].epochs_run == f"{trained:.0f}" and int(rows[0].params["epochs"]) >= trained

    promote_manually(name, "1", "a person prefers it", "tester")  # the alias moves; v4's registration stays as it was
    assert cli_main(["compare", "--chart", str(chart)]) == 0
    cells = {line.split()[0]: re.split(r"\s{2,}", line) for line in capsys.readouterr().out.splitlines()[3:6]}
    assert [version for version, row in cells.items() if CHAMPION in row[1].split(",")] == ["1"]
    assert (cells["1"][-1], cells["4"][-1], cells["2"][-1]) == ("promoted by hand", "promoted", "kept challenger")
    assert cells["1"][10] == f"{trained:.0f} ({settings.training.epochs})"  # epochs trained, then the cap
    runs = MlflowClient().search_runs([mlflow.get_experiment_by_name(settings.experiment_name).experiment_id],
                                      filter_string="tags.purpose = 'registry-comparison'")
    assert [a.path for a in MlflowClient().list_artifacts(runs[0].info.run_id)] == [registry_chart_name(name)]


def test_a_champion_is_compared_within_its_data_set_only(trained_run, settings, small_data, tmp_path):
    """Same data set grown: the champion is re-scored on the new split and compared. Another data set: not compared,
    the new version stays challenger, and the reason says what to do."""
    matrix, _, run_id, _, lineage = trained_run
    name = settings.registered_model_name
    assert register_trained_run(trained_run, settings, evaluation_report(1.30, 10)).promoted

    other = register_trained_run(trained_run, settings, evaluation_report(0.50, 10),
                                 lineage=replace(lineage, dataset="other-data"))
    assert not other.promoted and not other.same_dataset and other.champion is None
    assert other.reason.startswith("not compared with champion v1: it learned from data set 'tests', this version "
                                   "from 'other-data'")
    assert f"MODEL_NAME={name}-other-data" in other.reason and "make promote VERSION=2" in other.reason
    assert _aliases(name) == {CHAMPION: "1", CHALLENGER: "2"}
    assert MlflowClient().get_model_version(name, "2").tags["decision"] == OTHER_DATASET
    assert "champion_test_rmse_rescored" not in mlflow.get_run(run_id).data.metrics

    grown_folder = shutil.copytree(small_data, tmp_path / "grown")
    some_anime = pacsv.read_csv(small_data / "anime.csv")["anime_id"][0].as_py()
    with (grown_folder / "rating.csv").open("a") as ratings:
        ratings.write(f"999001,{some_anime},8\n")  # a new user: the same data set, grown
    grown = build_utility_matrix(validate(ingest(grown_folder), settings), settings)
    assert grown.data_version != matrix.data_version
    same = register_trained_run(trained_run, settings, evaluation_report(5.0, 10), grown,
                                replace(lineage, data_version=grown.data_version))
    assert same.same_dataset and same.champion_version == "1" and same.champion_rescored
    assert not same.promoted and same.reason.startswith("test RMSE 5.0000 is worse than the champion's")


def test_manual_promotion_moves_the_alias_and_records_the_reason(trained_run, settings, monkeypatch, capsys):
    name = settings.registered_model_name
    register_trained_run(trained_run, settings, evaluation_report(1.30, 10))
    register_trained_run(trained_run, settings, evaluation_report(1.40, 10))
    assert _aliases(name) == {CHAMPION: "1", CHALLENGER: "2"}

    assert promote_manually(name, "2", "won the online A/B test", "alice") == "1"
    assert _aliases(name) == {CHAMPION: "2"}
    version = MlflowClient().get_model_version(name, "2")
    assert version.tags["decision"] == "champion: manual" and len(version.tags) == len(VERSION_TAGS)
    assert "by hand by alice at " in version.description
    assert version.description.endswith("(replacing v1): won the online A/B test")

    _use_store(monkeypatch, settings)
    assert cli_main(["promote", "--version", "1", "--reason", "roll back"]) == 0
    assert _aliases(name) == {CHAMPION: "1"}
    assert MlflowClient().get_model_version(name, "1").description.endswith("(replacing v2): roll back")
    assert cli_main(["promote", "--version", "9", "--reason", "x"]) == 2
    assert cli_main(["promote", "--version", "2", "--reason", " "]) == 2
    assert _aliases(name) == {CHAMPION: "1"}
    assert capsys.readouterr().err.count("error:") == 2
