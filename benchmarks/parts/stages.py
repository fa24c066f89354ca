"""Part `stages`: `make pipeline` on the built-in demo data, time per stage and Prefect's share."""

from __future__ import annotations

from pathlib import Path

from benchmarks.report import Table
from benchmarks.runs import STAGE_COLUMNS, BenchContext, retrain_child, stage_rows


def stages_part(work: Path) -> Table:
    """`make pipeline` on the built-in demo data, in child processes: time per task and Prefect's share.

    Run twice on one PREFECT_HOME: the table is the second run (an existing Prefect database, as on any
    run after the first); the first run's total is noted.
    """
    walls, timing = [], {}
    for _ in range(2):
        timing, wall = retrain_child(work / "stages")
        walls.append(wall)
    table = Table("`make pipeline` on the built-in demo data: time per stage", STAGE_COLUMNS,
                  stage_rows(timing, walls[-1]))
    table.notes.append("Task times are Prefect's own task-run durations; Prefect's share is the flow call's wall "
                       "time minus its tasks. Second of two runs on one PREFECT_HOME (the first, which also "
                       f"creates Prefect's database, took {walls[0]:.1f} s).")
    return table


def run(context: BenchContext) -> list[Table]:
    return [stages_part(context.run_dir)]
