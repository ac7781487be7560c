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

The classification lives in ``stores.errors``, the policy in
``stores.retry``; ``Store`` is what the PostgreSQL, MongoDB, Redis and audit
stores have in common.
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Optional, Protocol, TypeVar, runtime_checkable

from .errors import REFUSED, STORE_ERRORS, TRANSIENT, classify, describe_error, refused
from .retry import SINKS, RetryPolicy, RetryStopped, retrying

__all__ = ["REFUSED", "STORE_ERRORS", "TRANSIENT", "RetryPolicy", "RetryStopped", "Store",
           "StoreBase", "classify", "describe_error", "refused", "retrying"]

T = TypeVar("T")


@runtime_checkable
class Store(Protocol):
    """A store client: named, connected lazily, pinged by the health view."""

    #: The store's name in metrics, logs, outcomes and the health view.
    name: str
    #: How its writes are retried (``write``).
    retry_policy: RetryPolicy

    async def connect(self) -> None:
        """Open the connection and prepare the schema or indexes."""

    async def ping(self) -> bool:
        """True when the store answers (connects first if needed)."""

    async def close(self) -> None:
        """Close the client; the next use connects again."""

    async def write(self, attempt: Callable[[], Awaitable[T]], *,
                    on_retry: Optional[Callable[[BaseException], Awaitable[None]]] = None,
                    stop: Optional[asyncio.Event] = None) -> T:
        """Run ``attempt`` (a write to this store) under its retry policy."""


class StoreBase:
    """``Store.write`` for the store classes: ``retrying`` under their name and policy."""

    name = "store"
    retry_policy: RetryPolicy = SINKS

    async def write(self, attempt: Callable[[], Awaitable[T]], *,
                    on_retry: Optional[Callable[[BaseException], Awaitable[None]]] = None,
                    stop: Optional[asyncio.Event] = None) -> T:
        return await retrying(self.name, attempt, on_retry, policy=self.retry_policy, stop=stop)
