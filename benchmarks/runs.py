"""What the parts share: the rating models trained once on the sample, fits timed, test scores, the generated data sets
as matrices, and child processes run for their own peak RSS."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.ingest import ingest
from pipeline.matrix.utility_matrix import UtilityMatrix, build_utility_matrix
from pipeline.metrics import Scores
from pipeline.models.ranking.fit import RankingFit, train_ranking_model
from pipeline.models.rating.train import TrainedModel, predict_scaled, train_model
from pipeline.serving.recommend import Recommender
from pipeline.settings import PROJECT_ROOT, Settings, TrainingConfig
from pipeline.validation.validate import validate

DEFAULT_SAMPLE = PROJECT_ROOT.parent / "shared" / "data" / "anime-sample"


def build_sample_matrix(sample: Path, work: Path) -> tuple[UtilityMatrix, Settings]:
    settings = Settings(data_root=work / "sample", mlruns_dir=work / "mlruns")
    return build_utility_matrix(validate(ingest(sample), settings), settings), settings


def test_scores(predict, matrix: UtilityMatrix) -> Scores:
    """RMSE/MAE on the 1–10 scale over the test split; `predict(users, anime)` gives ratings."""
    test = matrix.split("test")
    return Scores.of(test["rating"].to_numpy(), predict(test["user_index"].to_numpy(), test["anime_index"].to_numpy()))


def keras_predictor(trained: TrainedModel, matrix: UtilityMatrix):
    def predict(users: np.ndarray, anime: np.ndarray) -> np.ndarray:
        return matrix.scale.unscale(predict_scaled(trained.model, users, anime))
    return predict


def fit_keras(matrix: UtilityMatrix, config: TrainingConfig) -> tuple[TrainedModel, float]:
    started = time.perf_counter()
    trained = train_model(matrix, config)
    return trained, time.perf_counter() - started


def fit_surprise(algorithm, matrix: UtilityMatrix, splits: tuple[str, ...]) -> tuple[object, float]:
    import pandas as pd
    from surprise import Dataset, Reader

    frame = pd.concat([matrix.split(name).select(["user_index", "anime_index", "rating"]).to_pandas()
                       for name in splits])
    reader = Reader(rating_scale=(matrix.scale.minimum, matrix.scale.maximum))
    trainset = Dataset.load_from_df(frame, reader).build_full_trainset()
    started = time.perf_counter()
    algorithm.fit(trainset)
    return algorithm, time.perf_counter() - started


def surprise_predictor(algorithm):
    def predict(users: np.ndarray, anime: np.ndarray) -> np.ndarray:
        return np.array([algorithm.predict(int(u), int(a)).est for u, a in zip(users, anime, strict=True)])
    return predict


@dataclass
class SampleRuns:
    """Models trained on the sample once, shared by the accuracy, speed and serving parts."""

    matrix: UtilityMatrix
    settings: Settings
    seed: TrainedModel
    seed_seconds: float
    default: TrainedModel  # the default rating model (Keras' fit, the default settings)
    default_seconds: float
    als: TrainedModel  # the biased model by its other solver
    als_seconds: float
    ranking: RankingFit

    def served(self) -> Recommender:
        return Recommender.from_matrix(self.default.model, self.ranking.model, self.matrix, self.settings.unrated_value)


ALS = TrainingConfig(solver="als")


def train_sample_models(sample: Path, work: Path) -> SampleRuns:
    matrix, settings = build_sample_matrix(sample, work)
    seed, seed_seconds = fit_keras(matrix, TrainingConfig.seed_cosine())
    default, default_seconds = fit_keras(matrix, TrainingConfig())
    als, als_seconds = fit_keras(matrix, ALS)
    ranking = train_ranking_model(matrix, settings.ranking, settings.unrated_value, settings.relevance_threshold)
    return SampleRuns(matrix, settings, seed, seed_seconds, default, default_seconds, als, als_seconds, ranking)


def retrain_child(work: Path, *args: str) -> tuple[dict, float]:
    """`benchmarks.children.stage_timing` (the retrain flow in its own process) with Prefect, data and MLflow under
    `work`: its JSON and its wall time."""
    env = os.environ | {"PREFECT_HOME": str(work / "prefect"), "ANIMEREC_DATA_ROOT": str(work / "data"),
                        "ANIMEREC_MLRUNS_DIR": str(work / "mlruns")}
    Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    child = subprocess.run([sys.executable, "-m", "benchmarks.children.stage_timing", *args], env=env,
                           capture_output=True, text=True, cwd=PROJECT_ROOT)
    wall = time.perf_counter() - started
    if child.returncode:
        raise RuntimeError(f"retrain in a child process failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1]), wall


STAGE_COLUMNS = ["stage", "seconds", "share of the run", "peak RSS during it, GB", "RSS at its end, GB"]


def stage_rows(timing: dict, wall: float) -> list[list[str]]:
    def gb(value: float | None) -> str:
        return "" if value is None else f"{value:.2f}"

    rows = [[name, f"{seconds:.1f}", f"{seconds / wall:.1%}", gb(peak), gb(end)]
            for name, seconds, peak, end in timing["tasks"]]
    prefect = timing["flow_seconds"] - sum(task[1] for task in timing["tasks"])
    startup = wall - timing["flow_seconds"]
    return rows + [["Prefect (local server start, orchestration, task bookkeeping)", f"{prefect:.1f}",
                    f"{prefect / wall:.1%}", "", ""],
                   ["process start and imports", f"{startup:.1f}", f"{startup / wall:.1%}", "", ""],
                   ["total (wall, like `time make pipeline`)", f"{wall:.1f}", "100%",
                    f"{timing['peak_rss_gb']:.2f}", ""]]


def generated_matrix(size: str, work: Path) -> UtilityMatrix:
    """The bench's generated data set of `size` (shared with the scale part) as a matrix."""
    from benchmarks.children.full_scale import generated_data

    settings = Settings(data_root=work / f"{size}-time-to-model")
    return build_utility_matrix(validate(ingest(generated_data(size, work)), settings), settings)


def child_json(module: str, *args: str) -> dict:
    """Run a bench child process (its own peak RSS) and return the JSON on its last output line."""
    child = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=PROJECT_ROOT)
    if child.returncode:
        raise RuntimeError(f"{module} failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


@dataclass
class BenchContext:
    """What a part may use: the sample's rating set, the work folder (generated data kept between runs), this run's
    temporary folder, the size and layout of the generated full-scale data; the sample's models, trained once."""

    sample: Path
    work: Path
    run_dir: Path
    size: str = "kaggle2020"
    layout: str = "cooperunion"

    @functools.cached_property
    def runs(self) -> SampleRuns:
        return train_sample_models(self.sample, self.run_dir)
