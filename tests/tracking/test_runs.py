"""One MLflow run per retrain: how it is named and tagged, what becomes of a run whose process died, how it ends,
and the registry's decision as the run records it."""

import json

import pytest
from mlflow import MlflowClient

from pipeline.registry.lineage import Lineage
from pipeline.registry.promotion import PromotionDecision
from pipeline.registry.scores import CHALLENGER, CHAMPION, VersionScores
from pipeline.tracking.runs import ended, log_decision, start_run


def _client(settings) -> MlflowClient:
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


@pytest.fixture
def lineage(tmp_path) -> Lineage:
    folder = tmp_path / "my-data"
    folder.mkdir()
    return Lineage("my-data", "0123456789abcdef", folder, {"rating.csv": "ab" * 32})


def test_a_run_is_named_after_its_data_and_tagged_with_their_lineage(settings, lineage):
    run = _client(settings).get_run(start_run(settings, lineage))
    tags = run.data.tags
    assert tags["mlflow.runName"] == "retrain my-data 01234567"
    assert (tags["dataset"], tags["data_version"], tags["sha256.rating.csv"]) == ("my-data", "0123456789abcdef",
                                                                                   "ab" * 32)
    inputs = [(given.dataset.name, given.dataset.digest) for given in run.inputs.dataset_inputs]
    assert inputs == [("my-data", "01234567")]  # the runs page's Dataset column: name and short data version


def test_a_run_left_running_by_a_dead_process_is_marked_killed_and_a_block_ends_its_run(settings, lineage):
    client = _client(settings)
    orphan = start_run(settings, lineage)  # never ended: its process was killed
    with ended(start_run(settings, lineage)) as run_id:
        assert client.get_run(orphan).info.status == "KILLED"
    assert client.get_run(run_id).info.status == "FINISHED"
    with pytest.raises(RuntimeError), ended(start_run(settings, lineage)) as failed:
        raise RuntimeError("a stage failed")
    assert client.get_run(failed).info.status == "FAILED"


@pytest.mark.parametrize("promoted", [True, False])
def test_the_decision_is_recorded_whole_and_as_tags_to_filter_runs_by(settings, lineage, promoted, tmp_path):
    run_id = start_run(settings, lineage)
    decision = PromotionDecision(version="3", promoted=promoted, reason="why it was decided", challenger=VersionScores(
        1.1, 0.3), champion_version="2", champion=VersionScores(1.2, None), champion_rescored=True)
    log_decision(run_id, decision)
    client = _client(settings)
    tags = client.get_run(run_id).data.tags
    assert tags["promotion"] == (CHAMPION if promoted else CHALLENGER)
    assert tags["promotion_reason"] == "why it was decided"
    recorded = json.loads((tmp_path / client.download_artifacts(run_id, "promotion.json", str(tmp_path))).read_text())
    assert recorded == {"version": "3", "promoted": promoted, "reason": "why it was decided",
                        "challenger": {"rmse": 1.1, "ndcg": 0.3}, "champion_version": "2",
                        "champion": {"rmse": 1.2, "ndcg": None}, "champion_rescored": True, "same_dataset": True}
