"""What people read about a run: the terminal summary, the Prefect artifacts and the log lines of each stage.

Pure functions from the stages' typed results to text and tables; the flows only hand them to the terminal,
the Prefect logger and Prefect's artifact API.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pipeline.data.dataset_config import DatasetOrigins
from pipeline.data.ingest import RawData
from pipeline.evaluation.evaluate import EvaluationReport
from pipeline.models.ranking.fit import RankingFit
from pipeline.monitoring.check import NewDataReport
from pipeline.registry.promotion import PromotionDecision
from pipeline.registry.scores import CHALLENGER, CHAMPION
from pipeline.settings import Settings
from pipeline.tracking.runs import RetrainRun
from pipeline.validation.results import ValidatedData, ValidationCounts

if TYPE_CHECKING:  # the summary only reads it: the flow module imports this one without Keras
    from pipeline.models.rating.train import TrainedModel


@dataclass(frozen=True)
class TrainingOutcome:
    """What a run trained, how it was judged and what the registry decided."""

    run: RetrainRun  # its MLflow run, settings, matrix and lineage
    trained: TrainedModel
    ranking_fit: RankingFit
    evaluation: EvaluationReport
    decision: PromotionDecision
    new_data: NewDataReport  # measured before training: the champion on the new ratings, the drift


@dataclass(frozen=True)
class DataReport:
    """What a run read and validated, kept past the ingested and validated tables (freed before training)."""

    data_dir: Path
    layout: str
    data_version: str
    counts: ValidationCounts
    validation_summary: str
    scale_warning: str | None
    app_ratings: str | None = None  # what the web app's ratings brought, when the run read them

    @classmethod
    def of(cls, data_dir: Path, raw: RawData, validated: ValidatedData) -> DataReport:
        return cls(data_dir, raw.layout.name, validated.data_version, validated.counts, validated.summary(),
                   validated.scale.warning, None if raw.app_ratings is None else raw.app_ratings.describe())


@dataclass(frozen=True)
class RetrainSummary:
    data: DataReport
    settings: Settings  # the data set's: its name, rating scale and relevance
    origins: DatasetOrigins  # where the data set's name and scale came from
    archived: list[Path]
    outcome: TrainingOutcome | None  # None when the data were unchanged and training was skipped

    def count_rows(self) -> list[tuple[str, int]]:
        c = self.data.counts
        return [("rows in", c.rows_in), ("accepted", c.accepted), ("unrated", c.unrated),
                ("quarantined", c.quarantined), ("superseded", c.superseded)]

    def _data_lines(self) -> list[str]:
        """What was read: the data set, its scale and version, and every row's fate."""
        c, data, settings = self.data.counts, self.data, self.settings
        lines = [f"  data set          {settings.dataset_name} ({self.origins.name})",
                 f"  data              {data.data_dir}" + (f" + {len(self.archived)} inbox file(s), now archived"
                                                          if self.archived else "") + f" ({data.layout} layout)",
                 f"  rating scale      {settings.rating_scale} ({self.origins.rating_scale}); relevant for top-10: "
                 f"rating >= {settings.relevant_rating}",
                 f"  data version      {data.data_version}"]
        if data.app_ratings:
            lines.append(f"  app ratings       {data.app_ratings}")
        if data.scale_warning:
            lines.append(f"  warning           {data.scale_warning}")
        lines += [f"  {'  ' * (i > 0)}{label:<{16 - 2 * (i > 0)}}{value:>10,}"
                  for i, (label, value) in enumerate(self.count_rows()) if i < 4 or value]
        if len(c.per_source) > 1:
            lines += ["  per file (superseded: the same pair in a later file)"]
            lines += [f"    {name:<24}{n['rows_in']:>10,} in = {n['accepted']:,} accepted + {n['unrated']:,} "
                      f"unrated + {n['quarantined']:,} quarantined + {n['superseded']:,} superseded"
                      for name, n in c.per_source.items()]
        if set(c.unrated_by_status) - {"watched"}:
            lines.append("  unrated, status  " + ", ".join(f"{status} {n:,}" for status, n in
                                                             c.unrated_by_status.items()))
        lines.append(f"  anime.csv         {c.anime_rows_in:,} rows, {c.anime_quarantined:,} quarantined; "
                     f"{c.ratings_without_metadata:,} ratings of anime missing from anime.csv (kept)")
        if c.anime_neutralized:
            lines.append("    left out         " + ", ".join(f"{column} {n:,}" for column, n in
                                                             c.anime_neutralized.items())
                         + " values failing validation (neutral features)")
        return lines

    def _feature_lines(self) -> list[str]:
        """The feature model's features, and how many anime it answers for from them alone."""
        features = self.outcome.trained.features
        if features is None:
            return []
        new = len(features.not_in(self.outcome.run.matrix.anime_map)[0])
        return [f"  anime features    {features.summary()}",
                f"  new anime         {new:,} in anime.csv with no rating: answered from their features alone"]

    def format(self, model_name: str) -> str:
        lines = self._data_lines()
        if self.outcome is None:
            return "\n".join(["Retrain skipped: data unchanged since the last trained run", *lines])
        o, e, d = self.outcome, self.outcome.evaluation, self.outcome.decision
        sizes, training = o.run.matrix.split_sizes, o.run.settings.training
        chosen = o.ranking_fit.chosen
        walk = (f"tried {', '.join(f'{t.relative_l2:g}' for t in o.ranking_fit.trials)}: best validation NDCG@10 "
                f"{chosen.validation.ndcg:.4f}" if chosen.validation.n_users else
                f"not walked: no validation rating >= {self.settings.relevant_rating}")
        compared = (f"\n  champion v{d.champion_version}  of another data set: not compared" if not d.same_dataset
                    else "" if d.champion is None else
                    f"\n  champion v{d.champion_version}  RMSE {d.champion.rmse:.4f}"
                    + ("" if d.champion.ndcg is None else f", NDCG@10 {d.champion.ndcg:.4f}") + " on this test split"
                    f"{' (re-scored: data or split changed)' if d.champion_rescored else ''}")
        return "\n".join([
            f"Retrain finished (MLflow run {o.run.run_id})", *lines,
            f"  matrix            {o.run.matrix.n_users:,} users x {o.run.matrix.n_anime:,} anime; "
            f"train {sizes['train']:,} / validation {sizes['validation']:,} / test {sizes['test']:,}",
            *new_data_lines(o.new_data),
            f"  rating model      {training.method}: {o.trained.epochs_run} {training.step_name}s run, weights of "
            f"{training.step_name} {o.trained.best_epoch} kept",
            *self._feature_lines(),
            f"  ranking model     EASE, lambda {o.ranking_fit.model.l2:.4g} ({chosen.relative_l2:g} x mean "
            f"interactions per anime; {walk}), {o.ranking_fit.fit_seconds:.1f} s",
            f"  {f'test scores ({self.settings.rating_scale} scale)':<29}RMSE     MAE",
            f"    rating model             {e.model.rmse:.4f}  {e.model.mae:.4f}",
            f"    user+item bias baseline  {e.bias.rmse:.4f}  {e.bias.mae:.4f}",
            f"    global mean baseline     {e.global_mean.rmse:.4f}  {e.global_mean.mae:.4f}",
            *self._ranking_lines(e),
            f"  registered        {model_name} version {d.version}{compared}",
            f"  decision          {'promoted to champion' if d.promoted else 'kept as challenger'}: {d.reason}",
            *self._next_lines(d, int(o.run.matrix.user_map.ids[0])),
        ])

    @staticmethod
    def _next_lines(d: PromotionDecision, user_id: int) -> list[str]:
        """What to run next: the app and the commands serve the champion, which this version may not be."""
        if d.promoted:
            return [f"  next              make app (serves version {d.version}), make recommend USER_ID={user_id}, "
                    "make compare"]
        champion = f"v{d.champion_version}" if d.champion_version else "none yet"
        return [f"  next              make app MODEL={d.version} serves this version (make app serves the champion: "
                f"{champion}), make recommend USER_ID={user_id} MODEL={d.version}, make compare; "
                f'make promote VERSION={d.version} REASON="…" makes it champion']

    def _ranking_lines(self, e: EvaluationReport) -> list[str]:
        if not e.ranking.served.n_users:
            return [f"  top-10 on test    not measured: no test rating >= {self.settings.relevant_rating} (the top "
                    f"of the {self.settings.rating_scale} scale); is the scale right?"]
        return [f"  top-10 on test ({e.ranking.served.n_users:,} users)  P@10    R@10    NDCG@10  coverage  "
                "personalization",
                *(f"    {label:<27}{r.precision:.4f}  {r.recall:.4f}  {r.ndcg:.4f}   {r.coverage:.4f}    "
                  f"{r.personalization:.4f}" for label, r in e.ranking.labelled())]


@dataclass(frozen=True)
class Artifact:
    """One Prefect artifact: a table (a list of rows) or a markdown text, under a key."""

    kind: Literal["table", "markdown"]
    key: str
    description: str
    content: Any  # list[dict] for a table, str for markdown


def retrain_artifacts(summary: RetrainSummary, model_name: str) -> list[Artifact]:
    """What a user reads in the Prefect UI without opening logs."""
    artifacts = [
        Artifact("table", "retrain-row-counts", "Rows read and where they went",
                 [{"rows": label, "count": value} for label, value in summary.count_rows()]),
        Artifact("table", "retrain-row-counts-per-file", "Rows per file (superseded: the same pair in a later file); "
                 "in = accepted + unrated + quarantined + superseded",
                 [{"file": name, **counts} for name, counts in summary.data.counts.per_source.items()]),
        Artifact("markdown", "retrain-validation", "Great Expectations summary",
                 f"```\n{summary.data.validation_summary}\n```"),
    ]
    if summary.outcome is None:
        return [*artifacts, Artifact("markdown", "retrain-decision", "Promotion decision", (
            f"Skipped: data version `{summary.data.data_version}` is unchanged since data set "
            f"{summary.settings.dataset_name}'s last "
            "trained run."))]
    o, e, d = summary.outcome, summary.outcome.evaluation, summary.outcome.decision
    artifacts.append(Artifact("table", "retrain-scores", f"Test RMSE/MAE ({summary.settings.rating_scale} scale)", [
        {"model": "rating model", "rmse": round(e.model.rmse, 4), "mae": round(e.model.mae, 4)},
        {"model": "user+item bias baseline", "rmse": round(e.bias.rmse, 4), "mae": round(e.bias.mae, 4)},
        {"model": "global mean baseline", "rmse": round(e.global_mean.rmse, 4), "mae": round(e.global_mean.mae, 4)},
    ]))
    if e.ranking.served.n_users:
        artifacts.append(Artifact("table", "retrain-ranking", "Top-10 on the test split", [
            {"model": label, **{key: round(value, 4) for key, value in report.as_metrics("").items()}}
            for label, report in e.ranking.labelled()]))
    else:
        artifacts.append(Artifact("markdown", "retrain-ranking", "Top-10 on the test split", (
            f"Not measured: no test rating >= {summary.settings.relevant_rating} on the "
            f"{summary.settings.rating_scale} scale.")))
    artifacts += new_data_artifacts(o.new_data)
    artifacts.append(Artifact("markdown", "retrain-decision", "Promotion decision", (
        f"**{model_name} version {d.version}: {'promoted to champion' if d.promoted else 'kept as challenger'}**"
        f"\n\n{d.reason}\n\nMLflow run: [{o.run.run_id}]({o.run.url})")))
    return artifacts


def _champion_on_new(report: NewDataReport) -> list[str]:
    """The champion on the ratings it never saw, beside its own test split's figures (or why not measured)."""
    if report.skipped:
        return [f"champion on new data: not measured ({report.skipped})"]
    c = report.champion_on_new
    if report.not_scored:
        return [f"{report.new_ratings:,} new ratings; {report.not_scored}: not scored on them"]
    if c is None:
        return [f"champion v{report.champion_version}: no rating it never saw (ratings only removed or re-rated)"]
    own = report.champion_test_scores
    test_ndcg = "" if own.ndcg is None else f" ({own.ndcg:.4f} on its test split)"
    fresh = report.champion_on_new_anime
    return [f"champion v{c.version} on {c.n_ratings:,} new ratings: RMSE {c.rmse:.4f} ({own.rmse:.4f} on "
            "its test split)",
            f"NDCG@10 {c.ndcg:.4f}{test_ndcg} for {c.n_users:,} returning users" if c.ndcg is not None
            else "NDCG@10 not measured (no returning user with a relevant new rating)",
            f"{report.new_anime:,} new anime (rated now, not in its data)"
            + (f": RMSE {fresh.rmse:.4f} on their {fresh.n_ratings:,} ratings" if fresh else "")]


def champion_on_new_line(report: NewDataReport) -> str:
    return ", ".join(_champion_on_new(report))


def new_data_lines(report: NewDataReport) -> list[str]:
    """The summary's rows on new data: the champion's scores on it and the drift table."""
    lines = [f"  {'new data' if i == 0 else '':<18}{part}" for i, part in enumerate(_champion_on_new(report))]
    if report.drift is not None:
        title = f"drift from v{report.champion_version}'s data (Evidently)"
        lines += [f"  {title:<40}{'value':>7}  threshold  statistic",
                  *(f"    {m.name:<38}{m.value:7.4f}  {m.threshold:<9g}  {m.statistic}"
                    f"{'  DRIFTED' if m.drifted else ''}" for m in report.drift.measures)]
    return lines


def new_data_artifacts(report: NewDataReport) -> list[Artifact]:
    found = [Artifact("markdown", "retrain-new-data", "The champion on the ratings it never saw",
                      champion_on_new_line(report))]
    if report.drift is not None:
        found.append(Artifact("table", "retrain-drift", f"Drift from champion v{report.champion_version}'s data "
                              "(Evidently report in the MLflow run: drift/report.html)", [
                                  {"measure": m.name, "statistic": m.statistic, "value": round(m.value, 4),
                                   "threshold": m.threshold, "drifted": m.drifted} for m in report.drift.measures]))
    return found


def ingest_lines(raw: RawData, data_dir: Path, loose_inbox_files: list[Path], settings: Settings
                 ) -> tuple[str, str | None]:
    """What was read, and a warning for inbox files that belong to no data set (None if there are none)."""
    read = (f"read {data_dir}: {raw.rows_in:,} rating rows from {', '.join(raw.sources)}, "
            f"{raw.anime.num_rows:,} anime rows")
    if not loose_inbox_files:
        return read, None
    one = len(loose_inbox_files) == 1
    return read, (f"not merged: {', '.join(p.name for p in loose_inbox_files)} in {settings.inbox_root} "
                  f"belong{'s' if one else ''} to no data set; move {'it' if one else 'them'} to "
                  f"{settings.inbox_dir} to merge {'it' if one else 'them'} into data set {settings.dataset_name}")


def ranking_fit_line(fit: RankingFit) -> str:
    judged = (f"chosen on validation (NDCG@10 {fit.chosen.validation.ndcg:.4f})" if fit.chosen.validation.n_users
              else "not walked (no relevant validation rating)")
    return (f"ranking model: lambda {fit.model.l2:.4g} ({fit.chosen.relative_l2:g} x mean interactions per anime) "
            f"{judged} in {fit.fit_seconds:.1f} s")


def evaluation_line(report: EvaluationReport) -> str:
    lists = report.ranking
    ndcg = (f"NDCG@10 {lists.served.ndcg:.4f} (rating model alone {lists.rating_model.ndcg:.4f}, popularity "
            f"{lists.popularity.ndcg:.4f})" if lists.served.n_users else "top-10 not measured (no relevant rating)")
    return (f"test RMSE {report.model.rmse:.4f} (bias baseline {report.bias.rmse:.4f}, global mean "
            f"{report.global_mean.rmse:.4f}); {ndcg}")


def decision_line(decision: PromotionDecision) -> str:
    return f"version {decision.version}: {CHAMPION if decision.promoted else CHALLENGER} ({decision.reason})"
