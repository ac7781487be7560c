"""One retry policy for every store write: capped exponential backoff.

``retrying`` runs a write until it succeeds.  What it does with a failure
depends on the error's class (``stores.errors.classify``):

* refused (the data is wrong): raised at once, for the caller to isolate;
* transient (the store is away): retried, logged as a warning;
* unknown: retried and logged as an error (``retry_unknown``, the sinks: an
  unknown failure stalls one agent visibly rather than losing data), or
  raised (the audit trail, which crashes loudly on a bug).

Every retry is counted in ``streamapp_store_retries_total{store}``.  With a
``stop`` event, waiting between attempts ends early when it is set
(``RetryStopped``): the audit consumer stops without committing.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Awaitable, Callable, Optional, TypeVar

from ..config import Settings, settings
from ..metrics import store_retries
from .errors import REFUSED_KIND, TRANSIENT_KIND, UNKNOWN_KIND, classify, describe_error

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff bounds (None: ``RETRY_INITIAL_S``/``RETRY_MAX_S`` when retrying)
    and whether errors of unknown kind are retried or raised."""

    initial_s: Optional[float] = None
    max_s: Optional[float] = None
    retry_unknown: bool = True

    @classmethod
    def of(cls, cfg: Settings, retry_unknown: bool = True) -> RetryPolicy:
        return cls(cfg.retry_initial_s, cfg.retry_max_s, retry_unknown)


#: The sinks' policy: retry everything but refused data.
SINKS = RetryPolicy()


class RetryStopped(Exception):
    """The ``stop`` event was set while a write waited for its next attempt."""


async def retrying(store: str, attempt: Callable[[], Awaitable[T]],
                   on_retry: Optional[Callable[[BaseException], Awaitable[None]]] = None, *,
                   policy: RetryPolicy = SINKS, stop: Optional[asyncio.Event] = None) -> T:
    """Run ``attempt`` until it succeeds, backing off on failures worth retrying."""
    delay = settings.retry_initial_s if policy.initial_s is None else policy.initial_s
    max_s = settings.retry_max_s if policy.max_s is None else policy.max_s
    failures = 0
    while True:
        try:
            return await attempt()
        except Exception as exc:
            kind = classify(exc)
            if kind == REFUSED_KIND or (kind == UNKNOWN_KIND and not policy.retry_unknown):
                raise
            failures += 1
            store_retries.labels(store=store).inc()
            level = logging.WARNING if kind == TRANSIENT_KIND else logging.ERROR
            log.log(level, "%s write failed (%s); retry %d in %.1fs",
                    store, describe_error(exc), failures, delay)
            if on_retry is not None:
                await on_retry(exc)
            if stop is None:
                await asyncio.sleep(delay)
            else:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except TimeoutError:
                    pass
                else:
                    raise RetryStopped(store) from exc
            delay = min(delay * 2, max_s)
