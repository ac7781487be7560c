"""The contract every store shares: batched, idempotent, retried writes.

A sink is given a whole batch of decoded events and writes it in as few round
trips as it can, keyed by ``event_id`` so that writing the same batch twice
changes nothing.  Transient failures (connection lost, server restarting,
timeouts) are retried forever with capped exponential backoff: the agent
pauses, Kafka keeps the rest, and no offset is committed past events that are
not yet durable.

Only errors that say "this data is wrong" (a constraint, a bad value, a
document the server refuses) are raised, so the caller can isolate and
dead-letter the offending event.  Any other error is retried too: an unknown
failure stalls one agent visibly (logged, counted) rather than losing data.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Optional, Tuple, Type, TypeVar

from ..config import settings
from ..metrics import store_retries

log = logging.getLogger(__name__)
T = TypeVar("T")


def _transient_errors() -> Tuple[Type[BaseException], ...]:
    import asyncpg
    import pymongo.errors
    import redis.exceptions

    return (
        OSError,  # ConnectionError and friends
        asyncio.TimeoutError,
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


def refused(exc: BaseException) -> bool:
    """Whether ``exc`` says the data is wrong (dead-letter it) rather than the store."""
    return isinstance(exc, REFUSED) and not isinstance(exc, TRANSIENT)


async def retrying(store: str, attempt: Callable[[], Awaitable[T]],
                   on_retry: Optional[Callable[[BaseException], Awaitable[None]]] = None) -> T:
    """Run ``attempt`` until it succeeds, backing off on transient errors."""
    delay = settings.retry_initial_s
    failures = 0
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if refused(exc):
                raise
            failures += 1
            store_retries.labels(store=store).inc()
            level = logging.WARNING if isinstance(exc, TRANSIENT) else logging.ERROR
            log.log(level, "%s write failed (%s); retry %d in %.1fs",
                    store, describe_error(exc), failures, delay)
            if on_retry is not None:
                await on_retry(exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, settings.retry_max_s)


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
