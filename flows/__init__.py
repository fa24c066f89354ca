"""Prefect flows: thin wiring of the `pipeline` stages. Quiet, local defaults are set before Prefect loads."""

import os
from pathlib import Path

_PROJECT_ROOT = Path(__file__).resolve().parent.parent

for _name, _value in {
    "PREFECT_HOME": str(_PROJECT_ROOT / ".prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_SERVER_API_HOST": "127.0.0.1",
    "PREFECT_UI_ENABLED": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "KERAS_BACKEND": "tensorflow",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}.items():
    os.environ.setdefault(_name, _value)
# Prefect's local server keeps its SQLite database here and fails to start ("unable to open database
# file") when the folder does not exist, as on a fresh clone.
Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)
