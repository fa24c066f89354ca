"""`animerec`: every user action, one command line. `make` targets are one-line aliases of these subcommands.

Exit codes: 0 done, 2 bad input (one `error:` line naming the file, id or version), 1 a bug (with its traceback).
Settings come from `ANIMEREC_*` environment variables (pipeline/settings.py) for every subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from pipeline.environment import quiet_libraries, use_local_defaults
from pipeline.errors import first_line
from pipeline.evaluation.metrics import K
from pipeline.settings import PROJECT_ROOT, Settings

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
    parser = argparse.ArgumentParser(prog="animerec", description=__doc__,
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


def _quiet_flow_errors(command: str) -> None:
    """After the flow module is imported (Prefect's logging is set up then, and `serve` points Prefect at its server
    before that): the expected errors leave Prefect's console log, the one `error:` line stays."""

    from flows.console import quiet_expected_errors

    quiet_expected_errors(*_expected_errors(command))


def _retrain(args: argparse.Namespace, settings: Settings) -> int:
    from flows.cluster import on_dask
    from flows.retrain import retrain

    _quiet_flow_errors("retrain")
    if args.epochs:
        settings.training.epochs = args.epochs
    if args.dask:
        settings.dask_address = args.dask
    run = on_dask(retrain, settings) if settings.dask_address else retrain
    summary = run(data_dir=args.data, skip_unchanged=args.skip_unchanged, settings=settings,
                      rating_scale=args.rating_scale, dataset_name=args.dataset_name)
    print(summary.format(settings.registered_model_name))
    return 0


def _sweep(args: argparse.Namespace, settings: Settings) -> int:
    from flows.sweep import sweep_on_dask

    _quiet_flow_errors("sweep")
    if args.dask:
        settings.dask_address = args.dask
    print(sweep_on_dask(settings, data_dir=args.data, space=args.space, model=args.kind,
                        rating_scale=args.rating_scale, dataset_name=args.dataset_name).format())
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from flows.serve import serve_on_schedule

    return serve_on_schedule(args.host, args.port, args.cron or settings.retrain_cron, args.data, args.rating_scale,
                             args.dataset_name, args.server_timeout, settings.notify_url)


def _mlflow(*args: str, tracking_uri: str) -> NoReturn:
    """Replace this process with the `mlflow` command of this environment (Ctrl-C goes straight to it)."""
    bin_dir = Path(sys.executable).parent
    env = os.environ | {"MLFLOW_TRACKING_URI": tracking_uri, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    os.execve(bin_dir / "mlflow", ["mlflow", *args], env)  # noqa: S606 (our own mlflow, argument list)


def _ui(args: argparse.Namespace, settings: Settings) -> int:
    settings.mlruns_dir.mkdir(parents=True, exist_ok=True)
    # One worker process: a local UI has one reader, and sqlite serializes the store anyway (MLflow's default is 4).
    return _mlflow("ui", "--backend-store-uri", settings.tracking_uri, "--default-artifact-root",
                   str(settings.artifact_root), "--host", args.host, "--port", str(args.port), "--workers", "1",
                   tracking_uri=settings.tracking_uri)


def _serve_model(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.commands import model_uri

    return _mlflow("models", "serve", "-m", model_uri(settings.registered_model_name, args.model), "--env-manager",
                   "local", "--host", args.host, "--port", str(args.port), tracking_uri=settings.tracking_uri)


def _app(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from pipeline.serving.web.app import MODEL_VARIABLE, app_from_environment, create_app

    print(f"anime recommender on http://{args.host}:{args.port} (model {args.model}, {args.workers} worker process"
          f"{'es' if args.workers > 1 else ''}; Ctrl-C stops it)", flush=True)
    if args.workers == 1:
        uvicorn.run(create_app(settings, args.model), host=args.host, port=args.port, log_level="warning")
    else:  # each worker process loads the model itself and answers on one thread: the processes share the cores
        os.environ[MODEL_VARIABLE] = args.model
        for threads in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            os.environ.setdefault(threads, "1")
        uvicorn.run(f"{app_from_environment.__module__}:{app_from_environment.__name__}", factory=True,
                    workers=args.workers, host=args.host, port=args.port, log_level="warning")
    return 0


def _registry_command(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline import commands
    from pipeline.registry.versions import registry_chart_name
    from pipeline.tracking.runs import configure_tracking

    configure_tracking(settings)
    if args.command == "recommend":
        return commands.recommend(settings, args.model, args.user_id, args.ratings, args.top, args.genre, args.type,
                                  args.min_ratings)
    if args.command == "similar":
        return commands.similar(settings, args.model, args.anime, args.top, args.include_self)
    if args.command == "similar-users":
        return commands.similar_users(settings, args.model, args.user_id, args.top)
    if args.command == "compare":
        return commands.compare(settings, args.chart or settings.mlruns_dir / registry_chart_name(
            settings.registered_model_name))
    return commands.promote(settings, args.version, args.reason)


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    """The bench is not part of the product: it runs as its own module, in its own process."""
    options = [f"--{name}={value}" for name, value in (("parts", args.parts), ("size", args.size),
                                                        ("layout", args.layout)) if value]
    return subprocess.call([sys.executable, "-m", "benchmarks", *options], cwd=PROJECT_ROOT)


HANDLERS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "retrain": _retrain, "sweep": _sweep, "serve": _serve, "ui": _ui, "serve-model": _serve_model, "app": _app,
    "recommend": _registry_command, "similar": _registry_command, "similar-users": _registry_command,
    "compare": _registry_command, "promote": _registry_command, "bench": _bench,
}
FLOW_COMMANDS = {"retrain", "sweep", "serve"}
FLOW_MODULES = {"retrain": "flows.retrain", "sweep": "flows.sweep"}  # run on a temporary server unless one is set
# servers and other programs (no TensorFlow imported): their own error output keeps the terminal
KEEPS_STDERR = {"ui", "serve-model", "bench", "app"}


def _expected_errors(command: str) -> tuple[type[BaseException], ...]:
    """The errors a command reports as bad input (exit 2, one line); anything else is a bug."""
    from pipeline.errors import PipelineInputError, RegistryUnavailableError
    from pipeline.storage import LockBusyError

    if command in FLOW_COMMANDS:
        return PipelineInputError, LockBusyError, RegistryUnavailableError
    if command == "bench":
        return (PipelineInputError,)
    from mlflow.exceptions import MlflowException

    from pipeline.serving.catalog import UnknownIdError

    return PipelineInputError, UnknownIdError, MlflowException, ValueError, LookupError, OSError


@contextmanager
def _quiet_native_stderr(quiet: bool) -> Iterator[None]:
    """TensorFlow and absl write start-up lines (`oneDNN custom operations are on…`) straight to file descriptor 2:
    send those to /dev/null while Python's own stderr (errors, warnings) keeps the terminal. Only when stderr is the
    process's own (not captured, as under pytest)."""
    if not quiet or sys.stderr is not sys.__stderr__:
        yield
        return
    sys.stderr.flush()
    terminal, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    sys.stderr = os.fdopen(os.dup(terminal), "w", buffering=1)
    try:
        yield
    finally:
        sys.stderr.close()
        sys.stderr = sys.__stderr__
        os.dup2(terminal, 2)
        os.close(terminal)
        os.close(devnull)


@contextmanager
def _prefect_server(command: str) -> Iterator[None]:
    """A flow command's temporary Prefect server, tied to this process, started while the flow module imports."""
    if command not in FLOW_MODULES:
        yield
        return
    from flows.temporary_server import temporary_prefect_server

    timeout_s = float(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"])
    with temporary_prefect_server(timeout_s, meanwhile=lambda: importlib.import_module(FLOW_MODULES[command])):
        yield


def main(argv: list[str] | None = None) -> int:
    use_local_defaults()
    args = build_parser().parse_args(argv)
    quiet_libraries(verbose=args.verbose)
    settings = Settings()
    with _quiet_native_stderr(quiet=not args.verbose and args.command not in KEEPS_STDERR):
        try:
            with _prefect_server(args.command):
                return HANDLERS[args.command](args, settings)
        except _expected_errors(args.command) as exc:
            print(f"error: {first_line(exc)}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
