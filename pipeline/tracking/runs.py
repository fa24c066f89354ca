"""MLflow tracking at the edges of the stages: one run per retrain, resumed by each stage by id.

Stages stay free of MLflow; these functions log what a stage produced into the run. Logging by
explicit run id (not the thread-local "active run") keeps it correct whichever thread an
orchestrator runs a stage in.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import mlflow
from mlflow import MlflowClient
from mlflow.types import ColSpec, Schema
from pydantic import BaseModel

from pipeline.matrix.utility_matrix import UtilityMatrix
from pipeline.registry.lineage import Lineage
from pipeline.registry.promotion import PromotionDecision
from pipeline.registry.scores import CHALLENGER, CHAMPION, UNRECORDED_RATING_SCALE
from pipeline.registry.store import configure_tracking
from pipeline.settings import Settings

ID_MAPS_DIR = "id_maps"
RETRAIN_RUN_PREFIX = "retrain"


@dataclass(frozen=True)
class RetrainRun:
    """One retrain's MLflow run and what it learns from: what the flow hands each stage once the matrix is built."""

    run_id: str
    url: str  # the run's page in the MLflow UI
    settings: Settings
    matrix: UtilityMatrix
    lineage: Lineage


def start_run(settings: Settings, lineage: Lineage) -> str:
    """A new retrain run, named after its data set and data version (`retrain anime-sample f2723402`), with the data
    logged as its input dataset (the runs page's Dataset column). Called under the run lock, so a retrain run still
    RUNNING is one whose process died (killed mid-training, say): it is marked KILLED rather than left running."""
    experiment_id = configure_tracking(settings)
    client = MlflowClient()
    for orphan in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING' and "
                                     f"tags.mlflow.runName LIKE '{RETRAIN_RUN_PREFIX} %'"):
        client.set_terminated(orphan.info.run_id, "KILLED")
    name = f"{RETRAIN_RUN_PREFIX} {lineage.dataset} {lineage.data_version[:8]}"
    run = client.create_run(experiment_id, run_name=name,
                            tags={"data_dir": str(lineage.location), "dataset": lineage.dataset,
                                  "data_version": lineage.data_version,
                                  **{f"sha256.{file}": digest for file, digest in lineage.source_sha256.items()}})
    log_dataset(run.info.run_id, lineage)
    return run.info.run_id


RATING_SCHEMA = Schema([ColSpec("long", "user_id"), ColSpec("long", "anime_id"), ColSpec("long", "rating")])


def log_dataset(run_id: str, lineage: Lineage) -> None:
    """The data set as the run's MLflow input: name, data version as digest, the folder as source, and the source
    files' sha256 as input tags."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():  # a local path matches two equivalent source kinds; MLflow picks one and warns
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(lineage.location.resolve()))
    dataset = MetaDataset(source, name=lineage.dataset, digest=lineage.data_version[:8], schema=RATING_SCHEMA)
    with resumed(run_id):
        mlflow.log_input(dataset, context="training", tags={
            "data_version": lineage.data_version,
            **{f"sha256.{name}": digest for name, digest in lineage.source_sha256.items()}})


def config_params(config: BaseModel) -> dict[str, str]:
    """A configuration's fields as MLflow params, a Keras part as it reads: "CosineDecay(warmup_epochs=1)"."""
    return {name: str(getattr(config, name)) for name in type(config).model_fields}


def finish_run(run_id: str, succeeded: bool) -> None:
    MlflowClient().set_terminated(run_id, "FINISHED" if succeeded else "FAILED")


@contextmanager
def ended(run_id: str) -> Iterator[str]:
    """Yield `run_id`, then end that run: FINISHED if the block completed, FAILED if it raised."""
    succeeded = False
    try:
        yield run_id
        succeeded = True
    finally:
        finish_run(run_id, succeeded)


@contextmanager
def resumed(run_id: str) -> Iterator[None]:
    """Make `run_id` the active run in this thread (for MLflow APIs that take no run id)."""
    with mlflow.start_run(run_id=run_id):
        yield
    MlflowClient().update_run(run_id, status="RUNNING")


def log_decision(run_id: str, decision: PromotionDecision) -> None:
    """The registry's decision on the run: tags to filter runs by, and the whole decision as `promotion.json`."""
    client = MlflowClient()
    client.set_tag(run_id, "promotion", CHAMPION if decision.promoted else CHALLENGER)
    client.set_tag(run_id, "promotion_reason", decision.reason)
    client.log_text(run_id, json.dumps(dataclasses.asdict(decision), indent=2), "promotion.json")


def last_trained_data(settings: Settings) -> tuple[str, str] | None:
    """(data version, rating scale) of the newest finished retrain run on this data set (None if there is none yet):
    the same data read on another scale is new data."""
    experiment_id = configure_tracking(settings)
    runs = MlflowClient().search_runs([experiment_id], filter_string="attributes.status = 'FINISHED' and "
                                      f"tags.dataset = '{settings.dataset_name}' and tags.data_version != ''",
                                      order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return None
    return runs[0].data.tags["data_version"], runs[0].data.params.get("rating_scale", UNRECORDED_RATING_SCALE)


def run_url(settings: Settings, run_id: str) -> str:
    experiment_id = MlflowClient().get_run(run_id).info.experiment_id
    return f"{settings.mlflow_ui_url}/#/experiments/{experiment_id}/runs/{run_id}"
