"""Child process of the bench's `scale` part: validation of the full-scale data in this process, then as tasks on a
local Dask cluster (the flow's DaskTaskRunner, as `make pipeline DASK=local` runs it); seconds of each as JSON."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from benchmarks.children.data_path import memory_gb
from flows.cluster import on_dask  # first: flows/ sets Prefect's environment defaults before Prefect reads them
from flows.retrain import ingest_task, validate_stage
from pipeline.data.ingest import ingest
from pipeline.environment import use_local_defaults
from pipeline.settings import Settings
from pipeline.validation.validate import validate


def main() -> None:
    from prefect import flow

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()
    settings = Settings(data_root=args.work / "data", mlruns_dir=args.work / "mlruns", dask_address="local",
                        dataset_name="bench")

    raw = ingest(args.data)
    begun = time.perf_counter()
    here = validate(raw, settings)
    here_seconds = time.perf_counter() - begun
    rows_in, batches = here.counts.rows_in, len(here.reports[0].gx_result.get("batches", [0]))
    expected = (here.counts, here.data_version, here.quarantine)
    del raw, here

    @flow(name="validate-on-dask")
    def validation_on_dask(data_dir: Path) -> tuple[object, float]:
        raw = ingest_task(data_dir, settings)
        begun = time.perf_counter()  # the cluster is up: it starts with the flow
        return validate_stage(raw, settings), time.perf_counter() - begun

    on_cluster, dask_seconds = on_dask(validation_on_dask, settings)(args.data)
    same = (on_cluster.counts, on_cluster.data_version) == expected[:2] and on_cluster.quarantine.equals(expected[2])
    print(json.dumps({"rows_in": rows_in, "batches": batches, "workers": os.cpu_count(), "here_seconds": here_seconds,
                      "dask_seconds": dask_seconds, "peak_rss_gb": memory_gb("VmHWM"), "same": same}))


if __name__ == "__main__":
    use_local_defaults()
    main()
