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

import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline.evaluate import SEEN_SPLITS, EvaluationReport, served_ranking
from pipeline.matrix import UtilityMatrix
from pipeline.metrics import rmse
from pipeline.serving import load_recommender

CHAMPION, CHALLENGER = "champion", "challenger"
# The tags on a registered version: what the registry page shows in one line per version.
VERSION_TAGS = ("dataset", "data_version", "rating_scale", "test_rmse", "ndcg_at_10", "baseline_bias_rmse",
                "architecture", "decision")
OTHER_DATASET = "challenger: other data set"  # the decision when the champion learned from another data set
# Scores are tagged, printed and compared at this precision: far finer than any tolerance (one standard error is
# ~0.005 RMSE on the anime sample), coarse enough to read in the registry page.
SCORE_DECIMALS = 4
NOT_MEASURED = "not measured"


def score_tag(value: float | None) -> str:
    return NOT_MEASURED if value is None or math.isnan(value) else f"{value:.{SCORE_DECIMALS}f}"


def tagged_score(text: str | None) -> float:
    """A score tag read back (nan when absent or not measured)."""
    return math.nan if text in (None, NOT_MEASURED) else float(text)


@dataclass(frozen=True)
class Lineage:
    """Which data a run learned from. Versions are compared only within one data set (the same name); the
    data version and the source files' sha256 say which state of it."""

    dataset: str
    data_version: str
    location: Path  # the data folder or .zip
    source_sha256: dict[str, str]


@dataclass(frozen=True)
class VersionScores:
    """What promotion compares, on one test split: RMSE of predicted ratings (lower is better) and NDCG@10
    of the served lists (higher is better; None for a version registered before lists were measured)."""

    rmse: float
    ndcg: float | None

    @classmethod
    def rounded(cls, rmse: float, ndcg: float | None) -> VersionScores:
        return cls(round(rmse, SCORE_DECIMALS), None if ndcg is None else round(ndcg, SCORE_DECIMALS))


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


def other_dataset_reason(model_name: str, version: str, lineage: Lineage, champion_version: str,
                         champion_dataset: str | None) -> str:
    """Why a version is not compared with a champion from another data set, and what to do about it."""
    learned = (f"it learned from data set '{champion_dataset}'" if champion_dataset else
               "it records no data set (registered before lineage was kept)")
    return (f"not compared with champion v{champion_version}: {learned}, this version from '{lineage.dataset}' "
            f"(the same ids may name other people and titles); keep data sets apart with `make pipeline "
            f"DATA={lineage.location} MODEL_NAME={model_name}-{lineage.dataset}` (a registered model per data set), "
            f"or make this version champion with `make promote VERSION={version} REASON=\"…\"`")


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
    return VersionScores.rounded(
        rmse=rmse(test["rating"].to_numpy(), recommender.predict_pairs(test["user_id"].to_numpy(),
                                                                       test["anime_id"].to_numpy())),
        ndcg=served_ranking(recommender.on_matrix(matrix, SEEN_SPLITS), matrix, relevance_threshold).measured_ndcg)


def _run_tags(run_id: str | None) -> dict[str, str]:
    """The tags of a version's training run (none if that run was deleted)."""
    try:
        return MlflowClient().get_run(run_id).data.tags if run_id else {}
    except MlflowException:
        return {}


def _tagged_scores(version: mlflow.entities.model_registry.ModelVersion) -> VersionScores:
    ndcg = tagged_score(version.tags.get("ndcg_at_10"))
    return VersionScores(tagged_score(version.tags["test_rmse"]), None if math.isnan(ndcg) else ndcg)


def describe_version(lineage: Lineage, matrix: UtilityMatrix, report: EvaluationReport, architecture: str,
                     run_id: str, promoted: bool, reason: str) -> str:
    """The version's one-paragraph description in the registry: what it learned from, how good it is, what was
    decided and why."""
    ranking = report.ranking
    lists = ("" if ranking is None or not ranking.served.n_users else
             f"; NDCG@10 of its top-10 lists {ranking.served.ndcg:.4f} (popularity {ranking.popularity.ndcg:.4f}, "
             f"rating model alone {ranking.rating_model.ndcg:.4f})")
    return (f"Learned from data set '{lineage.dataset}' (data version {lineage.data_version[:8]}, "
            f"{matrix.n_users:,} users x {matrix.n_anime:,} anime, {sum(matrix.split_sizes.values()):,} ratings on "
            f"the {matrix.scale.minimum}-{matrix.scale.maximum} scale) by {architecture}. Test RMSE "
            f"{report.model.rmse:.4f} (user+item bias baseline {report.bias.rmse:.4f}, global mean "
            f"{report.global_mean.rmse:.4f}){lists}. {'Promoted to champion' if promoted else 'Kept as challenger'}: "
            f"{reason}. Training run {run_id}.")


def register_and_decide(name: str, model_uri: str, run_id: str, report: EvaluationReport, matrix: UtilityMatrix,
                        relevance_threshold: float, lineage: Lineage, architecture: str) -> PromotionDecision:
    """Register the model, tag and describe it, set `challenger`, and move `champion` if it wins."""
    client = MlflowClient()
    champion = current_champion(name)
    champion_scores, rescored, no_champion_reason = None, False, "no champion yet"
    same_lineage = champion is None or champion.tags.get("dataset") == lineage.dataset
    if champion is not None and same_lineage:
        if _run_tags(champion.run_id).get("split_id") == matrix.split_id:
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

    ndcg = None if report.ranking is None else report.ranking.served.measured_ndcg
    tags = {"dataset": lineage.dataset, "data_version": lineage.data_version,
            "rating_scale": f"{matrix.scale.minimum}-{matrix.scale.maximum}",
            "test_rmse": score_tag(report.model.rmse), "ndcg_at_10": score_tag(ndcg),
            "baseline_bias_rmse": score_tag(report.bias.rmse),
            "architecture": architecture}
    version = str(mlflow.register_model(model_uri, name, tags=tags).version)
    challenger = VersionScores.rounded(report.model.rmse, ndcg)
    if same_lineage:
        promoted, reason = decide_promotion(challenger, report.bias.rmse, champion_scores, Tolerances.of(report),
                                            no_champion_reason)
        decision = CHAMPION if promoted else CHALLENGER
    else:
        promoted, decision = False, OTHER_DATASET
        reason = other_dataset_reason(name, version, lineage, str(champion.version), champion.tags.get("dataset"))
    client.set_registered_model_alias(name, CHALLENGER, version)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
        client.delete_registered_model_alias(name, CHALLENGER)
    client.set_model_version_tag(name, version, "decision", decision)
    client.update_model_version(name, version, description=describe_version(
        lineage, matrix, report, architecture, run_id, promoted, reason))
    return PromotionDecision(version=version, promoted=promoted, reason=reason, challenger=challenger,
                             champion_version=None if champion is None else str(champion.version),
                             champion=champion_scores, champion_rescored=rescored, same_dataset=same_lineage)


@dataclass(frozen=True)
class VersionRow:
    """One registered version as `make compare` shows it."""

    version: str
    aliases: tuple[str, ...]
    created: datetime
    dataset: str  # its lineage: versions compare only within one
    data_version: str
    split_id: str
    rating_scale: str  # what its RMSE is on
    decision: str
    params: dict[str, str]  # the training run's embedding_dim, epochs, learning_rate, batch_size
    test_rmse: float
    bias_rmse: float
    ndcg: float  # NDCG@10 of its served lists (nan if not measured)

    @property
    def is_champion(self) -> bool:
        return CHAMPION in self.aliases


COMPARED_PARAMS = ("embedding_dim", "epochs", "learning_rate", "batch_size")
UNKNOWN_DATASET = "(not recorded)"


def list_versions(name: str) -> list[VersionRow]:
    """Every version of the registered model, by data set (in order of each one's first version), oldest first."""
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
        run = client.get_run(mv.run_id) if mv.run_id else None
        params = run.data.params if run else {}
        rows.append(VersionRow(
            version=str(mv.version), aliases=tuple(sorted(by_version.get(str(mv.version), []))),
            created=datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC),
            dataset=mv.tags.get("dataset", UNKNOWN_DATASET), data_version=mv.tags.get("data_version", "?"),
            split_id=run.data.tags.get("split_id", "?") if run else "?",
            rating_scale=mv.tags.get("rating_scale", "1-10"),  # versions from before the tag: the only scale then
            decision=mv.tags.get("decision", "?"),
            params={key: params.get(key, "?") for key in COMPARED_PARAMS},
            test_rmse=tagged_score(mv.tags.get("test_rmse")), bias_rmse=tagged_score(mv.tags.get("baseline_bias_rmse")),
            ndcg=tagged_score(mv.tags.get("ndcg_at_10")),
        ))
    first_seen = {row.dataset: index for index, row in reversed(list(enumerate(rows)))}
    return sorted(rows, key=lambda row: (first_seen[row.dataset], int(row.version)))


def format_versions(name: str, rows: list[VersionRow]) -> str:
    """One plain-text table per data set: RMSE and NDCG@10 compare only within a data set (and a split)."""
    if not rows:
        return f"no versions of '{name}' registered yet"
    header = ("version", "aliases", "created (UTC)", "data", "split", "scale", "test RMSE", "NDCG@10", "bias RMSE",
              "dim", "epochs", "lr", "batch", "decision")
    table = [header] + [(
        r.version, ",".join(r.aliases) or "-", r.created.strftime("%Y-%m-%d %H:%M"), r.data_version[:8],
        r.split_id[:8], r.rating_scale, f"{r.test_rmse:.4f}", "-" if math.isnan(r.ndcg) else f"{r.ndcg:.4f}",
        f"{r.bias_rmse:.4f}", *(r.params[key] for key in COMPARED_PARAMS), r.decision) for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]

    def line(cells) -> str:
        return "  ".join(str(cell).ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    lines, datasets = [], list(dict.fromkeys(r.dataset for r in rows))
    for dataset in datasets:
        group = [cells for r, cells in zip(rows, table[1:], strict=True) if r.dataset == dataset]
        lines += [f"data set {dataset} ({len(group)} version{'s' if len(group) > 1 else ''})", line(header),
                  line("-" * width for width in widths), *(line(cells) for cells in group), ""]
    lines.append(f"{len(rows)} version(s) of '{name}' from {len(datasets)} data set(s): compare RMSE and NDCG@10 only "
                 "within a data set (a champion is compared only with versions of its own data set, re-scored on "
                 "the current split first).")
    return "\n".join(lines)


def versions_chart(name: str, rows: list[VersionRow]):
    """Test RMSE (with the bias baseline) and NDCG@10 per version side by side, one colour per data set, the
    champion outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (rmse_axis, ndcg_axis) = plt.subplots(1, 2, figsize=(max(8.0, 1.0 * len(rows) + 4), 4.2))
    datasets = list(dict.fromkeys(r.dataset for r in rows))
    colours = {dataset: plt.get_cmap("tab10")(i % 10) for i, dataset in enumerate(datasets)}
    labels = [f"v{r.version}" for r in rows]
    style = {"color": [colours[r.dataset] for r in rows], "edgecolor": ["black" if r.is_champion else "none"
                                                                         for r in rows], "linewidth": 2.5}
    rmse_axis.bar(labels, [r.test_rmse for r in rows], **style)
    rmse_axis.scatter(labels, [r.bias_rmse for r in rows], color="black", marker="_", s=400, label="bias baseline")
    scales = sorted({r.rating_scale for r in rows})
    scale = f"{scales[0]} scale" if len(scales) == 1 else "each version's scale"
    rmse_axis.set(xlabel="registered version", ylabel=f"test RMSE ({scale}), lower is better", title="Test RMSE",
                  ylim=(0, 1.3 * max(max(r.test_rmse, r.bias_rmse) for r in rows)))
    rmse_axis.legend(loc="upper left")
    ndcg_axis.bar(labels, [0.0 if math.isnan(r.ndcg) else r.ndcg for r in rows], **style)
    ndcg_axis.set(xlabel="registered version", ylabel="NDCG@10 of its lists, higher is better", title="NDCG@10",
                  ylim=(0, 1.3 * max([0.05] + [r.ndcg for r in rows if not math.isnan(r.ndcg)])))
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[d]) for d in datasets]
    handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="black", linewidth=2.5))
    figure.legend(handles, [f"data set {d}" for d in datasets] + ["champion"], loc="lower center",
                  ncols=min(len(handles), 4), frameon=False)
    figure.suptitle(f"{name}: registered versions (compare within a data set)")
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    return figure


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
    client.set_model_version_tag(name, version, "decision", f"{CHAMPION}: manual")
    client.update_model_version(name, version, description=(
        f"{target.description or ''} Promoted to champion by hand by {who} at {stamp} (replacing {replaced}): "
        f"{reason.strip()}").strip())
    return None if previous is None else str(previous.version)
