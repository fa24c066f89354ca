"""What the terminal shows of a run: Prefect's log lines and answers, not the failure records of input errors
that the command reports itself in one line."""

import logging


def quiet_expected_errors(*expected: type[BaseException]) -> None:
    """Keep the terminal to one `error:` line for input errors the command reports itself: Prefect's failure
    records for them (tracebacks, "Finished in state Failed") leave the console and stay in the run's log in
    the Prefect UI; with PREFECT_LOGGING_LEVEL=DEBUG the console shows them too. Other errors still print
    their tracebacks."""
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
