"""Part `dask`: a rating-model sweep in one process against the same sweep on a local Dask cluster."""

from __future__ import annotations

import os
import time
from pathlib import Path

from benchmarks.report import Table
from benchmarks.runs import BenchContext
from pipeline.settings import Settings

DASK_SPACE = {"learning_rate": [0.001, 0.002], "learning_rate_schedule": ["constant", "CosineDecay"]}


def dask_part(sample: Path, work: Path) -> Table:
    """A rating-model sweep on the sample (four trials of learning rate × schedule) run one trial after another in
    this process, then as tasks on a local Dask cluster (one worker process per core, started by the flow): wall
    time of each, same results."""
    from flows.sweep import sweep, sweep_on_dask

    settings = Settings(data_root=work / "dask" / "data", mlruns_dir=work / "dask" / "mlruns")
    timed = {}
    for label, run in (("one process, trials one after another", sweep), ("local Dask cluster", sweep_on_dask)):
        started = time.perf_counter()
        summary = run(settings=settings, data_dir=sample, space=DASK_SPACE)
        timed[label] = (time.perf_counter() - started, summary)
    (base_seconds, base), (_, other) = timed.values()
    same = ({str(t.changed): t.validation_score for t in base.trials}
            == {str(t.changed): t.validation_score for t in other.trials})
    table = Table(f"Sweep trials on Dask: {len(base.trials)} rating-model trials of `make sweep` on the sample",
                  ["path", "wall s", "ratio vs one process"])
    table.rows += [[label, f"{seconds:.1f}", f"{seconds / base_seconds:.2f}"] for label, (seconds, _) in timed.items()]
    table.notes.append(f"Workers: {os.cpu_count()} (one per core). Wall times include ingest, validation and the "
                       "matrix (the flow's own, the same in both) and, on Dask, starting the cluster and each worker's "
                       f"imports. Validation scores of every trial identical in both paths: {same}; best "
                       f"{base.best.changed} in both: {base.best.changed == other.best.changed}.")
    return table


def run(context: BenchContext) -> list[Table]:
    return [dask_part(context.sample, context.run_dir)]
