"""Part `scale`: at full scale, in child processes: the data path and the rating model's fit, validation on Dask, the
ranking model's fit, serving from the saved bundle."""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.parts.serving import SERVING_COLUMNS
from benchmarks.report import Table, repository_path
from benchmarks.runs import BenchContext, child_json


def scale_part(size: str, work: Path, layout: str = "cooperunion") -> list[Table]:
    """Full scale in child processes, each with its own peak RSS: the data path and the rating model's fit; the
    ranking model's fit; then serving from the saved bundle in a fresh process."""
    result = child_json("benchmarks.children.full_scale", "--size", size, "--work", str(work), "--layout", layout)
    rows_in = result["rows_in"]
    data = Table(f"Full scale ({size}, {layout} layout: {result['n_users']:,} users × {result['n_anime']:,} anime, "
                 f"{rows_in:,} rows in; generated once into {repository_path(result['data_dir'])})",
                 ["step", "seconds", "rows/s", "RSS after, GB"])
    for step in ("ingest", "validate", "matrix"):
        seconds = result["seconds"][step]
        data.rows.append([step, f"{seconds:.1f}", f"{rows_in / seconds:,.0f}", f"{result['rss_gb'][step]:.2f}"])
    total = sum(result["seconds"][step] for step in ("ingest", "validate", "matrix"))
    data.rows.append(["ingest + validate + matrix", f"{total:.1f}", f"{rows_in / total:,.0f}", ""])
    with tempfile.TemporaryDirectory(prefix="dask-validation-", dir=work) as tmp:
        dask = child_json("benchmarks.children.dask_validation", "--data", result["data_dir"], "--work", tmp)
    for label, seconds in ((f"validate, this process again ({dask['batches']} batches one after another)",
                            dask["here_seconds"]),
                           (f"validate on a local Dask cluster ({dask['workers']} worker processes; ratio "
                            f"{dask['dask_seconds'] / dask['here_seconds']:.2f} to the row above; same result: "
                            f"{dask['same']})", dask["dask_seconds"])):
        data.rows.append([label, f"{seconds:.1f}", f"{dask['rows_in'] / seconds:,.0f}", ""])
    data.rows.append([f"rating model: {result['trainer']}, {result['epochs']} {result['step_name']}s (best "
                      f"{result['best_epoch']}); rows/s: median per {result['step_name']}",
                      f"{result['seconds']['train']:.1f}",
                      f"{result['ratings_per_s']:,.0f}", f"{result['rss_gb']['train']:.2f}"])
    ranking = child_json("benchmarks.children.ranking_scale", "--matrix", result["matrix"], "--rating-model",
                         result["rating_model"], "--bundle", str(work / f"{size}-bundle"))
    data.rows.append([f"ranking model fit ({len(ranking['trials'])} λ on validation + the final fit)",
                      f"{ranking['fit_seconds']:.1f}", "", f"peak {ranking['peak_rss_gb']:.2f}"])
    data.notes += [f"Peak RSS of the data path and rating-model run (ingest → validate → matrix → the fit): "
                   f"**{result['peak_rss_gb']:.2f} GB**; of the ranking model's fit (its own process, from the "
                   f"matrix folder): **{ranking['peak_rss_gb']:.2f} GB**. Parquet matrix folder: "
                   f"{result['parquet_mb']:,.0f} MB (CSV in: {result['csv_mb']:,.0f} MB); data generation "
                   + (f"took {result['generate_seconds']:.0f} s (not counted)." if result["generate_seconds"] > 1
                      else "was done by an earlier run (kept in the work folder)."),
                   "Ranking model: validation NDCG@10 per relative λ tried (λ): "
                   + ", ".join(f"{relative:g} ({l2:.4g}) → {ndcg:.4f}" for relative, l2, ndcg in ranking["trials"])
                   + f"; chosen {ranking['chosen_relative_l2']:g}, λ {ranking['fitted_l2']:.4g} in the final fit; "
                   f"{ranking['weights_kept']:,} weights kept."]
    served = child_json("benchmarks.children.serving_latency", ranking["bundle"])
    serving = Table(f"Serving latency at full scale ({size})", SERVING_COLUMNS, [served],
                    ["A fresh process loading the saved bundle (both models) as a server does; lists from the "
                     "ranking model, predicted ratings from the rating model fitted above."])
    return [data, serving]


def run(context: BenchContext) -> list[Table]:
    return scale_part(context.size, context.work, context.layout)
