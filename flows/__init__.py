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


def quiet_expected_errors(*expected: type[BaseException]) -> None:
    """Keep the terminal to one `error:` line for input errors the command reports itself: Prefect's failure
    records for them (tracebacks, "Finished in state Failed") leave the console and stay in the run's log in
    the Prefect UI; with PREFECT_LOGGING_LEVEL=DEBUG the console shows them too. Other errors still print
    their tracebacks."""
    import logging

    from prefect.logging.handlers import PrefectConsoleHandler

    names = tuple(kind.__name__ for kind in expected)

    def shown(record: logging.LogRecord) -> bool:
        if logging.getLogger("prefect").getEffectiveLevel() <= logging.DEBUG:
            return True
        raised = record.exc_info[1] if record.exc_info else None
        return not isinstance(raised, expected) and not (
            "Finished in state Failed" in record.getMessage() and any(name in record.getMessage() for name in names))

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler):
            handler.addFilter(shown)
