"""The one error type a user sees for bad input: a single line naming file, column or row."""


class PipelineInputError(ValueError):
    """Structural problem with the input (missing file/column, unparseable, failed validation)."""


class UnknownIdError(LookupError):
    """A user or anime id the model does not know, or a name that matches no anime."""


class RegistryUnavailableError(RuntimeError):
    """Registering a model failed on every retry (the MLflow store is locked or unreachable)."""


def first_line(exc: BaseException) -> str:
    """An exception in one line for a person: its message's first line, or its type when it has none."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
