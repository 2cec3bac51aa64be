"""The small error hierarchy of shoplake.

Every message says what happened, what was expected and, where possible, how to fix it.
The CLI prints a `ShoplakeError` as one red line and exits 1.
"""


class ShoplakeError(Exception):
    """Base class for errors a user can act on."""


class DeterministicError(ShoplakeError):
    """A failure that the same inputs reproduce (a refused feature, a failed audit): retrying cannot help.

    The job runner classifies failures by exception type and never retries this one.
    """


class InsufficientDataError(DeterministicError):
    """A task's inputs do not exist or hold too little data (no landing folder, an empty table, too few days).

    Nothing is wrong: there is nothing to do yet. A job ends such a task `skipped`, with this message as the
    reason, and its downstream tasks still run.
    """


class ConfigError(ShoplakeError):
    """A setting, flag or selection is invalid."""


class SourceFormatError(ShoplakeError):
    """An input file is missing, unreadable or does not match the source schema."""


class TableNotFoundError(ShoplakeError):
    """A table name is not in the catalog, or the table has not been built yet."""


class InputNotBuiltError(InsufficientDataError, TableNotFoundError):
    """A table has not been built because its sources hold no data yet (e.g. no retail file ingested)."""


class ModelNotFoundError(ShoplakeError):
    """A registered model, or its `champion` version, does not exist yet (re-exported by shoplake.ml.errors)."""


class QualityCheckError(ShoplakeError):
    """A data quality check with action 'fail' failed."""


class QueryError(ShoplakeError):
    """A SQL query was refused or failed."""


class EngineMemoryError(QueryError):
    """The engine could not fit a query in its memory limit (the part of the work that cannot spill)."""


class EngineUnavailableError(ShoplakeError):
    """The requested engine cannot run here (missing extra, no Java, ...)."""


class AccessDeniedError(QueryError):
    """A query names a table the caller's role may not read."""


class QueryTimeoutError(QueryError):
    """A query ran longer than the allowed time and was stopped."""


class LakeNotWritableError(ShoplakeError):
    """The lake folder (or a table in it) cannot be written by this process."""


class LakeLockTimeout(ShoplakeError):
    """Another process kept a table's writer lock longer than this process was willing to wait."""


class LockedError(ShoplakeError):
    """Another live process holds a lock that is never waited for (a job's run, the scheduler)."""


class VerificationError(ShoplakeError):
    """`shoplake verify` found figures that do not reconcile."""


# Failures that may pass when tried again: I/O (a full disk freed, a network share back), a writer lock that
# another process kept too long, a lost Spark executor or connection. Everything else (checks, leakage
# refusals, configuration, bugs) fails the same way on the same inputs and is never retried.
_TRANSIENT_SPARK = ("Py4JNetworkError", "SparkConnectGrpcException", "ExecutorLostFailure")


def is_transient(exc: BaseException) -> bool:
    """Whether a job should try `exc`'s task again: classified by exception type, never by message text."""
    if isinstance(exc, OSError | LakeLockTimeout):
        return True
    return any(cls.__name__ in _TRANSIENT_SPARK for cls in type(exc).__mro__)
