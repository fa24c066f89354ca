"""One settings object for every path and hyperparameter of the pipeline."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class TrainingConfig(BaseModel):
    """Hyperparameters of the seed model (cosine of two embeddings, then Dense(1, sigmoid))."""

    embedding_dim: int = Field(128, ge=1)
    batch_size: int = Field(4096, ge=1)
    epochs: int = Field(20, ge=1)
    learning_rate: float = Field(0.001, gt=0)  # Keras' default Adam rate
    early_stopping_patience: int = Field(3, ge=0)
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
    registered_model_name: str = "anime-recommender"

    rating_min: int = 1
    rating_max: int = 10
    unrated_value: int = -1  # Kaggle CooperUnion: watched but not rated
    max_quarantine_share: float = Field(0.05, ge=0, le=1)  # more bad rows than this fails the run

    test_fraction: float = Field(0.1, gt=0, lt=1)
    validation_fraction: float = Field(0.1, gt=0, lt=1)  # of what remains after the test split
    split_seed: int = 42
    relevance_threshold: float = Field(0.75, ge=0, le=1)  # scaled rating that counts as relevant (8+ of 1..10)

    training: TrainingConfig = TrainingConfig()

    retrain_cron: str = "0 3 * * *"  # the scheduled deployment's cron (daily 03:00)
    lock_wait_seconds: float = Field(3600, ge=0)  # a second retrain waits this long for the first, then fails
    mlflow_ui_url: str = "http://127.0.0.1:5000"  # for links from Prefect artifacts to MLflow runs

    @property
    def demo_data_dir(self) -> Path:
        return self.data_root / "demo"

    @property
    def inbox_dir(self) -> Path:
        """New rating files (`*.csv`, rating.csv columns) dropped here are merged by the next run."""
        return self.data_root / "incoming"

    @property
    def archive_dir(self) -> Path:
        """Inbox files already merged, numbered in the order they were applied (part of the data)."""
        return self.data_root / "archive"

    @property
    def lock_path(self) -> Path:
        return self.data_root / ".retrain.lock"

    @property
    def matrix_root(self) -> Path:
        return self.data_root / "matrix"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.mlruns_dir.resolve() / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.mlruns_dir.resolve() / "artifacts"
