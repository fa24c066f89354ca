"""The `animerec` command line's subcommands and options (flows/cli.py runs them)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from pipeline.top_n import K

DESCRIPTION = """`animerec`: every user action, one command line. `make` targets are one-line aliases of these
subcommands.

Exit codes: 0 done, 2 bad input (one `error:` line naming the file, id or version), 1 a bug (with its traceback).
Settings come from `ANIMEREC_*` environment variables (pipeline/settings.py) for every subcommand.
"""

DEFAULT_UI_PORT, DEFAULT_MODEL_PORT, DEFAULT_PREFECT_PORT, DEFAULT_APP_PORT = 5000, 5001, 4200, 8000


def _data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, help="data folder or .zip, either Kaggle layout (default: demo data)")
    parser.add_argument("--rating-scale", help="the data's rating scale, MIN-MAX, e.g. 1-5 (default: dataset.toml "
                        "beside the data, else 1-10)")
    parser.add_argument("--dataset-name", help="the data set's name: versions are compared only within one, each has "
                        "its own inbox (default: dataset.toml's name, else the folder's)")


def _model_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="champion", help="alias or version number (default: champion)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="animerec", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verbose", action="store_true", help="also show the libraries' own output: TensorFlow's "
                        "start-up lines, MLflow's database and download messages, warnings")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_pipeline_commands(commands)
    _add_answer_commands(commands)
    return parser


def _add_pipeline_commands(commands: argparse._SubParsersAction) -> None:
    """The commands that run or serve the pipeline and its tools."""
    retrain = commands.add_parser("retrain", help="ingest, validate, train both models, evaluate, register")
    _data_options(retrain)
    retrain.add_argument("--epochs", type=int, help="maximum rating-model epochs (early stopping may end sooner)")
    retrain.add_argument("--skip-unchanged", action="store_true", help="stop if the data set's data are unchanged")
    retrain.add_argument("--dask", nargs="?", const="local", help="validation batches as tasks on Dask: 'local' "
                         "(a local cluster, one worker process per core; the default of a bare --dask) or an existing "
                         "cluster's scheduler (tcp://host:8786)")

    sweep = commands.add_parser("sweep", help="grid search of one model's settings, best on validation")
    _data_options(sweep)
    sweep.add_argument("--kind", choices=["rating", "ranking"], default="rating", help="which model to sweep")
    sweep.add_argument("--space", type=json.loads, help='grid as JSON, e.g. \'{"l2": [0.01, 0.02]}\'')
    sweep.add_argument("--dask", help="scheduler of an existing Dask cluster (tcp://host:8786); default (or "
                       "'local'): a local cluster, one worker process per core")

    serve = commands.add_parser("serve", help="Prefect server (if none answers) + retrain on a cron schedule")
    _data_options(serve)
    serve.add_argument("--cron", help="schedule (default: the retrain_cron setting, daily 03:00)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=DEFAULT_PREFECT_PORT)
    serve.add_argument("--server-timeout", type=float, default=120, help="seconds to wait for a new server")

    ui = commands.add_parser("ui", help="MLflow UI over the local store")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=DEFAULT_UI_PORT)

    serve_model = commands.add_parser("serve-model", help="MLflow scoring server for a registered version")
    _model_option(serve_model)
    serve_model.add_argument("--host", default="127.0.0.1")
    serve_model.add_argument("--port", type=int, default=DEFAULT_MODEL_PORT)

    app = commands.add_parser("app", help="the web app: pages and a JSON API over a registered version")
    _model_option(app)
    app.add_argument("--host", default="127.0.0.1")
    app.add_argument("--port", type=int, default=DEFAULT_APP_PORT)
    app.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 4),
                     help="server processes, each with the model loaded (default: one per core, at most 4)")

    bench = commands.add_parser("bench", help="benchmarks → BENCHMARKS.md (needs the bench extra)")
    bench.add_argument("--parts", help="comma-separated parts (default: all but full); the list and what each "
                       "measures: python -m benchmarks --help")
    bench.add_argument("--size", help="size of the generated data: kaggle2020 (default) or tenth")
    bench.add_argument("--layout", help="file layout of the scale part's generated data: cooperunion or kaggle2020")


def _add_answer_commands(commands: argparse._SubParsersAction) -> None:
    """The commands that answer from a registered model or the registry."""
    recommend = commands.add_parser("recommend", help="top-N unseen anime for a user, or for your own ratings")
    who = recommend.add_mutually_exclusive_group(required=True)
    who.add_argument("--user-id", type=int, help="a user id from the data")
    who.add_argument("--ratings", type=Path, help="CSV of your ratings (anime_id or name, rating)")
    recommend.add_argument("--top", type=int, default=K, help=f"how many (default {K})")
    recommend.add_argument("--genre", help="only anime of this genre (e.g. Action)")
    recommend.add_argument("--type", help="only this type (TV, Movie, OVA, ...)")
    recommend.add_argument("--min-ratings", type=int, default=0, help="only anime with at least K ratings")
    recommend.add_argument("--new", action="store_true",
                           help="also list new anime (no ratings yet), scored from their features, with the reason")
    _model_option(recommend)

    similar = commands.add_parser("similar", help="the anime that go together with one in people's histories")
    similar.add_argument("--anime", required=True, help="an anime id or name (forgiving)")
    similar.add_argument("--top", type=int, default=K)
    similar.add_argument("--include-self", action="store_true")
    _model_option(similar)

    similar_users = commands.add_parser("similar-users", help="nearest users and the genres they like most")
    similar_users.add_argument("--user-id", type=int, required=True)
    similar_users.add_argument("--top", type=int, default=K)
    _model_option(similar_users)

    compare = commands.add_parser("compare", help="every registered version by data set: table and PNG chart")
    compare.add_argument("--chart", type=Path, help="PNG path (default: mlruns/<model name>-versions.png)")

    promote = commands.add_parser("promote", help="make a version champion by hand, with a reason")
    promote.add_argument("--version", required=True)
    promote.add_argument("--reason", required=True, help="why (recorded on the version)")
