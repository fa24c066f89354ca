"""`make bench`: every part's tables against a baseline run in the same process, written to BENCHMARKS.md.

Nothing here is asserted: the numbers are printed and written to the `BENCHMARKS.md` section named after the parts
run, with the machine and the exact command. Options: `python -m benchmarks --help` (--parts, --size of the
generated full-scale data, --layout of the scale part, --sample: the rating set of the sample parts).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from benchmarks.reference_ease import fit_reference_ease, reference_scores
from pipeline.data.ingest import ingest
from pipeline.errors import PipelineInputError
from pipeline.evaluation.evaluate import SEEN_SPLITS, evaluate_ranking
from pipeline.evaluation.metrics import RankingReport, Scores, ranking_report, relevant_pairs, top_n_lists
from pipeline.matrix.utility_matrix import UtilityMatrix, build_utility_matrix
from pipeline.models.ranking.fit import RankingFit, train_ranking_model
from pipeline.models.rating.train import TrainedModel, predict_scaled, train_model
from pipeline.serving.recommend import Recommender
from pipeline.settings import PROJECT_ROOT, Settings, TrainingConfig
from pipeline.validation.validate import validate

PARTS = ("accuracy", "init-schedule", "optimizers", "ranking", "speed", "serving", "stages", "dask", "time-to-model",
         "data-path", "scale", "full")
DEFAULT_PARTS = PARTS[:-1]  # `full` (the whole retrain flow at full scale, the longest) only when named
DEFAULT_SAMPLE = PROJECT_ROOT.parent / "shared" / "data" / "anime-sample"
REPORT = PROJECT_ROOT / "BENCHMARKS.md"


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join("---" for _ in self.columns) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines + ([""] + self.notes if self.notes else []))


def machine() -> str:
    import tensorflow as tf

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu}, {os.cpu_count()} cores, {memory_gb:.0f} GB RAM, {platform.system()} {platform.machine()}, "
            f"Python {platform.python_version()}, TensorFlow {tf.__version__}")


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
    default: TrainedModel  # biased MF by Keras' fit, the default settings
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


def accuracy_part(runs: SampleRuns) -> Table:
    from surprise import SVD, BaselineOnly

    matrix = runs.matrix
    rows = [
        (f"default: {TrainingConfig().method}", test_scores(keras_predictor(runs.default, matrix), matrix),
         runs.default_seconds),
        ("biased MF by ALS along an L2 path (solver='als')", test_scores(keras_predictor(runs.als, matrix), matrix),
         runs.als_seconds),
        ("seed (cosine → Dense sigmoid, BCE, Adam)", test_scores(keras_predictor(runs.seed, matrix), matrix),
         runs.seed_seconds),
    ]
    svd, svd_seconds = fit_surprise(SVD(random_state=0), matrix, ("train",))
    rows.append(("Surprise SVD (defaults)", test_scores(surprise_predictor(svd), matrix), svd_seconds))
    baseline, baseline_seconds = fit_surprise(BaselineOnly(verbose=False), matrix, ("train",))
    rows.append(("Surprise BaselineOnly (defaults)", test_scores(surprise_predictor(baseline), matrix),
                 baseline_seconds))
    svd_all, svd_all_seconds = fit_surprise(SVD(random_state=0), matrix, ("train", "validation"))
    rows.append(("Surprise SVD, fit on train + validation", test_scores(surprise_predictor(svd_all), matrix),
                 svd_all_seconds))
    mean = float(np.mean(matrix.split("train")["rating"].to_numpy()))
    rows.append(("global mean", test_scores(lambda u, a: np.full(len(u), mean), matrix), 0.0))
    reference = rows[3][1].rmse
    sizes = matrix.split_sizes
    return Table(
        f"Accuracy on the anime sample (test split, {sizes['test']:,} ratings; 1–10 scale)",
        ["model", "test RMSE", "MAE", "fit s", "RMSE / SVD"],
        [[name, f"{s.rmse:.4f}", f"{s.mae:.4f}", f"{seconds:.1f}", f"{s.rmse / reference:.3f}"]
         for name, s, seconds in rows],
        [f"Same split for every model: {sizes['train']:,} train / {sizes['validation']:,} validation / "
         f"{sizes['test']:,} test rated rows (seed {runs.settings.split_seed}). Our models fit on train and use "
         "validation only for early stopping (ALS: and its L2 path); Surprise fits on train (and, in one row, on "
         "train + validation).",
         f"Default: best epoch {runs.default.best_epoch} of {runs.default.epochs_run}; ALS: best sweep "
         f"{runs.als.best_epoch} of {runs.als.epochs_run} (L2 {runs.als.history['l2'][runs.als.best_epoch - 1]:.4g}); "
         f"seed: best epoch {runs.seed.best_epoch} of {runs.seed.epochs_run}. Fit times include the first call's "
         "compilation (XLA for the Keras fits; numba's for ALS is cached on disk after the first run)."])


@dataclass(frozen=True)
class ListsProtocol:
    """One judging of top-10 lists: fit on `seen` splits (+ watched rows), judge on `target`'s relevant rows."""

    seen: tuple[str, ...]
    target: str


VALIDATION, TEST = ListsProtocol(("train",), "validation"), ListsProtocol(SEEN_SPLITS, "test")


def judge_lists(runs: SampleRuns, protocol: ListsProtocol, fit_scorer) -> tuple[RankingReport, float]:
    """Fit a method on the protocol's known pairs (`fit_scorer(known, n_users, n_anime)` returns a function of
    user indices → dense scores), judge its top-10 unseen lists; return the report and the fit seconds."""
    matrix, settings = runs.matrix, runs.settings
    known = matrix.interactions(protocol.seen, settings.unrated_value)
    relevant = relevant_pairs(matrix.split(protocol.target), settings.relevance_threshold)
    users = np.unique(relevant["user_index"].to_numpy())
    started = time.perf_counter()
    scores_for = fit_scorer(known, matrix.n_users, matrix.n_anime)
    seconds = time.perf_counter() - started
    top = top_n_lists(scores_for, users, binary_history(known, matrix.n_users, matrix.n_anime))
    return ranking_report(top, users, relevant, matrix.n_anime), seconds


def binary_history(known: pa.Table, n_users: int, n_anime: int) -> sp.csr_matrix:
    return sp.csr_matrix((np.ones(known.num_rows, np.float32), (known["user_index"].to_numpy(),
                                                                 known["anime_index"].to_numpy())),
                         shape=(n_users, n_anime))


def popularity_scorer(runs: SampleRuns):
    def fit(known: pa.Table, n_users: int, n_anime: int):
        rated = np.bincount(runs.matrix.split("train")["anime_index"].to_numpy(), minlength=n_anime)
        return lambda block: np.broadcast_to(rated, (len(block), n_anime))
    return fit


def reference_ease_scorer(l2: float):
    def fit(known: pa.Table, n_users: int, n_anime: int):
        history = binary_history(known, n_users, n_anime)
        return reference_scores(history, fit_reference_ease(history, l2))
    return fit


def implicit_als_scorer(factors: int = 128, alpha: float = 10.0, regularization: float = 0.05, iterations: int = 15):
    def fit(known: pa.Table, n_users: int, n_anime: int):
        from implicit.als import AlternatingLeastSquares

        model = AlternatingLeastSquares(factors=factors, alpha=alpha, regularization=regularization,
                                        iterations=iterations, random_state=0)
        model.fit(binary_history(known, n_users, n_anime), show_progress=False)
        user_factors, item_factors = np.asarray(model.user_factors), np.asarray(model.item_factors)
        return lambda block: user_factors[block] @ item_factors.T
    return fit


def inverse_part(runs: SampleRuns) -> Table:
    """The ranking model's solve on the sample's XᵀX + λI: the in-place LAPACK inverse against `tf.linalg.inv`, both
    judged against numpy's float64 inverse."""
    import tensorflow as tf

    from pipeline.models.ranking.ease import InteractionWeights, gram_matrix, invert_spd_in_place

    settings, matrix = runs.settings, runs.matrix
    weights = InteractionWeights.of_config(settings.ranking, matrix.scale.minimum, matrix.scale.maximum,
                                           settings.unrated_value)
    gram = gram_matrix(weights.matrix(matrix.interactions(SEEN_SPLITS, settings.unrated_value), matrix.n_users,
                                      matrix.n_anime))
    gram[np.diag_indices_from(gram)] += runs.ranking.model.l2
    exact = np.linalg.inv(gram.astype(np.float64))
    started = time.perf_counter()
    reference = tf.linalg.inv(gram).numpy()
    reference_seconds = time.perf_counter() - started
    in_place = gram.copy()
    started = time.perf_counter()
    invert_spd_in_place(in_place)
    seconds = time.perf_counter() - started

    def error(inverse: np.ndarray) -> str:
        return f"{np.abs(inverse - exact).max() / np.abs(exact).max():.1e}"

    return Table(f"Inverse of XᵀX + λI on the anime sample ({matrix.n_anime:,}², float32)",
                 ["method", "seconds", "vs tf.linalg.inv", "largest error (of the largest entry; numpy float64)"],
                 [["`tf.linalg.inv`", f"{reference_seconds:.1f}", "1.00", error(reference)],
                  ["in-place Cholesky inverse (LAPACK potrf + potri; the ranking model's)", f"{seconds:.1f}",
                   f"{seconds / reference_seconds:.2f}", error(in_place)]])


def ranking_part(runs: SampleRuns) -> Table:
    """Top-10 lists on the anime sample, one split for all: the served recommender, the rating model ranked
    alone, popularity, a reference EASE and implicit's ALS; validation (fit on train) and test (fit on train +
    validation), every method also seeing the watched-but-unrated rows."""
    served = evaluate_ranking(Recommender.from_matrix(runs.default.model, runs.ranking.model, runs.matrix,
                                                      runs.settings.unrated_value, splits=SEEN_SPLITS),
                              runs.matrix, runs.settings.relevance_threshold)
    chosen = runs.ranking.chosen
    rows = [("served: ranking model (EASE, rating-weighted, pruned; λ walked on validation)",
             chosen.validation.ndcg, served.served, runs.ranking.fit_seconds),
            ("rating model alone (biased MF, ranked by predicted rating)", None, served.rating_model,
             runs.default_seconds)]
    for name, scorer in (("popularity (most rated in train)", popularity_scorer(runs)),
                         ("reference EASE (numpy, binary, λ = 200, dense)", reference_ease_scorer(200.0)),
                         ("implicit ALS (128 factors, α 10, reg 0.05, 15 it.)", implicit_als_scorer())):
        validation, _ = judge_lists(runs, VALIDATION, scorer)
        test, seconds = judge_lists(runs, TEST, scorer)
        rows.append((name, validation.ndcg, test, seconds if "popularity" not in name else 0.0))
    reference = rows[3][2].ndcg
    table = Table(f"Top-10 lists on the anime sample (test split: {served.served.n_users:,} users with a rating ≥ 8)",
                  ["model", "val NDCG@10", "P@10", "R@10", "NDCG@10", "coverage", "personalization",
                   "NDCG / ref. EASE", "fit s"])
    for name, val_ndcg, r, seconds in rows:
        table.rows.append([name, "–" if val_ndcg is None else f"{val_ndcg:.4f}", f"{r.precision:.4f}",
                           f"{r.recall:.4f}", f"{r.ndcg:.4f}", f"{r.coverage:.3f}", f"{r.personalization:.3f}",
                           f"{r.ndcg / reference:.3f}", f"{seconds:.1f}"])
    table.notes += [
        "Relevant = a held-out rating ≥ 8; candidates = anime the user has not rated or watched in the splits the "
        "model saw. val NDCG@10: fitted on train (+ watched rows), judged on validation; the other columns: "
        "fitted on train + validation (+ watched rows), judged on test.",
        f"Served ranking model: relative λ tried {', '.join(f'{t.relative_l2:g}' for t in runs.ranking.trials)} → "
        f"{chosen.relative_l2:g} (λ {runs.ranking.model.l2:.4g} in the final fit); "
        f"its fit time includes the λ walk ({len(runs.ranking.trials)} fits + the final one). Rating model: fit "
        "time of its training."]
    return table


def speed_part(runs: SampleRuns) -> Table:
    """Ratings per second of the training pass, per epoch or ALS sweep (the first includes tracing/compiling)."""
    def median_rate(trained: TrainedModel) -> float:
        rates = trained.history["ratings_per_s"]
        return float(np.median(rates[1:] if len(rates) > 1 else rates))

    seed_rate = median_rate(runs.seed)
    table = Table(f"Training speed, 128-dim model, anime sample ({runs.matrix.split_sizes['train']:,} train ratings)",
                  ["configuration", "batch", "median ratings/s per epoch", "vs seed"])
    table.rows.append(["seed: Keras fit, Keras' dense Adam", str(TrainingConfig.seed_cosine().batch_size),
                       f"{seed_rate:,.0f}", "1.00"])
    default = TrainingConfig()
    for batch_size in (4096, default.batch_size, 65536):
        trained = runs.default if batch_size == default.batch_size else train_model(
            runs.matrix, default.model_copy(update={"batch_size": batch_size, "epochs": 3}))
        rate = median_rate(trained)
        table.rows.append([f"biased MF: Keras fit, sparse {default.optimizer.name} (XLA step)"
                           + (" (default)" if batch_size == default.batch_size else ""), str(batch_size),
                           f"{rate:,.0f}", f"{rate / seed_rate:.2f}"])
    rate = median_rate(runs.als)
    table.rows.append(["biased MF by ALS (one sweep: every user's row, then every anime's)", "–",
                       f"{rate:,.0f}", f"{rate / seed_rate:.2f}"])
    table.notes.append("ratings/s = train rows / time of the epoch's training pass or the ALS sweep (validation "
                       "excluded), median over epochs after the first. An ALS sweep does more per rating than an "
                       "epoch (3 conjugate-gradient steps per row and side) and needs other numbers of them.")
    return table


def latency_rows(recommender: Recommender, label: str, n_requests: int = 500,
                 batch_users: int = 20_000) -> list[list[str]]:
    """p50/p99 of top-10 for one user (the full `recommend` call and the bare scoring), and batch users/s."""
    rng = np.random.default_rng(0)
    users = rng.choice(len(recommender.user_ids), size=n_requests)
    full, bare = [], []
    recommender.recommend(int(recommender.user_ids[users[0]]), 10)  # warm caches (known-pairs index)
    for index in users:
        started = time.perf_counter()
        recommender.recommend(int(recommender.user_ids[index]), 10)
        full.append(time.perf_counter() - started)
        started = time.perf_counter()
        recommender.top_n_batch(np.array([index]), 10)
        bare.append(time.perf_counter() - started)
    block = rng.choice(len(recommender.user_ids), size=min(batch_users, len(recommender.user_ids)), replace=False)
    started = time.perf_counter()
    recommender.top_n_batch(block, 10)
    rate = len(block) / (time.perf_counter() - started)

    def ms(values: list[float], q: int) -> str:
        return f"{np.percentile(values, q) * 1000:.2f}"

    return [[label, f"{len(recommender.user_ids):,} × {len(recommender.anime_ids):,}", ms(bare, 50), ms(bare, 99),
             ms(full, 50), ms(full, 99), f"{rate:,.0f}"]]


SERVING_COLUMNS = ["model", "users × anime", "top-10 p50 ms", "top-10 p99 ms", "recommend() p50 ms",
                   "recommend() p99 ms", "batch users/s"]


def serving_part(runs: SampleRuns) -> Table:
    return Table("Serving latency in process (one user, all anime scored, seen anime excluded)", SERVING_COLUMNS,
                 latency_rows(runs.served(), "served (ranking model + predicted ratings), anime sample"),
                 ["top-10 = `Recommender.top_n_batch([user], 10)` (ranking model scores); recommend() adds id "
                  "lookup, the predicted ratings, the reasons and the DataFrame with names and genres; batch = "
                  "`top_n_batch` over 20,000 users in chunks of 1,024."])


def retrain_child(work: Path, *args: str) -> tuple[dict, float]:
    """`benchmarks.stage_timing` (the retrain flow in its own process) with Prefect, data and MLflow under `work`:
    its JSON and its wall time."""
    env = os.environ | {"PREFECT_HOME": str(work / "prefect"), "ANIMEREC_DATA_ROOT": str(work / "data"),
                        "ANIMEREC_MLRUNS_DIR": str(work / "mlruns")}
    Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    child = subprocess.run([sys.executable, "-m", "benchmarks.stage_timing", *args], env=env, capture_output=True,
                           text=True, cwd=PROJECT_ROOT)
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


def full_part(size: str, work: Path) -> Table:
    """The whole retrain flow (`make pipeline DATA=…`) on the generated data set of `size`, in its own process:
    wall time per stage, peak RSS and the run's scores."""
    from benchmarks.full_scale import generated_data

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


def generated_matrix(size: str, work: Path) -> UtilityMatrix:
    """The bench's generated data set of `size` (shared with the scale part) as a matrix."""
    from benchmarks.full_scale import generated_data

    settings = Settings(data_root=work / f"{size}-time-to-model")
    return build_utility_matrix(validate(ingest(generated_data(size, work)), settings), settings)


def time_to_model_part(sample: Path, run_dir: Path, work: Path) -> Table:
    """The default rating model's fit (Keras; early stopping included) and ALS's against Surprise SVD's on the same
    train split, at the sample's size (fixed costs such as XLA compilation weigh most) and at a generated tenth of
    Kaggle 2020."""
    from surprise import SVD

    table = Table("Time to a rating model: the default (biased MF by Keras' fit) and ALS against Surprise SVD "
                  "(defaults), same split",
                  ["data", "train ratings", "model", "fit s", "epochs (kept)", "test RMSE", "SVD: fit s",
                   "SVD: test RMSE", "fit time / SVD"])
    for label, matrix in (("anime sample", build_sample_matrix(sample, run_dir)[0]),
                          ("generated, tenth of Kaggle 2020", generated_matrix("tenth", work))):
        svd, svd_seconds = fit_surprise(SVD(random_state=0), matrix, ("train",))
        svd_rmse = test_scores(surprise_predictor(svd), matrix).rmse
        for name, config in (("default (Keras)", TrainingConfig()), ("ALS", ALS)):
            ours, ours_seconds = fit_keras(matrix, config)
            table.rows.append([label if name.startswith("default") else "", f"{matrix.split_sizes['train']:,}", name,
                               f"{ours_seconds:.1f}", f"{ours.epochs_run} ({ours.best_epoch})",
                               f"{test_scores(keras_predictor(ours, matrix), matrix).rmse:.4f}",
                               f"{svd_seconds:.1f}", f"{svd_rmse:.4f}", f"{ours_seconds / svd_seconds:.2f}"])
    table.notes.append("Fit times: our `train_model` call (building the Keras model, every epoch or ALS sweep and its "
                       "validation pass, XLA's compilation; numba's compiled ALS loaded from its disk cache); "
                       "Surprise's `fit` (building its trainset not counted). Epochs (kept): epochs or ALS sweeps run, "
                       "and the one whose weights were kept. Goal: the default ≤ 1.5× SVD at the tenth "
                       "(1.0× the aim).")
    return table


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


def child_json(module: str, *args: str) -> dict:
    """Run a bench child process (its own peak RSS) and return the JSON on its last output line."""
    child = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=PROJECT_ROOT)
    if child.returncode:
        raise RuntimeError(f"{module} failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def repository_path(path: str | Path) -> str:
    """A path as BENCHMARKS.md shows it: relative to the repository when inside it (not this machine's layout)."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(PROJECT_ROOT)) if resolved.is_relative_to(PROJECT_ROOT) else str(path)


def data_path_part(size: str, work: Path) -> Table:
    """Ingest → validate → matrix at full scale with the Arrow engine and with GX's own (the reference), each in its
    own child process of this run: on the generated files (sorted by user, every row a rating) and on a shuffled
    copy with unrated and off-scale rows (no order to lean on, rows to leave out)."""
    from benchmarks.data_path import STEPS, shuffled_copy
    from benchmarks.full_scale import generated_data

    generated = generated_data(size, work)
    table = Table(f"Data path at full scale ({size}): GX's pandas engine (the default) against the Arrow engine "
                  "(`validation_engine = \"arrow\"`)",
                  ["data", "step", "Arrow, s", "rows/s", "GX, s", "rows/s", "GX / Arrow"])
    for label, folder in (("generated: sorted by user, all ratings", generated),
                          ("shuffled copy, 1% unrated, 0.01% off the scale", shuffled_copy(generated,
                                                                                          work / f"{size}-shuffled"))):
        with tempfile.TemporaryDirectory(prefix="data-path-", dir=work) as tmp:
            runs = {engine: child_json("benchmarks.data_path", "--data", str(folder), "--work", f"{tmp}/{engine}",
                                       "--engine", engine) for engine in ("arrow", "gx")}
        for step in (*STEPS, "ingest + validate + matrix"):
            seconds = {engine: sum(run["seconds"][part] for part in STEPS) if step not in STEPS
                       else run["seconds"][step] for engine, run in runs.items()}
            rows_in = runs["arrow"]["rows_in"]
            table.rows.append([label if step == STEPS[0] else "", step, f"{seconds['arrow']:.1f}",
                               f"{rows_in / seconds['arrow']:,.0f}", f"{seconds['gx']:.1f}",
                               f"{rows_in / seconds['gx']:,.0f}", f"{seconds['gx'] / seconds['arrow']:.2f}"])
        same = all(runs["arrow"][key] == runs["gx"][key]
                   for key in ("data_version", "accepted", "unrated", "quarantined", "split_sizes"))
        table.notes.append(f"{label}: {rows_in:,} rows in, {runs['arrow']['accepted']:,} accepted, "
                           f"{runs['arrow']['unrated']:,} unrated, {runs['arrow']['quarantined']:,} quarantined; peak "
                           f"RSS Arrow {runs['arrow']['peak_rss_gb']:.2f} GB, GX {runs['gx']['peak_rss_gb']:.2f} GB; "
                           f"same data version, counts and splits from both engines: {same}.")
    table.notes.append("Each engine in its own child process (its own peak RSS), one after the other on the same "
                       "files; imports before the clock, numba's compiled-code cache loaded inside it. Goal: "
                       "≥ 3,000,000 rows/s through ingest + validate + matrix at 57M rows, peak RSS ≤ 8 GB.")
    return table


def scale_part(size: str, work: Path, layout: str = "cooperunion") -> list[Table]:
    """Full scale in child processes, each with its own peak RSS: the data path and the rating model's fit; the
    ranking model's fit; then serving from the saved bundle in a fresh process."""
    result = child_json("benchmarks.full_scale", "--size", size, "--work", str(work), "--layout", layout)
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
        dask = child_json("benchmarks.dask_validation", "--data", result["data_dir"], "--work", tmp)
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
    ranking = child_json("benchmarks.ranking_scale", "--matrix", result["matrix"], "--rating-model",
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
    served = child_json("benchmarks.serving_latency", ranking["bundle"])
    serving = Table(f"Serving latency at full scale ({size})", SERVING_COLUMNS, [served],
                    ["A fresh process loading the saved bundle (both models) as a server does; lists from the "
                     "ranking model, predicted ratings from the rating model fitted above."])
    return [data, serving]


def write_report(title: str, command: str, tables: list[Table]) -> None:
    """Replace (or append) this run's section of BENCHMARKS.md."""
    section = "\n\n".join([f"## {title}", f"Machine: {machine()}.", f"Command: `{command}` "
                           f"({time.strftime('%Y-%m-%d')}).", *[t.markdown() for t in tables]]) + "\n"
    text = REPORT.read_text() if REPORT.exists() else (
        "# Benchmarks\n\nWritten by `make bench` (see `.venv/bin/python -m benchmarks --help`). Each section is "
        "replaced by the next run of the same parts.\n")
    head, marker, rest = text.partition(f"## {title}\n")
    if marker:
        following = rest.find("\n## ")
        text = head + section + (rest[following + 1:] if following >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    REPORT.write_text(text)


def run_benchmarks(parts: list[str], size: str = "kaggle2020", layout: str = "cooperunion",
                   sample: Path = DEFAULT_SAMPLE, work: Path = PROJECT_ROOT / "data" / "bench") -> int:
    """Run the named parts (`animerec bench`), print their tables and replace their sections of BENCHMARKS.md.
    `size`/`layout`: the scale part's generated data; `work`: where generated data and matrices stay between runs."""
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise PipelineInputError(f"unknown bench part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    tables: list[Table] = []
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="run-", dir=work) as tmp:
        run_dir = Path(tmp)
        if {"accuracy", "init-schedule", "optimizers", "ranking", "speed", "serving"} & set(parts):
            from benchmarks.training_grid import init_schedule_part, optimizers_part

            runs = train_sample_models(sample, run_dir)
            tables += [part(runs) for name, part in (("accuracy", accuracy_part), ("init-schedule", init_schedule_part),
                                                     ("optimizers", optimizers_part), ("ranking", ranking_part),
                                                     ("ranking", inverse_part), ("speed", speed_part),
                                                     ("serving", serving_part))
                       if name in parts]
        if "stages" in parts:
            tables.append(stages_part(run_dir))
        if "dask" in parts:
            tables.append(dask_part(sample, run_dir))
        if "time-to-model" in parts:
            tables.append(time_to_model_part(sample, run_dir, work))
    if "data-path" in parts:
        tables.append(data_path_part(size, work))
    if "scale" in parts:
        tables += scale_part(size, work, layout)
    if "full" in parts:
        tables.append(full_part(size, work))
    for table in tables:
        print(table.markdown(), end="\n\n")
    command = "make bench" + (f" PARTS={','.join(parts)}" if parts != list(DEFAULT_PARTS) else "") + (
        f" SIZE={size}" if size != "kaggle2020" and {"data-path", "scale", "full"} & set(parts) else "") + (
        f" LAYOUT={layout}" if layout != "cooperunion" and "scale" in parts else "")
    layout_note = f", {layout} layout" if layout != "cooperunion" else ""
    write_report(f"Parts: {', '.join(parts)}" + (f" (size {size}{layout_note})"
                                                 if {"data-path", "scale", "full"} & set(parts) else ""), command,
                 tables)
    print(f"written to {REPORT.name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The bench's command line (`python -m benchmarks`): the options, then the parts."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(DEFAULT_PARTS),
                        help=f"comma-separated subset of {', '.join(DEFAULT_PARTS)} (all of these by default), and "
                        "full (the whole retrain flow at --size)")
    parser.add_argument("--size", choices=["kaggle2020", "tenth"], default="kaggle2020",
                        help="size of the generated data of the data-path, scale and full parts")
    parser.add_argument("--layout", choices=["cooperunion", "kaggle2020"], default="cooperunion",
                        help="file layout of the scale part's generated data")
    parser.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE,
                        help="the rating set of the sample parts (default: the shared anime sample)")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    try:
        return run_benchmarks(parts, args.size, args.layout, args.sample)
    except PipelineInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
