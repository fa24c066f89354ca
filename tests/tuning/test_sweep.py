"""The sweep flow through the real Prefect engine: one nested MLflow run per trial, best chosen on validation,
for the rating model (lowest RMSE) and the ranking model (highest NDCG@10)."""

import mlflow
import pytest
from mlflow import MlflowClient

from flows.sweep import sweep
from pipeline.settings import TrainingConfig
from pipeline.tuning.sweep import grid_configs

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


def test_grid_applies_every_combination_to_the_base_configuration():
    base = TrainingConfig(embedding_dim=16, epochs=3)
    grid = grid_configs(base, {"l2": [0.0, 0.02], "learning_rate": [0.01, 0.03, 0.05]})
    assert len(grid) == 6
    assert {(c.l2, c.learning_rate) for _, c in grid} == {(a, b) for a in (0.0, 0.02) for b in (0.01, 0.03, 0.05)}
    assert all(c.embedding_dim == 16 and c.epochs == 3 for _, c in grid)
    with pytest.raises(ValueError):
        grid_configs(base, {"learning_rate": [-1.0]})  # validated like any configuration


def test_sweep_logs_nested_trials_and_picks_the_lowest_validation_rmse(small_data, settings):
    space = {"l2": [0.0, 0.05], "embedding_dim": [8]}  # every combination: test_grid_applies_every_combination…
    summary = sweep(data_dir=small_data, settings=settings, space=space)

    assert len(summary.trials) == 2
    assert summary.best.validation_score == min(t.validation_score for t in summary.trials)
    assert len({round(t.validation_score, 6) for t in summary.trials}) > 1  # the grid values matter
    client = MlflowClient()
    experiment = client.get_experiment_by_name(settings.sweep_experiment_name)
    children = client.search_runs([experiment.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{summary.mlflow_run_id}'")
    assert len(children) == 2
    logged = {(float(r.data.params["l2"]), int(r.data.params["embedding_dim"])): r.data.metrics["validation_rmse"]
              for r in children}
    assert logged == {(t.config.l2, t.config.embedding_dim): pytest.approx(t.validation_score)
                      for t in summary.trials}
    parent = mlflow.get_run(summary.mlflow_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_validation_rmse"] == pytest.approx(summary.best.validation_score)
    assert parent.data.metrics["best_test_rmse"] == pytest.approx(summary.test_score)
    assert parent.data.params["best_l2"] == str(summary.best.config.l2)
    # the sweep's runs stay out of the retrain experiment (skip-unchanged reads that one)
    retrain_experiment = client.get_experiment_by_name(settings.experiment_name)
    assert retrain_experiment is None or not client.search_runs([retrain_experiment.experiment_id])


def test_ranking_sweep_picks_the_highest_validation_ndcg(small_data, settings):
    space = {"rating_weight_power": [0, 2], "neighbours": [5, 100]}
    summary = sweep(data_dir=small_data, settings=settings, space=space, model="ranking")

    assert len(summary.trials) == 4
    assert summary.best.validation_score == max(t.validation_score for t in summary.trials)
    assert len({round(t.validation_score, 6) for t in summary.trials}) > 1
    assert all(t.details["relative_l2_chosen"] > 0 for t in summary.trials)  # each trial walked its own λ
    children = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name(settings.sweep_experiment_name).experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{summary.mlflow_run_id}'")
    logged = {(float(r.data.params["rating_weight_power"]), int(r.data.params["neighbours"])):
              r.data.metrics["validation_ndcg_at_10"] for r in children}
    assert logged == {(t.config.rating_weight_power, t.config.neighbours): pytest.approx(t.validation_score)
                      for t in summary.trials}
    parent = mlflow.get_run(summary.mlflow_run_id).data
    assert parent.metrics["best_validation_ndcg_at_10"] == pytest.approx(summary.best.validation_score)
    assert 0 < parent.metrics["best_test_ndcg_at_10"] == pytest.approx(summary.test_score)
    assert "ANIMEREC_RANKING__NEIGHBOURS=" in summary.format()
