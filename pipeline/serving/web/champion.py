"""The version the web app serves: loaded once and kept warm; while it serves an alias (the champion by default), a
background thread looks at the alias every few seconds and swaps in the version it moves to, once loaded."""

from __future__ import annotations

import gc
import math
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline.registry.scores import CHAMPION, UNRECORDED_RATING_SCALE, tagged_score
from pipeline.serving.bundle import load_recommender
from pipeline.serving.recommend import Recommender
from pipeline.settings import Settings


class NoModelError(LookupError):
    """Nothing to serve yet (no version under the alias, or no such version)."""


@dataclass(frozen=True)
class ServedModel:
    recommender: Recommender
    name: str
    version: str
    alias: str | None  # what it was asked for by, when an alias
    dataset: str
    data_version: str
    rating_scale: str
    test_rmse: float
    ndcg: float
    popularity_ndcg: float
    trained: datetime
    run_id: str
    experiment_id: str
    similar: dict = field(default_factory=dict, compare=False)  # anime id → the similar-anime rows given for it

    def as_json(self) -> dict:
        def number(value: float) -> float | None:
            return None if math.isnan(value) else round(value, 4)

        return {"name": self.name, "version": self.version, "alias": self.alias, "dataset": self.dataset,
                "data_version": self.data_version, "rating_scale": self.rating_scale,
                "test_rmse": number(self.test_rmse), "ndcg_at_10": number(self.ndcg),
                "popularity_ndcg_at_10": number(self.popularity_ndcg), "trained": self.trained.isoformat(),
                "run_id": self.run_id, "users": len(self.recommender.users.ids),
                "anime": len(self.recommender.anime.ids),
                "new_anime": len(self.recommender.rating.new_anime_ids)}


def resolve_version(client: MlflowClient, name: str, model: str) -> str:
    """The version number `model` names: itself when a number, else the version the alias points at."""
    if model.isdigit():
        return model
    try:
        return str(client.get_model_version_by_alias(name, model).version)
    except MlflowException as exc:
        raise NoModelError(f"no version of {name} is {model!r} yet: run `make pipeline` first") from exc


def load_served(client: MlflowClient, name: str, version: str, alias: str | None) -> ServedModel:
    """A registered version with what the model page shows of it (its registry tags and its run)."""
    try:
        found = client.get_model_version(name, version)
    except MlflowException as exc:
        raise NoModelError(f"{name} has no version {version}") from exc
    run = client.get_run(found.run_id)
    return ServedModel(
        recommender=load_recommender(f"models:/{name}/{version}"), name=name, version=str(version), alias=alias,
        dataset=found.tags.get("dataset", "?"), data_version=found.tags.get("data_version", "?"),
        rating_scale=found.tags.get("rating_scale", UNRECORDED_RATING_SCALE),
        test_rmse=tagged_score(found.tags.get("test_rmse")), ndcg=tagged_score(found.tags.get("ndcg_at_10")),
        popularity_ndcg=run.data.metrics.get("popularity_ndcg_at_10", math.nan),
        trained=datetime.fromtimestamp(run.info.start_time / 1000, tz=UTC), run_id=found.run_id,
        experiment_id=run.info.experiment_id)


def warm_up(recommender: Recommender) -> None:
    """Answer once of each kind before serving: the lookups built on first use (known pairs, the catalog's cards
    and search keys, compiled kernels) are then built once, not by every request that arrives first."""
    user, anime = int(recommender.users.ids[0]), int(recommender.anime.ids[0])
    recommender.listing(user, 10)
    recommender.listing_from_ratings(np.array([anime]), np.array([recommender.rating.scale.maximum]), 10)
    recommender.nearest_anime(anime, 10)
    recommender.catalog.card(anime)
    recommender.catalog.search("a", recommender.anime.ids, 1)
    recommender.rating_counts()


class ModelWatcher:
    """The served model, and a thread that follows the alias (`model` = an alias such as champion, or a version)."""

    def __init__(self, settings: Settings, model: str = CHAMPION, refresh_seconds: float = 5.0):
        self.name, self.model, self.refresh_seconds = settings.registered_model_name, model, refresh_seconds
        mlflow.set_tracking_uri(settings.tracking_uri)  # where load_recommender finds models:/ URIs
        mlflow.set_registry_uri(settings.tracking_uri)
        self.client = MlflowClient()
        self._served: ServedModel | None = None
        self._missing = f"no version of {self.name} is {model!r} yet: run `make pipeline` first"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def current(self) -> ServedModel:
        served = self._served
        if served is None:
            raise NoModelError(self._missing)
        return served

    def refresh(self) -> bool:
        """Load the version the alias points at when it is not the one served; True when a new one was loaded."""
        try:
            version = resolve_version(self.client, self.name, self.model)
        except NoModelError as exc:
            self._missing = str(exc)
            return False
        if self._served is not None and self._served.version == version:
            return False
        served = load_served(self.client, self.name, version, None if self.model.isdigit() else self.model)
        warm_up(served.recommender)
        self._served = served
        # the libraries' and the model's objects stay as long as it is served: kept out of the cyclic collector's
        # full passes, which would otherwise walk them all, mid-request, every few thousand answers
        gc.freeze()
        return True

    def start(self) -> None:
        self.refresh()
        if not self.model.isdigit():
            self._thread = threading.Thread(target=self._follow, name="follow-alias", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _follow(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            try:
                self.refresh()
            except Exception as exc:  # a version that fails to load: keep serving the one loaded
                self._missing = f"could not load the new {self.model} of {self.name}: {exc}"
