"""The quiet, local defaults of every tool the pipeline drives: no analytics or telemetry, servers on 127.0.0.1,
Prefect's state in the project, Keras on TensorFlow, TensorFlow's C++ logging at warnings. Entry points (the CLI,
the bench, the tests) apply them before those tools are imported; a variable the user set wins."""

import os
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
}
QUIET_LOGGERS = ("absl", "tensorflow", "distributed", "evidently")


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
