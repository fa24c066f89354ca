"""Prefect flows: thin wiring of the `pipeline` stages. Quiet, local defaults are set before Prefect loads."""

import os
from pathlib import Path

import pipeline  # noqa: F401  (the quiet local defaults, before Prefect is imported)

os.environ.setdefault("PREFECT_HOME", str(Path(__file__).resolve().parent.parent / ".prefect"))
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
