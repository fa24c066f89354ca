"""The rating model's per-epoch metrics logged to the MLflow run as training goes (a Keras callback)."""

from __future__ import annotations

import time

import keras
from mlflow import MlflowClient
from mlflow.entities import Metric


class EpochLogger(keras.callbacks.Callback):
    """Logs every epoch metric (loss, val_loss, rmse, val_rmse, ratings_per_s) to the run as it happens."""

    def __init__(self, run_id: str):
        super().__init__()
        self.run_id = run_id
        self.client = MlflowClient()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(name, float(value), now, epoch + 1)
                                                    for name, value in (logs or {}).items()])
