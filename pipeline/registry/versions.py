"""Every registered version side by side, by data set: a table for the terminal and a chart logged to MLflow."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline.registry.scores import (
    CHALLENGER,
    CHAMPION,
    MANUAL,
    OTHER_DATASET,
    UNRECORDED_RATING_SCALE,
    tagged_score,
)
from pipeline.registry.store import configure_tracking
from pipeline.settings import Settings


def registry_chart_name(model_name: str) -> str:
    """The file name of `make compare`'s chart of one registered model."""
    return f"{model_name}-versions.png"


def log_registry_chart(settings: Settings, figure: Figure) -> str:
    """Keep the latest chart of the registered model's versions in one standing run of the experiment (a file per
    registered model); return the run's id."""
    experiment_id = configure_tracking(settings)
    client = MlflowClient()
    runs = client.search_runs([experiment_id], filter_string="tags.purpose = 'registry-comparison'", max_results=1)
    run_id = runs[0].info.run_id if runs else client.create_run(
        experiment_id, run_name="registry-comparison", tags={"purpose": "registry-comparison"}).info.run_id
    client.log_figure(run_id, figure, registry_chart_name(settings.registered_model_name))
    client.set_terminated(run_id, "FINISHED")
    return run_id


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
    decision: str  # what the pipeline (or a person) decided when it was registered; its aliases say what it is now
    params: dict[str, str]  # the training run's embedding_dim, epochs (the cap), learning_rate, batch_size
    epochs_run: str  # the epochs the rating model trained (early stopping ends before the cap)
    test_rmse: float
    bias_rmse: float
    ndcg: float  # NDCG@10 of its served lists (nan if not measured)

    @property
    def is_champion(self) -> bool:
        return CHAMPION in self.aliases


COMPARED_PARAMS = ("embedding_dim", "epochs", "learning_rate", "batch_size")
UNKNOWN_DATASET = "(not recorded)"
# the decision tag in words that can't be read as an alias: only the aliases column says which version is champion
REGISTERED_AS = {CHAMPION: "promoted", CHALLENGER: "kept challenger", OTHER_DATASET: "other data set, not compared",
                 MANUAL: "promoted by hand"}


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
            rating_scale=mv.tags.get("rating_scale", UNRECORDED_RATING_SCALE),
            decision=mv.tags.get("decision", "?"),
            params={key: params.get(key, "?") for key in COMPARED_PARAMS},
            epochs_run=f"{run.data.metrics['epochs_run']:.0f}" if run and "epochs_run" in run.data.metrics else "?",
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
              "dim", "epochs (of cap)", "lr", "batch", "at registration")
    table = [header] + [(
        r.version, ",".join(r.aliases) or "-", r.created.strftime("%Y-%m-%d %H:%M"), r.data_version[:8],
        r.split_id[:8], r.rating_scale, f"{r.test_rmse:.4f}", "-" if math.isnan(r.ndcg) else f"{r.ndcg:.4f}",
        f"{r.bias_rmse:.4f}", r.params["embedding_dim"], f"{r.epochs_run} ({r.params['epochs']})",
        r.params["learning_rate"], r.params["batch_size"], REGISTERED_AS.get(r.decision, r.decision)) for r in rows]
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


def versions_chart(name: str, rows: list[VersionRow]) -> Figure:
    """Test RMSE (with the bias baseline) and NDCG@10 per version side by side, one colour per data set, the
    champion outlined."""
    figure = Figure(figsize=(max(8.0, 1.0 * len(rows) + 4), 4.2))
    rmse_axis, ndcg_axis = figure.subplots(1, 2)
    datasets = list(dict.fromkeys(r.dataset for r in rows))
    colours = {dataset: colormaps["tab10"](i % 10) for i, dataset in enumerate(datasets)}
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
    handles = [Rectangle((0, 0), 1, 1, color=colours[d]) for d in datasets]
    handles.append(Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="black", linewidth=2.5))
    figure.legend(handles, [f"data set {d}" for d in datasets] + ["champion"], loc="lower center",
                  ncols=min(len(handles), 4), frameon=False)
    figure.suptitle(f"{name}: registered versions (compare within a data set)")
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    return figure
