"""The promotion rule, pure: a challenger becomes champion only if it beats the bias baseline and is no worse than the
champion of its data set on either metric beyond one standard error, and better on one."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.evaluation.evaluate import EvaluationReport
from pipeline.registry.lineage import Lineage
from pipeline.registry.scores import VersionScores


@dataclass(frozen=True)
class PromotionDecision:
    version: str
    promoted: bool
    reason: str
    challenger: VersionScores
    champion_version: str | None  # the champion it was compared with, if any
    champion: VersionScores | None  # that champion's scores on the same test split (None: not compared)
    champion_rescored: bool
    same_dataset: bool = True  # False: the champion learned from another data set and was not compared


@dataclass(frozen=True)
class Tolerances:
    """How much worse than the champion a challenger may be on one metric and still count as no worse:
    one standard error of that metric on the test split (of the RMSE over its ratings, of the mean NDCG
    over its users). A smaller difference is within what re-drawing the test split would change."""

    rmse: float
    ndcg: float

    @classmethod
    def of(cls, report: EvaluationReport) -> Tolerances:
        return cls(report.model.rmse_stderr, report.ranking.served.ndcg_stderr)


def decide_promotion(challenger: VersionScores, bias_baseline_rmse: float, champion: VersionScores | None,
                     tolerances: Tolerances, no_champion_reason: str = "no champion yet") -> tuple[bool, str]:
    """Pure rule: never promote a model that loses to the bias baseline; otherwise promote when there is no
    (usable) champion, or when the challenger is worse on neither metric beyond its tolerance and strictly
    better on at least one. The reason names the metric that decided."""
    if not challenger.rmse < bias_baseline_rmse:
        return False, f"test RMSE {challenger.rmse:.4f} does not beat the bias baseline's {bias_baseline_rmse:.4f}"
    if champion is None:
        return True, (f"{no_champion_reason}; beats the bias baseline "
                      f"({challenger.rmse:.4f} < {bias_baseline_rmse:.4f})")
    compare_ndcg = champion.ndcg is not None and challenger.ndcg is not None
    worse = []
    if challenger.rmse > champion.rmse + tolerances.rmse:
        worse.append(f"test RMSE {challenger.rmse:.4f} is worse than the champion's {champion.rmse:.4f} by more "
                     f"than the tolerance {tolerances.rmse:.4f}")
    if compare_ndcg and challenger.ndcg < champion.ndcg - tolerances.ndcg:
        worse.append(f"NDCG@10 {challenger.ndcg:.4f} is worse than the champion's {champion.ndcg:.4f} by more "
                     f"than the tolerance {tolerances.ndcg:.4f}")
    if worse:
        return False, "; ".join(worse) + " on the same split"
    better, within = [], []
    if challenger.rmse < champion.rmse:
        better.append(f"test RMSE {challenger.rmse:.4f} < champion's {champion.rmse:.4f}")
    else:
        within.append(f"test RMSE {challenger.rmse:.4f} vs {champion.rmse:.4f} is within the tolerance "
                      f"{tolerances.rmse:.4f}")
    if not compare_ndcg:
        within.append("NDCG@10 not measured for both: RMSE only")
    elif challenger.ndcg > champion.ndcg:
        better.append(f"NDCG@10 {challenger.ndcg:.4f} > champion's {champion.ndcg:.4f}")
    else:
        within.append(f"NDCG@10 {challenger.ndcg:.4f} vs {champion.ndcg:.4f} is within the tolerance "
                      f"{tolerances.ndcg:.4f}")
    if not better:
        ndcg_note = f", NDCG@10 {challenger.ndcg:.4f} vs {champion.ndcg:.4f}" if compare_ndcg else ""
        return False, (f"no better than the champion on the same split (test RMSE {challenger.rmse:.4f} vs "
                       f"{champion.rmse:.4f}{ndcg_note})")
    return True, "; ".join([f"{' and '.join(better)} on the same split", *within])


def other_dataset_reason(model_name: str, version: str, lineage: Lineage, champion_version: str,
                         champion_dataset: str | None) -> str:
    """Why a version is not compared with a champion from another data set, and what to do about it."""
    learned = (f"it learned from data set '{champion_dataset}'" if champion_dataset else
               "it records no data set (registered before lineage was kept)")
    return (f"not compared with champion v{champion_version}: {learned}, this version from '{lineage.dataset}' "
            f"(the same ids may name other people and titles); keep data sets apart with `make pipeline "
            f"DATA={lineage.location} MODEL_NAME={model_name}-{lineage.dataset}` (a registered model per data set), "
            f"or make this version champion with `make promote VERSION={version} REASON=\"…\"`")
