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
from typing import Awaitable, Callable, Tuple, Type, TypeVar

from ..config import settings
from ..connections import redact
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


#: Errors that mean the data itself was refused; never retried.
REFUSED: Tuple[Type[BaseException], ...] = _data_errors()


async def retrying(store: str, attempt: Callable[[], Awaitable[T]],
                   on_retry: Callable[[BaseException], Awaitable[None]] = None) -> T:
    """Run ``attempt`` until it succeeds, backing off on transient errors."""
    delay = settings.retry_initial_s
    failures = 0
    while True:
        try:
            return await attempt()
        except REFUSED:
            raise
        except Exception as exc:
            failures += 1
            store_retries.labels(store=store).inc()
            level = logging.WARNING if isinstance(exc, TRANSIENT) else logging.ERROR
            log.log(level, "%s write failed (%s: %s); retry %d in %.1fs",
                    store, type(exc).__name__, redact(str(exc)), failures, delay)
            if on_retry is not None:
                await on_retry(exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, settings.retry_max_s)
