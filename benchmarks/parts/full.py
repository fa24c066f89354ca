"""Part `full`: the whole retrain flow on the generated full-scale data, in its own process: time and peak RSS per
stage, the run's scores."""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.report import Table, repository_path
from benchmarks.runs import STAGE_COLUMNS, BenchContext, retrain_child, stage_rows


def full_part(size: str, work: Path) -> Table:
    """The whole retrain flow (`make pipeline DATA=…`) on the generated data set of `size`, in its own process:
    wall time per stage, peak RSS and the run's scores."""
    from benchmarks.children.full_scale import generated_data

    data_dir = generated_data(size, work)
    with tempfile.TemporaryDirectory(prefix="full-", dir=work) as tmp:
        timing, wall = retrain_child(Path(tmp), "--data", str(data_dir))
    scores = timing["scores"]
    table = Table(f"The whole retrain flow at full scale ({size}: {scores['n_users']:,} users × "
                  f"{scores['n_anime']:,} anime, {scores['rows_in']:,} rating rows; {repository_path(data_dir)})",
                  STAGE_COLUMNS, stage_rows(timing, wall))
    table.notes += [
        f"Peak RSS of the run's process: **{timing['peak_rss_gb']:.2f} GB** (the Prefect server is a process of its "
        "own). Like `make pipeline DATA=" + repository_path(data_dir) + "` with a fresh Prefect home, data root and "
        "MLflow store (so the matrix is built, both models trained, evaluated and the version registered).",
        f"Rating model: {scores['trainer']}, {scores['epochs_run']} {scores['step_name']}s (best "
        f"{scores['best_epoch']}) on {scores['train']:,} train ratings; test RMSE {scores['test_rmse']:.4f} (bias "
        f"baseline {scores['baseline_bias_rmse']:.4f}). Lists: "
        f"NDCG@10 {scores['ndcg_at_10']:.4f} (most popular {scores['popularity_ndcg_at_10']:.4f}), coverage "
        f"{scores['catalog_coverage_at_10']:.3f}."]
    return table


def run(context: BenchContext) -> list[Table]:
    return [full_part(context.size, context.work)]
