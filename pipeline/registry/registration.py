"""Register each trained model in the MLflow registry and decide champion vs challenger fairly.

The new version always gets alias `challenger`. It takes `champion` only if it beats the user+item bias
baseline, and either there is no champion or, on the same test split, it is worse on neither test RMSE
nor NDCG@10 of its served lists (beyond a tolerance of one standard error of that metric on the split)
and better on at least one. A champion is compared only within its data set lineage (the same data set
name; the data may have grown): one scored on another split of that data set is re-scored on the current
one first, while one from another data set is not compared at all (the same ids name other people and
titles there) and the new version stays challenger. A person can override with `promote_manually`, which
records who, when and why.

Each version carries a few tags a person scans in the registry page (VERSION_TAGS) and a one-paragraph
description; everything else stays in its training run.
"""

from __future__ import annotations

import io
from contextlib import redirect_stderr
from datetime import UTC, datetime

import mlflow
from mlflow import MlflowClient

from pipeline.evaluation.evaluate import EvaluationReport
from pipeline.matrix.utility_matrix import UtilityMatrix
from pipeline.registry.lineage import Lineage
from pipeline.registry.promotion import PromotionDecision, Tolerances, decide_promotion, other_dataset_reason
from pipeline.registry.queries import current_champion
from pipeline.registry.scores import (
    CHALLENGER,
    CHAMPION,
    MANUAL,
    OTHER_DATASET,
    ChampionScores,
    VersionScores,
    score_tag,
)

# The tags on a registered version: what the registry page shows in one line per version.
VERSION_TAGS = ("dataset", "data_version", "rating_scale", "test_rmse", "ndcg_at_10", "baseline_bias_rmse",
                "architecture", "decision")


def describe_version(lineage: Lineage, matrix: UtilityMatrix, report: EvaluationReport, architecture: str,
                     run_id: str, promoted: bool, reason: str, drift_note: str = "") -> str:
    """The version's one-paragraph description in the registry: what it learned from, how good it is, what was
    decided and why."""
    ranking = report.ranking
    lists = ("" if not ranking.served.n_users else
             f"; NDCG@10 of its top-10 lists {ranking.served.ndcg:.4f} (popularity {ranking.popularity.ndcg:.4f}, "
             f"rating model alone {ranking.rating_model.ndcg:.4f})")
    return (f"Learned from data set '{lineage.dataset}' (data version {lineage.data_version[:8]}, "
            f"{matrix.n_users:,} users x {matrix.n_anime:,} anime, {sum(matrix.split_sizes.values()):,} ratings on "
            f"the {matrix.scale.minimum}-{matrix.scale.maximum} scale) by {architecture}. Test RMSE "
            f"{report.model.rmse:.4f} (user+item bias baseline {report.bias.rmse:.4f}, global mean "
            f"{report.global_mean.rmse:.4f}){lists}. {'Promoted to champion' if promoted else 'Kept as challenger'}: "
            f"{reason}. Training run {run_id}." + (f" {drift_note}" if drift_note else ""))


def register_and_decide(name: str, model_uri: str, run_id: str, report: EvaluationReport, champion: ChampionScores,
                        matrix: UtilityMatrix, lineage: Lineage, architecture: str, drift_note: str = ""
                        ) -> PromotionDecision:
    """Register the model, tag and describe it (with `drift_note` when its data drifted from the champion's), set
    `challenger`, and move `champion` if it wins against the champion's scores on the same split."""
    client = MlflowClient()
    same_lineage = champion.version is None or champion.dataset == lineage.dataset
    ndcg = report.ranking.served.measured_ndcg
    tags = {"dataset": lineage.dataset, "data_version": lineage.data_version,
            "rating_scale": f"{matrix.scale.minimum}-{matrix.scale.maximum}",
            "test_rmse": score_tag(report.model.rmse), "ndcg_at_10": score_tag(ndcg),
            "baseline_bias_rmse": score_tag(report.bias.rmse),
            "architecture": architecture}
    with redirect_stderr(io.StringIO()):  # its "Successfully registered…" prints: the run logs the decision instead
        version = str(mlflow.register_model(model_uri, name, tags=tags).version)
    challenger = VersionScores.rounded(report.model.rmse, ndcg)
    if same_lineage:
        promoted, reason = decide_promotion(challenger, report.bias.rmse, champion.scores, Tolerances.of(report),
                                            champion.missing)
        decision = CHAMPION if promoted else CHALLENGER
    else:
        promoted, decision = False, OTHER_DATASET
        reason = other_dataset_reason(name, version, lineage, champion.version, champion.dataset)
    client.set_registered_model_alias(name, CHALLENGER, version)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
        client.delete_registered_model_alias(name, CHALLENGER)
    client.set_model_version_tag(name, version, "decision", decision)
    client.update_model_version(name, version, description=describe_version(
        lineage, matrix, report, architecture, run_id, promoted, reason, drift_note))
    return PromotionDecision(version=version, promoted=promoted, reason=reason, challenger=challenger,
                             champion_version=champion.version, champion=champion.scores,
                             champion_rescored=champion.rescored, same_dataset=same_lineage)


def promote_manually(name: str, version: str, reason: str, who: str) -> str | None:
    """A person's override: move `champion` to `version` (from any data set), recording who, when and why in the
    version's decision tag and description. Returns the version that was champion before (None if there was none)."""
    if not reason.strip():
        raise ValueError("a manual promotion needs a reason")
    client = MlflowClient()
    target = client.get_model_version(name, version)  # fails clearly if the version does not exist
    previous = current_champion(name)
    client.set_registered_model_alias(name, CHAMPION, version)
    aliases = client.get_registered_model(name).aliases
    if str(aliases.get(CHALLENGER)) == str(version):
        client.delete_registered_model_alias(name, CHALLENGER)
    stamp = datetime.now(tz=UTC).isoformat(timespec="seconds")
    replaced = "no champion" if previous is None else f"v{previous.version}"
    client.set_model_version_tag(name, version, "decision", MANUAL)
    client.update_model_version(name, version, description=(
        f"{target.description or ''} Promoted to champion by hand by {who} at {stamp} (replacing {replaced}): "
        f"{reason.strip()}").strip())
    return None if previous is None else str(previous.version)
