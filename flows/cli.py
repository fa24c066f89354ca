"""`animerec`: every user action, one command line. `make` targets are one-line aliases of these subcommands.

Exit codes: 0 done, 2 bad input (one `error:` line naming the file, id or version), 1 a bug (with its traceback).
Settings come from `ANIMEREC_*` environment variables (pipeline/settings.py) for every subcommand; the options of each
are in flows/arguments.py.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from flows.arguments import build_parser
from pipeline.environment import quiet_libraries, quiet_native_stderr, use_local_defaults
from pipeline.errors import first_line
from pipeline.settings import APP_MODEL_VARIABLE, PROJECT_ROOT, Settings


def _quiet_flow_errors(command: str, verbose: bool) -> None:
    """After the flow module is imported (Prefect's logging is set up then, and `serve` points Prefect at its server
    before that): the expected errors leave Prefect's console log, the one `error:` line stays; the libraries'
    loggers under Prefect's, which its set-up reset, are quieted again."""

    from flows.console import quiet_expected_errors

    quiet_expected_errors(*_expected_errors(command))
    quiet_libraries(verbose)


def _retrain(args: argparse.Namespace, settings: Settings) -> int:
    from flows.cluster import on_dask
    from flows.retrain import retrain

    _quiet_flow_errors("retrain", args.verbose)
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

    _quiet_flow_errors("sweep", args.verbose)
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
    from flows.commands import model_uri

    return _mlflow("models", "serve", "-m", model_uri(settings.registered_model_name, args.model), "--env-manager",
                   "local", "--host", args.host, "--port", str(args.port), tracking_uri=settings.tracking_uri)


APP_PROTOCOL = "pipeline.serving.web.doors:PlainSpokenHttp"  # uvicorn's HTTP, with a sentence for too long an address


def _app(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from pipeline.data.ratings_db.store import RatingsStore

    RatingsStore.open(settings.ratings_db_url).close()  # its schema migrated once, before any worker opens it
    print(f"anime recommender on http://{args.host}:{args.port} (model {args.model}, {args.workers} worker process"
          f"{'es' if args.workers > 1 else ''}; Ctrl-C stops it)", flush=True)
    if args.workers == 1:
        from pipeline.serving.web.app import create_app

        uvicorn.run(create_app(settings, args.model), host=args.host, port=args.port, log_level="warning",
                    http=APP_PROTOCOL)
    else:  # each worker process loads the model itself and answers on one thread: the processes share the cores
        os.environ[APP_MODEL_VARIABLE] = args.model
        for threads in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            os.environ.setdefault(threads, "1")
        # what loading the bundle takes for a moment is given back: Arrow's system allocator (its default pool keeps
        # it), and glibc maps blocks from 128 KiB on their own (its moving threshold would keep them in the heap)
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
        os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
        # named, not imported: this process only watches its workers, and the app's imports take a worker's memory
        uvicorn.run("pipeline.serving.web.app:app_from_environment", factory=True, workers=args.workers,
                    host=args.host, port=args.port, log_level="warning", http=APP_PROTOCOL)
    return 0


def _registry_command(args: argparse.Namespace, settings: Settings) -> int:
    from flows import commands
    from pipeline.registry.store import configure_tracking
    from pipeline.registry.versions import registry_chart_name

    configure_tracking(settings)
    if args.command == "recommend":
        return commands.recommend(settings, args.model, args.user_id, args.ratings, args.top, args.genre, args.type,
                                  args.min_ratings, args.new)
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
    options += ["--verbose"] if args.verbose else []
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

    from pipeline.errors import UnknownIdError

    return PipelineInputError, UnknownIdError, MlflowException, ValueError, LookupError, OSError


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
    with quiet_native_stderr(quiet=not args.verbose and args.command not in KEEPS_STDERR):
        try:
            with _prefect_server(args.command):
                return HANDLERS[args.command](args, settings)
        except _expected_errors(args.command) as exc:
            print(f"error: {first_line(exc)}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
