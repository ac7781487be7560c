"""One store contract: every store implements ``Store``; one classification
and one retry loop serve the sinks and the audit trail alike."""
import asyncio

import asyncpg
import pytest
import redis.exceptions
from opensearchpy.exceptions import ConnectionError as SearchConnectionError
from opensearchpy.exceptions import TransportError

from streamapp.stores import stores
from streamapp.stores.audit import AuditBusy
from streamapp.stores.base import Store
from streamapp.stores.errors import classify
from streamapp.stores.retry import RetryPolicy, RetryStopped, retrying

FAST = RetryPolicy(0.001, 0.002)


def test_every_store_implements_the_contract_under_its_own_name():
    names = [store.name for store in stores.all()]
    assert names == ["postgres", "mongodb", "redis", "audit"]
    assert all(isinstance(store, Store) for store in stores.all())
    assert [store.name for store in stores.required()] == ["postgres", "mongodb", "redis"]
    # the audit trail crashes on a bug instead of retrying it; the sinks retry
    assert not stores.audit.retry_policy.retry_unknown
    assert all(store.retry_policy.retry_unknown for store in stores.required())


@pytest.mark.parametrize("exc,kind", [
    (asyncpg.UniqueViolationError("dup"), "refused"),
    (asyncpg.CannotConnectNowError("starting"), "transient"),
    (redis.exceptions.ResponseError("WRONGTYPE"), "refused"),
    (redis.exceptions.TryAgainError("slot moving"), "transient"),  # a ResponseError too
    (ConnectionResetError(104, "reset"), "transient"),
    (TransportError(400, "mapper_parsing_exception"), "refused"),
    (TransportError(429, "too many requests"), "transient"),
    (TransportError(503, "unavailable"), "transient"),
    (SearchConnectionError("N/A", "refused"), "transient"),
    (AuditBusy("3 of 10 documents not taken"), "transient"),
    (TypeError("a bug"), "unknown"),
])
def test_an_error_has_one_kind_for_every_caller(exc, kind):
    assert classify(exc) == kind


def _failing(*errors):
    """An attempt that raises ``errors`` in turn, then returns how many it raised."""
    calls = []

    async def attempt():
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return len(calls) - 1
    return attempt


async def test_transient_and_unknown_errors_are_retried_for_the_sinks():
    seen = []

    async def on_retry(exc):
        seen.append(type(exc).__name__)
    attempt = _failing(ConnectionResetError(104, "reset"), TypeError("unknown"))
    assert await retrying("test", attempt, on_retry, policy=FAST) == 2
    assert seen == ["ConnectionResetError", "TypeError"]


async def test_refused_data_is_raised_at_once():
    attempt = _failing(asyncpg.UniqueViolationError("dup"))
    with pytest.raises(asyncpg.UniqueViolationError):
        await retrying("test", attempt, policy=FAST)


async def test_the_audit_policy_raises_unknown_errors_and_stops_when_told():
    audit = RetryPolicy(0.001, 0.002, retry_unknown=False)
    assert await retrying("audit", _failing(AuditBusy("busy")), policy=audit) == 1
    with pytest.raises(TypeError):
        await retrying("audit", _failing(TypeError("a bug")), policy=audit)
    stop = asyncio.Event()
    stop.set()
    with pytest.raises(RetryStopped):
        await retrying("audit", _failing(TransportError(503, "down")), policy=audit, stop=stop)
