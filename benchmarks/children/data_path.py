"""Child process of the bench's `data-path` and `scale` parts: ingest → validate → matrix on a data folder with one
validation engine, seconds and RSS per step as JSON.

Run alone so that its peak RSS (VmHWM) is this run's own; the engines are run in separate children of the same
bench run. Imports are done before the clock starts; loading numba's compiled-code cache (first call of each
kernel, ~0.4 s) is inside it, as in a pipeline run.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from pipeline.data.ingest import ingest
from pipeline.environment import use_local_defaults
from pipeline.matrix.utility_matrix import UtilityMatrix, build_utility_matrix
from pipeline.settings import Settings
from pipeline.validation.validate import validate

STEPS = ("ingest", "validate", "matrix")


def memory_gb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process, in GB."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1]) / 2**20


def timed_data_path(data_dir: Path, settings: Settings) -> tuple[UtilityMatrix, dict[str, Any]]:
    """The three stages one after another, each timed (raw and validated tables freed as the flow frees them)."""
    seconds, rss = {}, {}

    def timed(step: str, stage: Callable, *args):
        begun = time.perf_counter()
        result = stage(*args)
        seconds[step] = time.perf_counter() - begun
        rss[step] = memory_gb("VmRSS")
        return result

    raw = timed("ingest", ingest, data_dir)
    rows_in = raw.rows_in
    validated = timed("validate", validate, raw, settings)
    del raw
    counts, data_version, quarantined = validated.counts, validated.data_version, validated.quarantine.num_rows
    matrix = timed("matrix", build_utility_matrix, validated, settings)
    del validated
    return matrix, {"rows_in": rows_in, "seconds": seconds, "rss_gb": rss, "data_version": data_version,
                    "quarantined": quarantined, "accepted": counts.accepted, "unrated": counts.unrated,
                    "split_sizes": matrix.split_sizes}


def shuffled_copy(data_dir: Path, target: Path, seed: int = 5) -> Path:
    """The rating file's rows in random order, with 1 in 100 made a −1 (watched, not rated) and 1 in 10,000 a
    rating off the scale: what a file saved by another tool can look like (no sorted order to lean on, rows to
    leave out). Written once into `target`, reused by later runs."""
    if (target / "anime.csv").exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    table = pacsv.read_csv(data_dir / "rating.csv")
    rng = np.random.default_rng(seed)
    order = rng.permutation(table.num_rows)
    ratings = table["rating"].to_numpy().copy()
    ratings[rng.random(table.num_rows) < 0.01] = -1
    ratings[rng.random(table.num_rows) < 0.0001] = 11
    table = pa.table({"user_id": table["user_id"].take(order), "anime_id": table["anime_id"].take(order),
                      "rating": ratings[order]})
    pacsv.write_csv(table, target / "rating.csv.tmp")
    (target / "rating.csv.tmp").rename(target / "rating.csv")
    (target / "anime.csv").write_bytes((data_dir / "anime.csv").read_bytes())
    return target


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--engine", choices=["arrow", "gx"], default="arrow")
    args = parser.parse_args()
    settings = Settings(data_root=args.work, mlruns_dir=args.work / "mlruns", validation_engine=args.engine)
    import great_expectations  # noqa: F401  (imported by validation anyway; its import is not the data path's time)

    _, result = timed_data_path(args.data, settings)
    print(json.dumps({**result, "engine": args.engine, "peak_rss_gb": memory_gb("VmHWM")}))


if __name__ == "__main__":
    use_local_defaults()
    main()
