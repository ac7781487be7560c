"""What every JSON view shares: the ``ApiView`` base (JSON errors, never a
bare 500), store calls with a timeout (``from_store``: 503 naming the store)
and JSON conversions."""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any, Awaitable, ClassVar, Dict, FrozenSet, Optional

from faust.web import Request, Response, View
from faust.web.exceptions import WebError

from ..connections import redact
from ..stores.errors import STORE_ERRORS
from .auth import refusal, refuse
from .params import BadRequest, check_query

log = logging.getLogger(__name__)

#: How long one request waits for a store before answering 503.
STORE_TIMEOUT_S = 5.0


class NotFound(Exception):
    """The thing asked for does not exist (404)."""


class StoreUnavailable(Exception):
    """A store failed or did not answer in time (503)."""

    def __init__(self, store: str, exc: BaseException) -> None:
        super().__init__(f"{store} unavailable")
        self.store = store
        self.detail = redact(f"{type(exc).__name__}: {exc}")[:300] if str(exc) else type(exc).__name__


async def from_store(store: str, call: Awaitable[Any], timeout: float = STORE_TIMEOUT_S) -> Any:
    """Await a store call; failures and timeouts become ``StoreUnavailable``."""
    try:
        return await asyncio.wait_for(call, timeout)
    except STORE_ERRORS as exc:
        raise StoreUnavailable(store, exc) from exc


def iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def plain(row: Any) -> Dict[str, Any]:  # a Mapping or an asyncpg.Record
    """A database row as JSON-ready values (datetimes as ISO strings)."""
    return {k: iso(v) for k, v in row.items()}


def utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


class ApiView(View):
    """A JSON view whose errors are JSON too: 400, 404, 503, never a bare 500.

    ``personal = True``: the view returns personal data and answers only
    requests with a valid bearer token (``auth.refusal``), checked before
    anything else.  ``params``: the query parameters the view takes; any
    other is a 400 (None: not checked).
    """

    personal: ClassVar[bool] = False
    params: ClassVar[Optional[FrozenSet[str]]] = None

    async def get(self, request: Request, **kwargs: Any) -> Response:
        if self.personal:
            refused = refusal(request)
            if refused is not None:
                return refuse(self, *refused)
        try:
            check_query(request.query_string, request.query, self.params)
            response = await self.handle(request, **kwargs)
        except BadRequest as exc:
            return self.error(400, str(exc))
        except NotFound as exc:
            return self.error(404, str(exc))
        except StoreUnavailable as exc:
            log.warning("%s %s: %s (%s)", request.method,
                        request.path, exc, exc.detail)  # type: ignore[attr-defined]  # aiohttp's Request
            return self.error(503, str(exc), store=exc.store, detail=exc.detail)
        except WebError:
            raise  # Faust answers these itself (e.g. 503 while partitions move)
        except Exception:
            log.exception("%s %s failed", request.method,
                          request.path)  # type: ignore[attr-defined]  # aiohttp's Request
            return self.error(500, "internal error")
        response.headers["Cache-Control"] = "no-store"
        return response

    async def handle(self, request: Request, **kwargs: Any) -> Response:
        raise NotImplementedError
