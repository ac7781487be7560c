"""What a store error means: one classification for every caller.

* ``transient``: the store, not the data (connection lost, server restarting,
  timeouts, busy, a cluster moving slots); worth retrying.
* ``refused``: the data itself is wrong (a constraint, a bad value, a
  document the server refuses); retrying would not change it, so the caller
  isolates and dead-letters it.
* ``unknown``: anything else; the caller's retry policy decides.

The sinks (``stores.retry.retrying`` from the pipeline), the audit trail and
the web views (``STORE_ERRORS``: answered with 503) all use these lists.
"""
from __future__ import annotations

import asyncio
from typing import Tuple, Type

TRANSIENT_KIND = "transient"
REFUSED_KIND = "refused"
UNKNOWN_KIND = "unknown"


class Busy(Exception):
    """The store took the request but not all of it: retry later (transient)."""


def _transient_errors() -> Tuple[Type[BaseException], ...]:
    import asyncpg
    import opensearchpy.exceptions
    import pymongo.errors
    import redis.exceptions

    return (
        OSError,  # ConnectionError and friends
        asyncio.TimeoutError,
        Busy,
        asyncpg.PostgresConnectionError,
        asyncpg.CannotConnectNowError,
        asyncpg.InterfaceError,
        asyncpg.AdminShutdownError,
        asyncpg.TooManyConnectionsError,
        asyncpg.exceptions.CrashShutdownError,
        asyncpg.exceptions.SerializationError,
        asyncpg.exceptions.DeadlockDetectedError,
        pymongo.errors.AutoReconnect,  # includes NetworkTimeout, NotPrimaryError
        pymongo.errors.ConnectionFailure,
        pymongo.errors.ServerSelectionTimeoutError,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        redis.exceptions.BusyLoadingError,
        # Redis Cluster while a master fails over or slots move: answers
        # that name no fault in the data, though they arrive as ResponseErrors.
        redis.exceptions.ClusterError,
        redis.exceptions.RedisClusterException,
        redis.exceptions.TryAgainError,
        redis.exceptions.AskError,  # and MovedError
        redis.exceptions.ReadOnlyError,
        # Keys of several slots in one command: a bug of ours, never the
        # data's, so it stalls visibly instead of dead-lettering good events.
        redis.exceptions.ClusterCrossSlotError,
        # OpenSearch/Elasticsearch: unreachable, 429 and 5xx (a 4xx other
        # than 429 is about the request: ``classify`` calls it refused).
        opensearchpy.exceptions.ConnectionError,
        opensearchpy.exceptions.TransportError,
    )


TRANSIENT: Tuple[Type[BaseException], ...] = _transient_errors()


def _data_errors() -> Tuple[Type[BaseException], ...]:
    import asyncpg
    import pymongo.errors
    import redis.exceptions

    return (
        asyncpg.DataError,                          # bad value for a column type
        asyncpg.IntegrityConstraintViolationError,  # CHECK, FK, NOT NULL, UNIQUE
        pymongo.errors.BulkWriteError,              # a document the server refused
        pymongo.errors.WriteError,
        pymongo.errors.DocumentTooLarge,
        redis.exceptions.DataError,
        redis.exceptions.ResponseError,             # e.g. WRONGTYPE
        ValueError,
    )


#: Errors that mean the data itself was refused; never retried (unless they
#: are also ``TRANSIENT``: some cluster answers are ResponseErrors too).
REFUSED: Tuple[Type[BaseException], ...] = _data_errors()


def _store_errors() -> Tuple[Type[BaseException], ...]:
    import aiokafka.errors
    import asyncpg
    import opensearchpy.exceptions
    import pymongo.errors
    import redis.exceptions

    return (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
            pymongo.errors.PyMongoError, redis.exceptions.RedisError,
            opensearchpy.exceptions.OpenSearchException, aiokafka.errors.KafkaError)


#: Every error a store client (or Kafka) raises when it is down, slow or
#: refusing: the read API answers these with 503.
STORE_ERRORS: Tuple[Type[BaseException], ...] = _store_errors()


def _request_refused(exc: BaseException) -> bool:
    """An OpenSearch answer about the request itself: a 4xx other than 429."""
    import opensearchpy.exceptions

    status = getattr(exc, "status_code", None)
    return (isinstance(exc, opensearchpy.exceptions.TransportError) and isinstance(status, int)
            and 400 <= status < 500 and status != 429)


def classify(exc: BaseException) -> str:
    """``transient``, ``refused`` or ``unknown`` (see the module's docstring)."""
    if _request_refused(exc):
        return REFUSED_KIND
    if isinstance(exc, TRANSIENT):
        return TRANSIENT_KIND
    if isinstance(exc, REFUSED):
        return REFUSED_KIND
    return UNKNOWN_KIND


def refused(exc: BaseException) -> bool:
    """Whether ``exc`` says the data is wrong (dead-letter it) rather than the store."""
    return classify(exc) == REFUSED_KIND


#: Attributes of a store error that name things (never hold row data):
#: asyncpg's SQLSTATE and schema names.
_NAMED_PARTS = ("sqlstate", "schema_name", "table_name", "column_name", "constraint_name",
                "data_type_name")


def describe_error(exc: BaseException) -> str:
    """A store error as its class and the names it gives, without values.

    Error messages can quote the data: PostgreSQL's "Failing row contains
    (...)", a duplicate key's value, a document's field.  What leaves the
    worker (dead-letter headers, outcomes, the audit trail) is this instead:
    the class, the constraint/column/table names and error codes.
    """
    parts = [type(exc).__name__]
    for name in _NAMED_PARTS:
        value = getattr(exc, name, None)
        if isinstance(value, str) and value:
            parts.append(f"{name}={value}")
    details = getattr(exc, "details", None)
    if isinstance(details, dict):  # PyMongo: codes and code names only
        errors = details.get("writeErrors") or [details]
        codes = sorted({(e.get("code"), e.get("codeName")) for e in errors
                        if isinstance(e, dict) and e.get("code") is not None},
                       key=lambda c: (c[0], str(c[1])))
        parts += [f"code={code}" + (f" ({name})" if isinstance(name, str) else "")
                  for code, name in codes]
    if isinstance(exc, OSError) and exc.errno is not None:
        parts.append(f"[Errno {exc.errno}] {exc.strerror or ''}".rstrip())
    return parts[0] + (": " + ", ".join(parts[1:]) if len(parts) > 1 else "")
