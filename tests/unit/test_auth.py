"""The bearer-token check and the log redaction, without a server."""
from __future__ import annotations

import logging

from aiohttp.http_exceptions import BadHttpMessage
from multidict import CIMultiDict

from streamapp.web.auth import LogRedactor, redact, refusal

TOKENS = ("first-token-0123456789", "second-token-abcdefghij")


class Request:
    def __init__(self, authorization=None):
        self.headers = CIMultiDict({} if authorization is None
                                   else {"Authorization": authorization})


def test_a_configured_token_passes():
    for token in TOKENS:
        assert refusal(Request(f"Bearer {token}"), TOKENS) is None
        assert refusal(Request(f"bearer   {token}  "), TOKENS) is None


def test_missing_or_wrong_tokens_are_401_with_a_challenge():
    for header in (None, "", "Bearer", "Bearer ", f"Basic {TOKENS[0]}", TOKENS[0],
                   f"Bearer {TOKENS[0][:-1]}", f"Bearer {TOKENS[0]}x",
                   f"Bearer {','.join(TOKENS)}", "Bearer \udcff\udcfe", "Bearer \ud800"):
        status, message, headers = refusal(Request(header), TOKENS)
        assert status == 401, header
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert TOKENS[0] not in message


def test_no_configured_tokens_is_403_whatever_is_sent():
    for header in (None, "Bearer ", f"Bearer {TOKENS[0]}"):
        status, message, _ = refusal(Request(header), ())
        assert status == 403 and "API_TOKENS" in message


def test_redact_bearer_values_and_configured_tokens():
    line = f"b'Authorization: Bearer {TOKENS[0]}\\x01' and {TOKENS[1]} in a URL"
    cleaned = redact(line, TOKENS)
    assert TOKENS[0] not in cleaned and TOKENS[1] not in cleaned
    assert "Bearer [redacted]" in cleaned
    assert redact("bearer\\tsecret-value", ()) == "bearer\\t[redacted]"


def record(msg, args=(), exc=None):
    return logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, msg, args,
                             (type(exc), exc, None) if exc else None)


def test_parser_errors_are_logged_without_the_client_bytes():
    exc = BadHttpMessage(f"Invalid header value char: b'Authorization: Bearer {TOKENS[0]}\\x01'")
    rec = record("Error handling request from %s", ("127.0.0.1",), exc)
    assert LogRedactor(TOKENS).filter(rec)
    text = logging.Formatter().format(rec)
    assert TOKENS[0] not in text and "Authorization" not in text
    assert "127.0.0.1" in text and "BadHttpMessage" in text


def test_other_records_are_redacted_and_never_raise():
    rec = record("handler failed for %s", (f"Bearer {TOKENS[0]}",), ValueError(TOKENS[0]))
    LogRedactor(TOKENS).filter(rec)
    assert TOKENS[0] not in logging.Formatter().format(rec)
    broken = record("%s %s", ("only one",))  # a bad format must not fail the request
    assert LogRedactor(TOKENS).filter(broken)
    assert "withheld" in broken.getMessage()
