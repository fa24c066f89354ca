"""One settings object for every path and hyperparameter of the pipeline."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
APP_MODEL_VARIABLE = "ANIMEREC_APP_MODEL"  # the version each worker of `animerec app --workers N` serves


class KerasPart(BaseModel):
    """A Keras building block named in the settings: the name Keras knows it by and its arguments.

    Written as a name (`"Adam"`) or as `{"name": "CosineDecay", "args": {"warmup_epochs": 1}}` (in the environment:
    `ANIMEREC_TRAINING__INITIALIZER='{"name": "RandomNormal", "args": {"stddev": 0.02}}'`)."""

    model_config = ConfigDict(frozen=True)

    name: str
    args: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    def __str__(self) -> str:
        return self.name + (f"({', '.join(f'{k}={v}' for k, v in self.args.items())})" if self.args else "")

    __repr__ = __str__  # as it reads, in sweep trial names and logs


class TrainingConfig(BaseModel):
    """Hyperparameters of the rating model; `TrainingConfig.seed_cosine()` is the seed model, kept for comparison.

    - `feature_mf` (default): `biased_mf` whose anime vector and bias add a feature tower's output (genres, type,
      episodes, members, …) to the anime's ID part, trained with ID dropout: it also scores anime nobody rated yet
      (models/rating/feature_model.py).
    - `biased_mf`: user and anime biases + dot product of embeddings, squared error on the [0, 1] scale
      with L2 per rating on the rows it touches. `solver="keras"` (default) trains it with Keras' `model.fit`: the
      `optimizer`'s steps update only the embedding rows a batch touches (models/rating/optimizers.py), from the
      `initializer`, at the `learning_rate` shaped by `learning_rate_schedule`. `solver="als"` fits it by
      alternating least squares along an L2 path chosen on validation (models/rating/als.py): the fast CPU option.
    - `seed_cosine`: cosine of the embeddings → Dense(1, sigmoid), binary cross-entropy, Keras Adam.

    The defaults are the best on validation of `make bench`'s tables (BENCHMARKS.md): the initializer ×
    learning-rate table, and the cold-start part for the architecture and its ID dropout.
    """

    architecture: Literal["feature_mf", "biased_mf", "seed_cosine"] = "feature_mf"
    solver: Literal["keras", "als"] = "keras"  # "als": biased_mf by ALS (no feature tower), whatever the architecture
    embedding_dim: int = Field(128, ge=1)
    batch_size: int = Field(16384, ge=1)
    epochs: int = Field(40, ge=1)  # at most (ALS: sweeps in all); early stopping on validation RMSE decides
    # Keras fit: its length, as the optimizer updates the average user's row gets. A data set with more ratings per
    # user needs fewer epochs; schedules decay over it.
    updates_per_user: int = Field(500, ge=1)
    # The optimizer (models/rating/optimizers.py): "Adam", "AdamW" or "Adagrad" with Keras' arguments of that class.
    optimizer: KerasPart = KerasPart(name="Adam")
    learning_rate: float = Field(0.002, gt=0)
    # How the learning rate moves (models/rating/learning_rate.py): "constant", a keras.optimizers.schedules class
    # (ExponentialDecay, CosineDecay, PiecewiseConstantDecay, …; `*_epochs` arguments are counted in epochs), or
    # "ReduceLROnPlateau" (the Keras callback, on validation RMSE).
    learning_rate_schedule: KerasPart = KerasPart(name="PiecewiseConstantDecay", args={
        "boundary_fractions": [0.5, 0.75], "factors": [1, 0.3, 0.1]})
    # Where the embeddings start (pipeline/models/rating/initializers.py): any keras.initializers class by name with its
    # arguments, or "als": a warm start from a short ALS solve (`sweeps`, 5 by default).
    initializer: KerasPart = KerasPart(name="GlorotUniform")
    # feature_mf: the anime's vector and bias are its ID part plus a feature tower's output (one ReLU layer of
    # `tower_units`); the ID part is left out of `id_dropout` of each batch's ratings, so the tower learns alone too
    # (chosen on validation with anime held out: make bench PARTS=cold-start).
    tower_units: int = Field(128, ge=1)
    tower_output_scale: float = Field(0.1, gt=0)  # the tower's pace beside the embedding rows' (feature_model.py)
    id_dropout: float = Field(0.1, ge=0, lt=1)
    feature_min_anime: int = Field(3, ge=1)  # a genre, studio, type, … named by fewer anime is no feature
    # biased_mf: per-rating L2 on the embedding and bias rows it touches (ALS: where its path starts)
    l2: float = Field(0.02, ge=0)
    l2_step: float = Field(2 ** 0.5, gt=1)  # ALS: λ is divided by this while validation RMSE improves
    cg_steps: int = Field(3, ge=1)  # ALS: conjugate-gradient steps per row and half-sweep (warm-started)
    # Smallest relative improvement of validation RMSE that counts: early stopping's patience and ALS's path
    min_improvement: float = Field(3e-5, ge=0)
    early_stopping_patience: int = Field(3, ge=0)
    # Keras fit: "all" trains data-parallel (tf.distribute.MirroredStrategy) when several GPUs, or logical CPU
    # devices, are visible; "one" keeps it on one (models/rating/devices.py)
    devices: Literal["all", "one"] = "all"
    seed: int = 42

    @property
    def method(self) -> str:
        """What the rating model is and how it is fitted, as reports and registry tags name it."""
        if self.architecture == "seed_cosine":
            return "seed_cosine by Keras (Adam)"
        if self.by_als:
            return "biased_mf by ALS"
        tower = (f"; feature tower {self.tower_units}, ID dropout {self.id_dropout:g}"
                 if self.architecture == "feature_mf" else "")
        return (f"{self.architecture} by Keras fit ({self.optimizer} at {self.learning_rate:g}, "
                f"{self.learning_rate_schedule}; initializer {self.initializer}{tower})")

    @property
    def reads_features(self) -> bool:
        """Whether the fitted model has the feature tower (feature_mf fitted by Keras)."""
        return self.architecture == "feature_mf" and not self.by_als

    @property
    def by_als(self) -> bool:
        """Whether ALS fits it: the biased model (ALS solves ID factors; a feature tower is Keras' to fit)."""
        return self.architecture != "seed_cosine" and self.solver == "als"

    @property
    def step_name(self) -> str:
        """What one pass of training is called in reports: an ALS sweep, or an epoch."""
        return "sweep" if self.by_als else "epoch"

    @classmethod
    def seed_cosine(cls, **overrides) -> TrainingConfig:
        """The seed pipeline's model and training, exactly: Keras' default Adam rate and embedding initializer,
        20 epochs, batch 4096."""
        return cls(**{"architecture": "seed_cosine", "epochs": 20, "learning_rate": 0.001, "optimizer": "Adam",
                      "learning_rate_schedule": "constant",
                      "initializer": {"name": "RandomUniform", "args": {"minval": -0.05, "maxval": 0.05}},
                      **overrides})


class RankingConfig(BaseModel):
    """Hyperparameters of the ranking model (pipeline/models/ranking/: EASE on rating-weighted interactions).
    The defaults are the best of `make sweep KIND=ranking` on the anime sample's validation split; λ itself
    is chosen again on every run's own validation split, walking from `relative_l2` by factors of `l2_step`."""

    relative_l2: float = Field(2.0, gt=0)  # where the walk starts: λ / mean of diag(XᵀX) (scale-free)
    l2_step: float = Field(2.0, gt=1)
    l2_max_trials: int = Field(6, ge=1)  # λ values tried at most (1: use `relative_l2` as given)
    rating_weight_power: float = Field(2.0, ge=0)  # a rating r counts ((r − min + 1)/(max − min + 1))^power; 0: 1
    unrated_weight: float = Field(0.5, ge=0)  # what a watched-but-unrated row counts (also watching, completed)
    # Kaggle 2020 list entries without a rating, by watching status: set by reasoning (a dropped show says less
    # than a finished one; a planned one says interest, not taste), not tuned on that data (not in this repo);
    # `make sweep KIND=ranking SPACE='{"dropped_weight": [0, 0.1, 0.5]}'` chooses them on validation.
    on_hold_weight: float = Field(0.35, ge=0)
    dropped_weight: float = Field(0.1, ge=0)
    plan_to_watch_weight: float = Field(0.25, ge=0)
    neighbours: int = Field(200, ge=1)  # strongest weights kept per anime (the model's size and serving cost)
    max_anime: int = Field(20_000, ge=2)  # more anime than this: only the most watched are modelled (memory)
    validation_users: int = Field(10_000, ge=1)  # users sampled to judge each λ (all when fewer)


class DriftConfig(BaseModel):
    """When a run's data count as drifted from the data its data set's champion learned from (pipeline/monitoring/).
    Distances are Evidently's: Jensen-Shannon for the rating and most-watched distributions, Wasserstein normed by
    the reference's spread for ratings per user and per anime; 0.1 is Evidently's own default for both."""

    rating_distance: float = Field(0.1, gt=0)  # the distribution of rating values
    top_anime: int = Field(20, ge=1)  # the reference's most-rated anime whose share of ratings is compared
    top_anime_distance: float = Field(0.1, gt=0)  # how ratings spread over those anime (and all others as one)
    ratings_per_user_distance: float = Field(0.1, gt=0)
    ratings_per_anime_distance: float = Field(0.1, gt=0)
    # Users (anime) the champion never saw, as a share of the new data's: served by fold-in (not at all) until retrained
    new_user_share: float = Field(0.2, ge=0, le=1)
    new_anime_share: float = Field(0.05, ge=0, le=1)
    sample_rows: int = Field(200_000, ge=1_000)  # rows per side handed to Evidently (ratings, users, anime), seeded
    seed: int = 42


class Settings(BaseSettings):
    """Where data and models live, how ratings are read and split, and how the model is trained.

    Every field can be set from the environment: `ANIMEREC_MLRUNS_DIR=/tmp/mlruns`,
    `ANIMEREC_TRAINING__EPOCHS=5`.
    """

    model_config = SettingsConfigDict(env_prefix="ANIMEREC_", env_nested_delimiter="__")

    data_root: Path = PROJECT_ROOT / "data"
    mlruns_dir: Path = PROJECT_ROOT / "mlruns"
    expectations_dir: Path = PROJECT_ROOT / "expectations"
    experiment_name: str = "anime-recommender"
    registered_model_name: str = "anime-recommender"  # MODEL_NAME=…: one registered model per data set, if wanted
    # The data set a run learns from (its lineage): registered versions are compared only within one, and the inbox
    # and its archive belong to one. Set per run by `for_dataset` (the folder's name unless declared otherwise).
    dataset_name: str | None = None

    rating_min: int = 1  # the rating scale; per data set: RATING_SCALE=1-5 or dataset.toml (see for_dataset)
    rating_max: int = 10
    unrated_value: int = -1  # Kaggle CooperUnion: watched but not rated
    max_quarantine_share: float = Field(0.05, ge=0, le=1)  # more bad rows than this fails the run
    # Who evaluates the suites in expectations/: "gx" (Great Expectations' own pandas engine, in batches of
    # `validation_batch_rows`) or "arrow", an accelerator for files of tens of millions of rows
    # (pipeline/validation/arrow_engine.py: Arrow compute, results in GX's form; a suite it cannot evaluate exactly goes
    # to GX; tests hold it to GX's results).
    validation_engine: Literal["gx", "arrow"] = "gx"
    # Rating tables larger than this are validated in batches: always on Dask, and here with the GX engine (memory)
    validation_batch_rows: int = Field(4_000_000, ge=1)
    # On Dask: batches submitted and not yet read, at most (each is held here and on a worker until it is read)
    validation_batches_in_flight: int = Field(4, ge=1)

    test_fraction: float = Field(0.1, gt=0, lt=1)
    validation_fraction: float = Field(0.1, gt=0, lt=1)  # of what remains after the test split
    split_seed: int = 42
    # Scaled rating that counts as relevant for top-k: the top of the scale, ≥ 8 of 1–10, ≥ 4 of 1–5.
    relevance_threshold: float = Field(0.75, ge=0, le=1)

    training: TrainingConfig = TrainingConfig()  # the rating model: predicted ratings, judged by RMSE
    ranking: RankingConfig = RankingConfig()  # the ranking model: what to recommend, judged by NDCG@10
    drift: DriftConfig = DriftConfig()  # new data against the champion's: reported, noted on the version
    # `make sweep`: every combination is trained on the same split and judged on validation RMSE (its default: the
    # initializer × learning-rate function table of `make bench`).
    sweep_space: dict[str, list[Any]] = {
        "initializer": [{"name": "RandomNormal", "args": {"stddev": 0.01}},
                        {"name": "RandomNormal", "args": {"stddev": 0.05}},
                        {"name": "RandomUniform", "args": {"minval": -0.05, "maxval": 0.05}},
                        "GlorotUniform", {"name": "als", "args": {"sweeps": 5}}],
        "learning_rate_schedule": ["constant", {"name": "ExponentialDecay", "args": {"decay_rate": 0.8}},
                                   {"name": "CosineDecay", "args": {"warmup_epochs": 1}},
                                   {"name": "PiecewiseConstantDecay",
                                    "args": {"boundary_fractions": [0.5, 0.75], "factors": [1, 0.3, 0.1]}},
                                   "ReduceLROnPlateau"]}
    # `make sweep KIND=ranking`: each combination fitted (with its own λ walk) and judged on validation NDCG@10.
    ranking_sweep_space: dict[str, list[int | float]] = {"rating_weight_power": [0, 1, 2, 3],
                                                         "unrated_weight": [0.25, 0.5, 1.0],
                                                         "neighbours": [100, 200, 400]}

    # Where sweep trials and validation batches run: an existing Dask cluster's scheduler (DASK=tcp://host:8786), else
    # ("local", or unset for `animerec sweep`) a local cluster of `dask_workers` single-threaded worker processes
    # (default: one per core). `animerec retrain` uses Dask only when this is set (or --dask is given).
    dask_address: str | None = None
    dask_workers: int | None = Field(None, ge=1)

    retrain_cron: str = "0 3 * * *"  # the scheduled deployment's cron (daily 03:00)
    # `make serve`: Prefect posts Slack-style JSON ({"text": …}) here when a retrain run fails or crashes and when a
    # new champion is promoted (ANIMEREC_NOTIFY_URL; a Slack incoming webhook, or any URL that takes such a POST).
    notify_url: str | None = None
    lock_wait_seconds: float = Field(3600, ge=0)  # a second retrain waits this long for the first, then fails
    registry_retries: int = Field(3, ge=0)  # registration retried on store errors (locked, unreachable)
    registry_retry_delay_seconds: float = Field(2.0, ge=0)  # first backoff; doubles on each retry
    mlflow_ui_url: str = "http://127.0.0.1:5000"  # for links from Prefect artifacts to MLflow runs
    # The host names the web app answers to (the Host header): loopback only unless a person serves it further
    # (ANIMEREC_APP_HOSTS='["anime.example.org"]'); any other is refused, which stops DNS rebinding.
    app_hosts: list[str] = ["127.0.0.1", "localhost", "[::1]"]
    # What people rate in the web app (pipeline/data/ratings_db/): a SQLite file in the data folder unless a SQLAlchemy
    # URL is given (ANIMEREC_RATINGS_DB=postgresql://user@host/db); the retrain flow reads it as one more rating source.
    ratings_db: str | None = None
    profile_writes_per_minute: int = Field(60, ge=1)  # changes one profile may make in a minute (then 429)
    profile_max_ratings: int = Field(1000, ge=1)  # anime one profile may hold per data set

    @property
    def sweep_experiment_name(self) -> str:
        """Sweeps get their own MLflow experiment: trial runs never pass for retrain runs."""
        return f"{self.experiment_name}-sweep"

    @property
    def demo_data_dir(self) -> Path:
        return self.data_root / "demo"

    @property
    def inbox_root(self) -> Path:
        """One inbox folder per data set under here; files directly in it belong to none and are not merged."""
        return self.data_root / "incoming"

    @property
    def inbox_dir(self) -> Path:
        """New rating files (`*.csv`, rating.csv columns) dropped here are merged by the data set's next run."""
        return self.inbox_root / self._dataset

    @property
    def archive_dir(self) -> Path:
        """The data set's inbox files already merged, numbered in the order they were applied (part of its data)."""
        return self.data_root / "archive" / self._dataset

    @property
    def _dataset(self) -> str:
        if self.dataset_name is None:
            raise ValueError("these settings name no data set: take them from for_dataset()")
        return self.dataset_name

    @property
    def lock_path(self) -> Path:
        return self.data_root / ".retrain.lock"

    @property
    def matrix_root(self) -> Path:
        return self.data_root / "matrix"

    @property
    def ratings_db_url(self) -> str:
        return self.ratings_db or f"sqlite:///{self.data_root.resolve() / 'ratings.db'}"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.mlruns_dir.resolve() / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.mlruns_dir.resolve() / "artifacts"

    @property
    def rating_scale(self) -> str:
        return f"{self.rating_min}-{self.rating_max}"

    @property
    def relevant_rating(self) -> int:
        """The lowest rating that counts as relevant (a test rating a good list should hold): 8 of 1-10, 4 of 1-5."""
        return math.ceil(self.rating_min + self.relevance_threshold * (self.rating_max - self.rating_min) - 1e-9)
