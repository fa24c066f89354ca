"""Register each trained model in the MLflow registry and decide champion vs challenger fairly.

The new version always gets alias `challenger`; it takes `champion` only if it beats the user+item
bias baseline and there is no champion or it has a lower test RMSE on the same test split. A champion
scored on another split (the data or the split settings changed) is re-scored on the current one first.
A person can override with `promote_manually`, which records who, when and why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline.evaluate import EvaluationReport, rmse
from pipeline.matrix import UtilityMatrix
from pipeline.serving import load_recommender

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


def decide_promotion(challenger_rmse: float, bias_baseline_rmse: float, champion_rmse: float | None,
                     no_champion_reason: str = "no champion yet") -> tuple[bool, str]:
    """Pure rule: never promote a model that loses to the bias baseline; otherwise promote when there
    is no (usable) champion or the challenger's RMSE is strictly lower on the same split."""
    if not challenger_rmse < bias_baseline_rmse:
        return False, f"test RMSE {challenger_rmse:.4f} does not beat the bias baseline's {bias_baseline_rmse:.4f}"
    if champion_rmse is None:
        return True, (f"{no_champion_reason}; beats the bias baseline "
                      f"({challenger_rmse:.4f} < {bias_baseline_rmse:.4f})")
    if challenger_rmse < champion_rmse:
        return True, f"test RMSE {challenger_rmse:.4f} < champion's {champion_rmse:.4f} on the same split"
    return False, f"test RMSE {challenger_rmse:.4f} >= champion's {champion_rmse:.4f} on the same split"


def current_champion(name: str) -> mlflow.entities.model_registry.ModelVersion | None:
    try:
        return MlflowClient().get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def score_version_on_split(name: str, version: str, matrix: UtilityMatrix) -> float:
    """Test RMSE of a registered version on `matrix`'s test split, through that version's own id maps
    (pairs it never saw get its train mean: what it would serve them)."""
    recommender = load_recommender(f"models:/{name}/{version}")
    test = matrix.split("test")
    return rmse(test["rating"].to_numpy(), recommender.predict_pairs(test["user_id"].to_numpy(),
                                                                      test["anime_id"].to_numpy()))


def register_and_decide(name: str, model_uri: str, run_id: str, report: EvaluationReport,
                        matrix: UtilityMatrix) -> PromotionDecision:
    """Register the model, tag it, set `challenger`, and move `champion` if it wins."""
    client = MlflowClient()
    champion = current_champion(name)
    champion_rmse, rescored, no_champion_reason = None, False, "no champion yet"
    if champion is not None:
        if champion.tags.get("split_id") == matrix.split_id:
            champion_rmse = float(champion.tags["test_rmse"])
        else:
            try:
                champion_rmse, rescored = score_version_on_split(name, champion.version, matrix), True
                client.log_metric(run_id, "champion_test_rmse_rescored", champion_rmse)
            except Exception as exc:  # a damaged champion artifact must not block every later retrain
                no_champion_reason = (f"champion v{champion.version} could not be loaded "
                                      f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")

    tags = {"data_version": matrix.data_version, "split_id": matrix.split_id, "run_id": run_id,
            **{f"rows_{key}": str(value) for key, value in matrix.row_counts.items()},
            **{key: repr(value) for key, value in report.as_metrics().items()}}  # repr: exact round trip
    version = mlflow.register_model(model_uri, name, tags=tags).version
    promoted, reason = decide_promotion(report.model.rmse, report.bias.rmse, champion_rmse, no_champion_reason)
    client.set_registered_model_alias(name, CHALLENGER, version)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
        client.delete_registered_model_alias(name, CHALLENGER)
    client.set_model_version_tag(name, version, "promotion", CHAMPION if promoted else CHALLENGER)
    client.set_model_version_tag(name, version, "promotion_reason", reason)
    client.update_model_version(name, version, description=(
        f"Model on data {matrix.data_version}: test RMSE {report.model.rmse:.4f} "
        f"(bias baseline {report.bias.rmse:.4f}, global mean {report.global_mean.rmse:.4f}); run {run_id}. "
        f"{'Promoted to champion' if promoted else 'Kept as challenger'}: {reason}."))
    return PromotionDecision(version=str(version), promoted=promoted, reason=reason,
                             challenger_rmse=report.model.rmse,
                             champion_version=None if champion is None else str(champion.version),
                             champion_rmse=champion_rmse, champion_rescored=rescored)


@dataclass(frozen=True)
class VersionRow:
    """One registered version as `make compare` shows it."""

    version: str
    aliases: tuple[str, ...]
    created: datetime
    data_version: str
    split_id: str
    params: dict[str, str]  # the training run's embedding_dim, epochs, learning_rate, batch_size
    test_rmse: float
    test_mae: float
    bias_rmse: float

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
            params={key: params.get(key, "?") for key in COMPARED_PARAMS},
            test_rmse=float(mv.tags.get("test_rmse", "nan")), test_mae=float(mv.tags.get("test_mae", "nan")),
            bias_rmse=float(mv.tags.get("baseline_bias_rmse", "nan")),
        ))
    return rows


def format_versions(name: str, rows: list[VersionRow]) -> str:
    """A plain-text table; RMSEs are comparable only between rows that share a split."""
    if not rows:
        return f"no versions of '{name}' registered yet"
    header = ("version", "aliases", "created (UTC)", "data", "split", "dim", "epochs", "lr", "batch",
              "test RMSE", "test MAE", "bias RMSE")
    table = [header] + [(
        r.version, ",".join(r.aliases) or "-", r.created.strftime("%Y-%m-%d %H:%M"), r.data_version[:8],
        r.split_id[:8], *(r.params[key] for key in COMPARED_PARAMS),
        f"{r.test_rmse:.4f}", f"{r.test_mae:.4f}", f"{r.bias_rmse:.4f}") for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in table]
    lines.insert(1, "  ".join("-" * width for width in widths))
    splits = {r.split_id for r in rows}
    lines.append(f"\n{len(rows)} version(s) of '{name}' on {len(splits)} test split(s): compare RMSE only "
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
    axis.set(xlabel="registered version", ylabel="RMSE (1-10 scale)", title=f"{name}: test RMSE per version",
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
