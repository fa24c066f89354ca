"""Child process of the bench's `scale` part: the data path and the rating model's whole fit at Kaggle-2020 size,
as JSON.

Run alone so that its peak RSS (VmHWM) is this run's own. The generated data set is kept in the work
folder and reused by later runs (generation is not part of what is measured).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.children.data_path import memory_gb, timed_data_path
from pipeline.data.generate import DEMO_GENERATOR, KAGGLE_2020_LIST_SPEC, KAGGLE_2020_SPEC, generate_demo_dataset
from pipeline.environment import use_local_defaults
from pipeline.models.rating.train import train_model
from pipeline.settings import Settings, TrainingConfig

SPECS = {"kaggle2020": KAGGLE_2020_SPEC,
         "tenth": dataclasses.replace(KAGGLE_2020_SPEC, n_users=31_000, n_ratings=5_700_000)}
GENERATOR_STAMP = "generated-by.json"  # the generator version and spec of a kept data set
LIST_SPECS = {"kaggle2020": KAGGLE_2020_LIST_SPEC,  # --layout kaggle2020: the 2020 data set's files, list included
              "tenth": dataclasses.replace(KAGGLE_2020_LIST_SPEC, n_users=32_500, n_ratings=6_700_000)}


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def generated_data(size: str, work: Path, layout: str = "cooperunion") -> Path:
    """The bench's generated data set of `size` in `layout`: generated into `work` once, reused by later runs while
    the generator and spec that made it are today's (a stamp file says which)."""
    data_dir = work / (size if layout == "cooperunion" else f"{size}-{layout}-layout")
    spec = (SPECS if layout == "cooperunion" else LIST_SPECS)[size]
    stamp, made_by = data_dir / GENERATOR_STAMP, json.dumps([DEMO_GENERATOR, dataclasses.asdict(spec)])
    if not (data_dir / "anime.csv").exists() or not stamp.exists() or stamp.read_text() != made_by:
        generate_demo_dataset(data_dir, spec, layout)
        stamp.write_text(made_by)
    return data_dir


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", choices=sorted(SPECS), default="kaggle2020")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--layout", choices=["cooperunion", "kaggle2020"], default="cooperunion")
    args = parser.parse_args()
    started = time.perf_counter()
    data_dir = generated_data(args.size, args.work, args.layout)
    generate_seconds = time.perf_counter() - started
    settings = Settings(data_root=args.work / f"{args.size}-run", mlruns_dir=args.work / f"{args.size}-run" / "mlruns")
    matrix, data_path = timed_data_path(data_dir, settings)
    seconds, rss = data_path["seconds"], data_path["rss_gb"]
    gc.collect()
    begun = time.perf_counter()
    config = TrainingConfig()
    trained = train_model(matrix, config)
    seconds["train"], rss["train"] = time.perf_counter() - begun, memory_gb("VmRSS")
    rating_model = args.work / f"{args.size}-rating.keras"
    trained.model.save(rating_model)
    print(json.dumps({
        "data_dir": str(data_dir), "n_users": matrix.n_users, "n_anime": matrix.n_anime,
        "rows_in": data_path["rows_in"], "seconds": seconds, "rss_gb": rss, "peak_rss_gb": memory_gb("VmHWM"),
        "trainer": config.method, "step_name": config.step_name, "epochs": trained.epochs_run,
        "best_epoch": trained.best_epoch,
        "ratings_per_s": float(np.median(trained.history["ratings_per_s"])), "parquet_mb": folder_mb(matrix.path),
        "csv_mb": folder_mb(data_dir), "generate_seconds": generate_seconds, "matrix": str(matrix.path),
        "rating_model": str(rating_model),
    }))


if __name__ == "__main__":
    use_local_defaults()
    main()
