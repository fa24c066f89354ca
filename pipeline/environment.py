"""The quiet, local defaults of every tool the pipeline drives: no analytics or telemetry, servers on 127.0.0.1,
Prefect's state in the project, Keras on TensorFlow, TensorFlow's C++ logging at warnings. Entry points (the CLI,
the bench, the tests) apply them before those tools are imported; a variable the user set wins."""

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.settings import PROJECT_ROOT

LOCAL_DEFAULTS = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "EVIDENTLY_DISABLE_TELEMETRY": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_API_HOST": "127.0.0.1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_UI_ENABLED": "true",
    "PREFECT_HOME": str(PROJECT_ROOT / ".prefect"),
    "KERAS_BACKEND": "tensorflow",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


def use_local_defaults() -> None:
    """Set each default the environment does not set. Prefect's local server keeps its SQLite database in
    PREFECT_HOME and fails to start ("unable to open database file") when the folder does not exist, as on a fresh
    clone: it is created."""
    for name, value in LOCAL_DEFAULTS.items():
        os.environ.setdefault(name, value)
    Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)


QUIET_DEFAULTS = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_LOGGING_LEVEL": "ERROR",
    "DASK_LOGGING__DISTRIBUTED": "error",  # Dask's cluster start and stop lines; read by every worker too
}
QUIET_LOGGERS = ("absl", "tensorflow", "distributed", "evidently", "prefect.task_runner.dask")


def quiet_libraries(verbose: bool = False) -> None:
    """A command's terminal shows Prefect's log lines and its answers: the libraries' own progress bars, database
    set-up messages and warnings stay off it unless `verbose` (a variable the user set still wins)."""
    if verbose:
        return
    import logging
    import warnings

    for name, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(name, value)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    from mlflow.utils.logging_utils import disable_logging

    disable_logging()  # MLflow's own prints ("Successfully registered model …")


@contextmanager
def quiet_native_stderr(quiet: bool) -> Iterator[None]:
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
