"""What the `animerec` commands on the registry do (flows/cli.py parses the command line): recommendations from a
registered model, printed for the terminal, and the registry itself (compare, promote).

Models load from `models:/<registered model>@champion` unless `model` names another alias or a version.
"""

from __future__ import annotations

import getpass
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient

from pipeline.errors import UnknownIdError, first_line
from pipeline.registry.registration import promote_manually
from pipeline.registry.versions import (
    format_versions,
    list_versions,
    log_registry_chart,
    registry_chart_name,
    versions_chart,
)
from pipeline.serving import presentation
from pipeline.serving.catalog import NOT_IN_METADATA
from pipeline.serving.recommend import Recommender
from pipeline.settings import Settings


def compare(settings: Settings, chart_path: Path) -> int:
    rows = list_versions(settings.registered_model_name)
    print(format_versions(settings.registered_model_name, rows))
    if rows:
        figure = versions_chart(settings.registered_model_name, rows)
        chart_path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(chart_path, dpi=100)
        run_id = log_registry_chart(settings, figure)
        print(f"chart: {chart_path} (also in MLflow run {run_id}: "
              f"{registry_chart_name(settings.registered_model_name)})")
    return 0


def promote(settings: Settings, version: str, reason: str) -> int:
    name = settings.registered_model_name
    previous = promote_manually(name, version, reason, getpass.getuser())
    print(f"{name} version {version} is now champion (was: {previous or 'none'}); reason recorded: {reason}")
    return 0


def model_uri(name: str, model: str) -> str:
    return f"models:/{name}/{model}" if model.isdigit() else f"models:/{name}@{model}"


def open_recommender(settings: Settings, model: str) -> Recommender:
    from pipeline.serving.bundle import load_recommender

    name = settings.registered_model_name
    uri = model_uri(name, model)
    what = f"{name} version {model}"
    try:
        if not model.isdigit():
            what = f"{name} version {MlflowClient().get_model_version_by_alias(name, model).version} ({model})"
        return load_recommender(uri)
    except Exception as exc:  # a missing alias or a damaged artifact: say which version, not a traceback
        raise UnknownIdError(f"cannot load {what}: {first_line(exc)}") from exc


def read_my_ratings(path: Path) -> pd.DataFrame:
    """A person's own ratings: a CSV with anime_id (or name) and rating columns."""
    frame = pd.read_csv(path)
    if "rating" not in frame.columns or not {"anime_id", "name"} & set(frame.columns):
        raise UnknownIdError(f"{path}: needs a 'rating' column and an 'anime_id' or 'name' column")
    return frame


def show(frame: pd.DataFrame) -> None:
    """A table for the terminal: an anime missing from anime.csv shows as its id and "(not in anime.csv)"."""
    frame = frame.assign(**{column: frame[column].astype(object).where(frame[column].notna(), "")
                            for column in ("genre", "type") if column in frame})
    if "name" in frame:
        frame = frame.assign(name=frame["name"].astype(object).where(frame["name"].notna(), NOT_IN_METADATA))
    with pd.option_context("display.max_colwidth", 45, "display.width", 160):
        print(frame.to_string(index=False))


def recommend(settings: Settings, model: str, user_id: int | None, ratings: Path | None, top: int,
              genre: str | None = None, anime_type: str | None = None, min_ratings: int = 0,
              new: bool = False) -> int:
    """A known user's top-N (`user_id`), or someone new's from their own ratings file (`ratings`); with `new`,
    then the new anime (no ratings yet) they are predicted to like, with the reason."""
    recommender = open_recommender(settings, model)
    filters = {"genre": genre, "anime_type": anime_type, "min_ratings": min_ratings}
    ids = scores = None
    if ratings is not None:
        mine = read_my_ratings(ratings)
        ids = (mine["anime_id"] if "anime_id" in mine.columns
               else mine["name"].map(lambda name: recommender.find_anime(str(name)))).astype(int).to_numpy()
        scores = mine["rating"].to_numpy()
        top_n = presentation.recommend_from_ratings(recommender, ids, scores, top, **filters)
        who = f"your {len(mine)} ratings in {ratings}"
    else:
        top_n, who = presentation.recommend(recommender, user_id, top, **filters), f"user {user_id}"
    scale = f"predicted ratings on the {recommender.rating.scale.minimum}-{recommender.rating.scale.maximum} scale"
    print(f"top {len(top_n)} for {who} ({scale}):")
    show(top_n)
    if new:
        fresh = presentation.recommend_new(recommender, top, user_id, ids, scores, genre=genre, anime_type=anime_type)
        print(f"\nnew: not yet rated by many ({len(recommender.rating.new_anime_ids):,} anime with no ratings in "
              f"the model's data, scored from what they are; {scale}):")
        show(fresh) if len(fresh) else print("  none: " + presentation.why_no_new(recommender))
    return 0


def similar(settings: Settings, model: str, anime: str, top: int, include_self: bool = False) -> int:
    recommender = open_recommender(settings, model)
    anime_id = recommender.find_any_anime(anime)
    print(f"anime most similar to {recommender.catalog.name(anime_id)} ({anime_id}):")
    show(presentation.similar_anime(recommender, anime_id, top, include_self=include_self))
    return 0


def similar_users(settings: Settings, model: str, user_id: int, top: int) -> int:
    show(presentation.similar_users(open_recommender(settings, model), user_id, top))
    return 0
