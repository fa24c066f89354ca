"""Register each trained model in the MLflow registry and decide champion vs challenger fairly.

The new version always gets alias `challenger`; it takes `champion` only if it beats the user+item
bias baseline and there is no champion or it has a lower test RMSE on the same test split. A champion
scored on another split (the data or the split settings changed) is re-scored on the current one first.
A person can override with `promote_manually`, which records who, when and why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline.evaluate import EvaluationReport, IdMaps, predict_ratings, rmse
from pipeline.matrix import UtilityMatrix
from pipeline.tracking import download_id_maps

CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass(frozen=True)
class PromotionDecision:
    version: str
    promoted: bool
    reason: str
    challenger_rmse: float
    champion_version: str | None  # the champion it was compared with, if any
    champion_rmse: float | None  # that champion's RMSE on the same test split
    champion_rescored: bool

    def as_dict(self) -> dict:
        return asdict(self)


def decide_promotion(challenger_rmse: float, bias_baseline_rmse: float,
                     champion_rmse: float | None) -> tuple[bool, str]:
    """Pure rule: never promote a model that loses to the bias baseline; otherwise promote when there
    is no champion or the challenger's RMSE is strictly lower on the same split."""
    if not challenger_rmse < bias_baseline_rmse:
        return False, f"test RMSE {challenger_rmse:.4f} does not beat the bias baseline's {bias_baseline_rmse:.4f}"
    if champion_rmse is None:
        return True, f"no champion yet; beats the bias baseline ({challenger_rmse:.4f} < {bias_baseline_rmse:.4f})"
    if challenger_rmse < champion_rmse:
        return True, f"test RMSE {challenger_rmse:.4f} < champion's {champion_rmse:.4f} on the same split"
    return False, f"test RMSE {challenger_rmse:.4f} >= champion's {champion_rmse:.4f} on the same split"


def current_champion(name: str) -> mlflow.entities.model_registry.ModelVersion | None:
    try:
        return MlflowClient().get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def score_version_on_split(name: str, version: str, matrix: UtilityMatrix) -> float:
    """Test RMSE of a registered version on `matrix`'s test split, through that version's own id maps."""
    client = MlflowClient()
    model_version = client.get_model_version(name, version)
    model = mlflow.tensorflow.load_model(f"models:/{name}/{version}")
    id_maps = IdMaps.from_dir(download_id_maps(model_version.run_id))
    fallback = float(client.get_run(model_version.run_id).data.params["train_mean_rating"])
    test = matrix.split("test")
    predicted = predict_ratings(model, id_maps, test, matrix.scale, fallback)
    return rmse(test["rating"].to_numpy(), predicted)


def register_and_decide(name: str, model_uri: str, run_id: str, report: EvaluationReport,
                        matrix: UtilityMatrix) -> PromotionDecision:
    """Register the model, tag it, set `challenger`, and move `champion` if it wins."""
    client = MlflowClient()
    champion = current_champion(name)
    champion_rmse, rescored = None, False
    if champion is not None:
        if champion.tags.get("split_id") == matrix.split_id:
            champion_rmse = float(champion.tags["test_rmse"])
        else:
            champion_rmse, rescored = score_version_on_split(name, champion.version, matrix), True
            client.log_metric(run_id, "champion_test_rmse_rescored", champion_rmse)

    tags = {"data_version": matrix.data_version, "split_id": matrix.split_id, "run_id": run_id,
            **{f"rows_{key}": str(value) for key, value in matrix.row_counts.items()},
            **{key: repr(value) for key, value in report.as_metrics().items()}}  # repr: exact round trip
    version = mlflow.register_model(model_uri, name, tags=tags).version
    promoted, reason = decide_promotion(report.model.rmse, report.bias.rmse, champion_rmse)
    client.set_registered_model_alias(name, CHALLENGER, version)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
        client.delete_registered_model_alias(name, CHALLENGER)
    client.set_model_version_tag(name, version, "promotion", CHAMPION if promoted else CHALLENGER)
    client.set_model_version_tag(name, version, "promotion_reason", reason)
    client.update_model_version(name, version, description=(
        f"Seed cosine model on data {matrix.data_version}: test RMSE {report.model.rmse:.4f} "
        f"(bias baseline {report.bias.rmse:.4f}, global mean {report.global_mean.rmse:.4f}); run {run_id}. "
        f"{'Promoted to champion' if promoted else 'Kept as challenger'}: {reason}."))
    return PromotionDecision(version=str(version), promoted=promoted, reason=reason,
                             challenger_rmse=report.model.rmse,
                             champion_version=None if champion is None else str(champion.version),
                             champion_rmse=champion_rmse, champion_rescored=rescored)
