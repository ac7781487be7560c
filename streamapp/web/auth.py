"""Bearer tokens for the read views that return personal data.

A view that returns anything about a person (profile, e-mail, payments, the
audit trail) sets ``personal = True``; ``views.ApiView`` then calls
``refusal`` before anything else.  The check is here, once:

* no ``Authorization`` header, or not ``Bearer <token>``: 401 with
  ``WWW-Authenticate: Bearer``;
* a token that is none of ``API_TOKENS``: 401 (``error="invalid_token"``);
* ``API_TOKENS`` empty: 403 for every request, so a deployment that forgot
  the setting is closed rather than open.

Tokens are compared with ``hmac.compare_digest`` against every configured
token (no early exit on the first match), so the time taken says nothing
about how much of a token was right or which one matched.  Neither the
header nor a token is ever logged or quoted in our answers; the worker's web server
writes no access log (Faust starts aiohttp with ``access_log=None``), and
``LogRedactor`` keeps them out of aiohttp's error log: a request its HTTP
parser refuses is logged as one line without the bytes the client sent
(aiohttp would quote the offending header line, token included), and
anything else aiohttp logs has bearer tokens replaced.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
from typing import Optional, Sequence

from aiohttp.http_exceptions import HttpProcessingError
from faust.web import Request, Response, View

from ..config import settings

#: The challenge sent with every 401 (RFC 6750).
REALM = 'Bearer realm="streamapp"'


def _matches(presented: bytes, tokens: Sequence[str]) -> bool:
    # Digests of equal length: compare_digest's time then says nothing about
    # a token's length either.
    digest = hashlib.sha256(presented).digest()
    found = False
    for token in tokens:
        # Every token is compared, whatever the earlier results.
        found |= hmac.compare_digest(digest, hashlib.sha256(token.encode("utf-8")).digest())
    return found


def refusal(request: Request, tokens: Optional[Sequence[str]] = None
            ) -> Optional[tuple]:
    """Why ``request`` may not see personal data, or None when it may.

    Returns ``(status, message, headers)`` for the error response.
    """
    tokens = settings.api_tokens if tokens is None else tokens
    if not tokens:
        return (403, "personal data is not served: no API tokens are configured "
                     "(set API_TOKENS)", {})
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        return (401, "authentication required: send Authorization: Bearer <token>",
                {"WWW-Authenticate": REALM})
    try:
        # surrogateescape: any bytes a client sent compare (and fail) as bytes.
        raw = presented.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = b""
    if not raw or not _matches(raw, tokens):
        return (401, "invalid token",
                {"WWW-Authenticate": f'{REALM}, error="invalid_token"'})
    return None


def refuse(view: View, status: int, message: str, headers: dict) -> Response:
    response = view.error(status, message)
    response.headers.update(headers)
    response.headers["Cache-Control"] = "no-store"
    return response


#: ``Bearer <credentials>`` anywhere in a log line (escaped bytes included).
_BEARER = re.compile(r"(?i)(bearer(?:\s|\\t|\\x[0-9a-f]{2})+)[^\s'\"\\]+")


def redact(text: str, tokens: Sequence[str] = ()) -> str:
    for token in tokens:
        text = text.replace(token, "[redacted]")
    return _BEARER.sub(r"\1[redacted]", text)


class LogRedactor(logging.Filter):
    """Keeps tokens out of what aiohttp's loggers write (see the docstring above)."""

    def __init__(self, tokens: Optional[Sequence[str]] = None) -> None:
        super().__init__()
        self.tokens = settings.api_tokens if tokens is None else tuple(tokens)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            self._clean(record)
        except Exception:  # a log filter must never fail the request it logs
            record.msg, record.args = "(log record withheld: it could not be redacted)", ()
            record.exc_info = record.exc_text = None
        return True

    def _clean(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        message = redact(record.getMessage(), self.tokens)
        if isinstance(exc, HttpProcessingError):
            # "Error handling request from <peer>", then the parser's message,
            # which quotes the client's bytes: keep the first, name the second.
            record.msg = "%s: malformed HTTP request refused (%s, HTTP %s)"
            record.args = (message, type(exc).__name__, exc.code)
            record.exc_info = record.exc_text = None
            return
        record.msg, record.args = message, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.tokens)


_redactor = LogRedactor()
for _name in ("aiohttp.server", "aiohttp.access", "aiohttp.web"):
    logging.getLogger(_name).addFilter(_redactor)
