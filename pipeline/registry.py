"""Register each trained model in the MLflow registry and decide champion vs challenger fairly.

The new version always gets alias `challenger`. It takes `champion` only if it beats the user+item bias
baseline, and either there is no champion or, on the same test split, it is worse on neither test RMSE
nor NDCG@10 of its served lists (beyond a tolerance of one standard error of that metric on the split)
and better on at least one. A champion scored on another split (the data or the split settings
changed) is re-scored on the current one first. A person can override with `promote_manually`, which
records who, when and why.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline.evaluate import SEEN_SPLITS, EvaluationReport, served_ranking
from pipeline.matrix import UtilityMatrix
from pipeline.metrics import rmse
from pipeline.serving import load_recommender

CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass(frozen=True)
class VersionScores:
    """What promotion compares, on one test split: RMSE of predicted ratings (lower is better) and NDCG@10
    of the served lists (higher is better; None for a version registered before lists were measured)."""

    rmse: float
    ndcg: float | None


@dataclass(frozen=True)
class PromotionDecision:
    version: str
    promoted: bool
    reason: str
    challenger: VersionScores
    champion_version: str | None  # the champion it was compared with, if any
    champion: VersionScores | None  # that champion's scores on the same test split
    champion_rescored: bool

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Tolerances:
    """How much worse than the champion a challenger may be on one metric and still count as no worse:
    one standard error of that metric on the test split (of the RMSE over its ratings, of the mean NDCG
    over its users). A smaller difference is within what re-drawing the test split would change."""

    rmse: float
    ndcg: float

    @classmethod
    def of(cls, report: EvaluationReport) -> Tolerances:
        return cls(report.model.rmse_stderr, 0.0 if report.ranking is None else report.ranking.served.ndcg_stderr)


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


def current_champion(name: str) -> mlflow.entities.model_registry.ModelVersion | None:
    try:
        return MlflowClient().get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def score_version_on_split(name: str, version: str, matrix: UtilityMatrix, relevance_threshold: float
                           ) -> VersionScores:
    """Test RMSE and served NDCG@10 of a registered version on `matrix`'s test split, through that version's
    own id maps: pairs it never saw get its train mean; users' histories are the current matrix's."""
    recommender = load_recommender(f"models:/{name}/{version}")
    test = matrix.split("test")
    return VersionScores(
        rmse=rmse(test["rating"].to_numpy(), recommender.predict_pairs(test["user_id"].to_numpy(),
                                                                       test["anime_id"].to_numpy())),
        ndcg=served_ranking(recommender.on_matrix(matrix, SEEN_SPLITS), matrix, relevance_threshold).measured_ndcg)


def _tagged_scores(version: mlflow.entities.model_registry.ModelVersion) -> VersionScores:
    ndcg = float(version.tags.get("ndcg_at_10", "nan"))
    return VersionScores(float(version.tags["test_rmse"]), None if math.isnan(ndcg) else ndcg)


def register_and_decide(name: str, model_uri: str, run_id: str, report: EvaluationReport,
                        matrix: UtilityMatrix, relevance_threshold: float) -> PromotionDecision:
    """Register the model, tag it, set `challenger`, and move `champion` if it wins."""
    client = MlflowClient()
    champion = current_champion(name)
    champion_scores, rescored, no_champion_reason = None, False, "no champion yet"
    if champion is not None:
        if champion.tags.get("split_id") == matrix.split_id:
            champion_scores = _tagged_scores(champion)
        else:
            try:
                champion_scores = score_version_on_split(name, champion.version, matrix, relevance_threshold)
                rescored = True
                client.log_metric(run_id, "champion_test_rmse_rescored", champion_scores.rmse)
                client.log_metric(run_id, "champion_ndcg_at_10_rescored", champion_scores.ndcg)
            except Exception as exc:  # a damaged champion artifact must not block every later retrain
                no_champion_reason = (f"champion v{champion.version} could not be loaded "
                                      f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")

    tags = {"data_version": matrix.data_version, "split_id": matrix.split_id, "run_id": run_id,
            "rating_scale": f"{matrix.scale.minimum}-{matrix.scale.maximum}",
            **{f"rows_{key}": str(value) for key, value in matrix.row_counts.items() if isinstance(value, int)},
            **{key: repr(value) for key, value in report.as_metrics().items()}}  # repr: exact round trip
    version = mlflow.register_model(model_uri, name, tags=tags).version
    ndcg = None if report.ranking is None else report.ranking.served.measured_ndcg
    challenger = VersionScores(report.model.rmse, ndcg)
    promoted, reason = decide_promotion(challenger, report.bias.rmse, champion_scores, Tolerances.of(report),
                                        no_champion_reason)
    client.set_registered_model_alias(name, CHALLENGER, version)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
        client.delete_registered_model_alias(name, CHALLENGER)
    client.set_model_version_tag(name, version, "promotion", CHAMPION if promoted else CHALLENGER)
    client.set_model_version_tag(name, version, "promotion_reason", reason)
    client.update_model_version(name, version, description=(
        f"Model on data {matrix.data_version}: test RMSE {report.model.rmse:.4f} "
        f"(bias baseline {report.bias.rmse:.4f}, global mean {report.global_mean.rmse:.4f})"
        + ("" if ndcg is None else f", NDCG@10 of its lists {ndcg:.4f} (popularity "
           f"{report.ranking.popularity.ndcg:.4f})") + f"; run {run_id}. "
        f"{'Promoted to champion' if promoted else 'Kept as challenger'}: {reason}."))
    return PromotionDecision(version=str(version), promoted=promoted, reason=reason, challenger=challenger,
                             champion_version=None if champion is None else str(champion.version),
                             champion=champion_scores, champion_rescored=rescored)


@dataclass(frozen=True)
class VersionRow:
    """One registered version as `make compare` shows it."""

    version: str
    aliases: tuple[str, ...]
    created: datetime
    data_version: str
    split_id: str
    rating_scale: str  # what its RMSE is on
    params: dict[str, str]  # the training run's embedding_dim, epochs, learning_rate, batch_size
    test_rmse: float
    test_mae: float
    bias_rmse: float
    ndcg: float  # NDCG@10 of its served lists (nan if not measured)

    @property
    def is_champion(self) -> bool:
        return CHAMPION in self.aliases


COMPARED_PARAMS = ("embedding_dim", "epochs", "learning_rate", "batch_size")


def list_versions(name: str) -> list[VersionRow]:
    """Every version of the registered model, oldest first, with what is needed to compare them."""
    client = MlflowClient()
    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException:
        return []
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    rows = []
    for mv in sorted(client.search_model_versions(f"name = '{name}'"), key=lambda mv: int(mv.version)):
        params = client.get_run(mv.run_id).data.params if mv.run_id else {}
        rows.append(VersionRow(
            version=str(mv.version), aliases=tuple(sorted(by_version.get(str(mv.version), []))),
            created=datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC),
            data_version=mv.tags.get("data_version", "?"), split_id=mv.tags.get("split_id", "?"),
            rating_scale=mv.tags.get("rating_scale", "1-10"),  # versions from before the tag: the only scale then
            params={key: params.get(key, "?") for key in COMPARED_PARAMS},
            test_rmse=float(mv.tags.get("test_rmse", "nan")), test_mae=float(mv.tags.get("test_mae", "nan")),
            bias_rmse=float(mv.tags.get("baseline_bias_rmse", "nan")),
            ndcg=float(mv.tags.get("ndcg_at_10", "nan")),
        ))
    return rows


def format_versions(name: str, rows: list[VersionRow]) -> str:
    """A plain-text table; RMSEs are comparable only between rows that share a split."""
    if not rows:
        return f"no versions of '{name}' registered yet"
    header = ("version", "aliases", "created (UTC)", "data", "split", "scale", "dim", "epochs", "lr", "batch",
              "test RMSE", "test MAE", "bias RMSE", "NDCG@10")
    table = [header] + [(
        r.version, ",".join(r.aliases) or "-", r.created.strftime("%Y-%m-%d %H:%M"), r.data_version[:8],
        r.split_id[:8], r.rating_scale, *(r.params[key] for key in COMPARED_PARAMS),
        f"{r.test_rmse:.4f}", f"{r.test_mae:.4f}", f"{r.bias_rmse:.4f}",
        "-" if math.isnan(r.ndcg) else f"{r.ndcg:.4f}") for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in table]
    lines.insert(1, "  ".join("-" * width for width in widths))
    splits = {r.split_id for r in rows}
    lines.append(f"\n{len(rows)} version(s) of '{name}' on {len(splits)} test split(s): compare RMSE and NDCG only "
                 "within one split (the champion is re-scored on the current split before any promotion).")
    return "\n".join(lines)


def rmse_chart(name: str, rows: list[VersionRow]):
    """Bar chart of test RMSE per version (champion highlighted) with each version's bias baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(max(6.0, 0.6 * len(rows) + 2), 4))
    labels = [f"v{r.version}" for r in rows]
    colors = ["tab:orange" if r.is_champion else "tab:blue" for r in rows]
    axis.bar(labels, [r.test_rmse for r in rows], color=colors, label="test RMSE (orange: champion)")
    axis.scatter(labels, [r.bias_rmse for r in rows], color="black", marker="_", s=400, label="bias baseline")
    scales = sorted({r.rating_scale for r in rows})
    scale = f"{scales[0]} scale" if len(scales) == 1 else "each version's scale"
    axis.set(xlabel="registered version", ylabel=f"RMSE ({scale})", title=f"{name}: test RMSE per version",
             ylim=(0, 1.3 * max(max(r.test_rmse, r.bias_rmse) for r in rows)))
    axis.legend(loc="upper left", ncols=2)
    figure.tight_layout()
    return figure


def promote_manually(name: str, version: str, reason: str, who: str) -> str | None:
    """A person's override: move `champion` to `version`, recording who, when and why on the version.
    Returns the version that was champion before (None if there was none)."""
    if not reason.strip():
        raise ValueError("a manual promotion needs a reason")
    client = MlflowClient()
    client.get_model_version(name, version)  # fails clearly if the version does not exist
    previous = current_champion(name)
    client.set_registered_model_alias(name, CHAMPION, version)
    aliases = client.get_registered_model(name).aliases
    if str(aliases.get(CHALLENGER)) == str(version):
        client.delete_registered_model_alias(name, CHALLENGER)
    stamp = datetime.now(tz=UTC).isoformat(timespec="seconds")
    for key, value in {"promotion": CHAMPION, "promotion_reason": f"manual: {reason}",
                       "manual_promotion_by": who, "manual_promotion_at": stamp,
                       "manual_promotion_replaced": "none" if previous is None else str(previous.version)}.items():
        client.set_model_version_tag(name, version, key, value)
    return None if previous is None else str(previous.version)
