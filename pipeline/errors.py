"""The one error type a user sees for bad input: a single line naming file, column or row."""


class PipelineInputError(ValueError):
    """Structural problem with the input (missing file/column, unparseable, failed validation)."""


class RegistryUnavailableError(RuntimeError):
    """Registering a model failed on every retry (the MLflow store is locked or unreachable)."""
