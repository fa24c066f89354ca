"""`animerec` (or `python -m pipeline`): recommendations from a registered model, and the registry itself.

Models load from `models:/anime-recommender@champion` unless --model names another alias or a version.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient

from pipeline import tracking
from pipeline.recommend import NOT_IN_METADATA, Recommender, UnknownIdError
from pipeline.registry import format_versions, list_versions, promote_manually, versions_chart
from pipeline.settings import Settings


def compare(settings: Settings, chart_path: Path) -> int:
    rows = list_versions(settings.registered_model_name)
    print(format_versions(settings.registered_model_name, rows))
    if rows:
        import matplotlib.pyplot as plt

        figure = versions_chart(settings.registered_model_name, rows)
        chart_path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(chart_path, dpi=100)
        run_id = tracking.log_registry_chart(settings, figure)
        plt.close(figure)
        print(f"chart: {chart_path} (also in MLflow run {run_id}: "
              f"{tracking.registry_chart_name(settings.registered_model_name)})")
    return 0


def promote(settings: Settings, version: str, reason: str) -> int:
    name = settings.registered_model_name
    previous = promote_manually(name, version, reason, getpass.getuser())
    print(f"{name} version {version} is now champion (was: {previous or 'none'}); reason recorded: {reason}")
    return 0


def model_uri(name: str, model: str) -> str:
    return f"models:/{name}/{model}" if model.isdigit() else f"models:/{name}@{model}"


def open_recommender(settings: Settings, model: str) -> Recommender:
    from pipeline.serving import load_recommender

    name = settings.registered_model_name
    uri = model_uri(name, model)
    what = f"{name} version {model}"
    try:
        if not model.isdigit():
            what = f"{name} version {MlflowClient().get_model_version_by_alias(name, model).version} ({model})"
        return load_recommender(uri)
    except Exception as exc:  # a missing alias or a damaged artifact: say which version, not a traceback
        raise UnknownIdError(f"cannot load {what}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                             ) from exc


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


def recommend(settings: Settings, args: argparse.Namespace) -> int:
    recommender = open_recommender(settings, args.model)
    filters = {"genre": args.genre, "anime_type": args.type, "min_ratings": args.min_ratings}
    if args.ratings:
        mine = read_my_ratings(args.ratings)
        ids = (mine["anime_id"] if "anime_id" in mine.columns
               else mine["name"].map(lambda name: recommender.find_anime(str(name))))
        top = recommender.recommend_from_ratings(ids.astype(int).to_numpy(), mine["rating"].to_numpy(), args.n,
                                                 **filters)
        who = f"your {len(mine)} ratings in {args.ratings}"
    else:
        top, who = recommender.recommend(args.user, args.n, **filters), f"user {args.user}"
    print(f"top {len(top)} for {who} (predicted ratings on the {recommender.scale.minimum}-"
          f"{recommender.scale.maximum} scale):")
    show(top)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="animerec", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    compare_cmd = commands.add_parser("compare", help="table and chart of every registered version, by data set")
    compare_cmd.add_argument("--chart", type=Path, default=None,
                             help="PNG path (default: mlruns/<model name>-versions.png)")
    rec_cmd = commands.add_parser("recommend", help="top-N unseen anime for a user, or for your own ratings")
    who = rec_cmd.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", type=int, help="a user id from the data")
    who.add_argument("--ratings", type=Path, help="CSV of your ratings (anime_id or name, rating)")
    rec_cmd.add_argument("-n", type=int, default=10)
    rec_cmd.add_argument("--genre", help="only anime of this genre (e.g. Action)")
    rec_cmd.add_argument("--type", help="only this type (TV, Movie, OVA, ...)")
    rec_cmd.add_argument("--min-ratings", type=int, default=0, help="only anime with at least K ratings")
    similar_cmd = commands.add_parser("similar", help="anime closest by embedding cosine")
    similar_cmd.add_argument("--anime", required=True, help="an anime id or name (forgiving)")
    similar_cmd.add_argument("-n", type=int, default=10)
    similar_cmd.add_argument("--include-self", action="store_true")
    users_cmd = commands.add_parser("similar-users", help="nearest users and the genres they like most")
    users_cmd.add_argument("--user", type=int, required=True)
    users_cmd.add_argument("-n", type=int, default=10)
    for command in (rec_cmd, similar_cmd, users_cmd):
        command.add_argument("--model", default="champion", help="alias or version number (default: champion)")
    promote_cmd = commands.add_parser("promote", help="make a version champion by hand, with a reason")
    promote_cmd.add_argument("version")
    promote_cmd.add_argument("--reason", required=True, help="why (recorded on the version)")
    args = parser.parse_args(argv)

    settings = Settings()
    tracking.configure_tracking(settings)
    try:
        if args.command == "compare":
            return compare(settings, args.chart or settings.mlruns_dir / tracking.registry_chart_name(
                settings.registered_model_name))
        if args.command == "promote":
            return promote(settings, args.version, args.reason)
        if args.command == "recommend":
            return recommend(settings, args)
        recommender = open_recommender(settings, args.model)
        if args.command == "similar":
            anime_id = recommender.find_anime(args.anime)
            name = recommender.anime["name"].get(anime_id)
            name = name if isinstance(name, str) else NOT_IN_METADATA
            print(f"anime most similar to {name} ({anime_id}):")
            show(recommender.similar_anime(anime_id, args.n, include_self=args.include_self))
        else:
            show(recommender.similar_users(args.user, args.n))
        return 0
    except Exception as exc:  # one clear line for the person at the terminal
        from mlflow.exceptions import MlflowException

        if not isinstance(exc, MlflowException | ValueError | LookupError | OSError):
            raise
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
