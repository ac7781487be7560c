"""The read API against a real worker with tokens configured: who gets in,
what a hostile request gets back, and what the worker writes to its log.

Every hostile request must get a 4xx, never a 500 and never a byte of the
seeded people's data (``conftest.VICTIM``, ``conftest.OTHER``).
"""
from __future__ import annotations

import re
import secrets
import urllib.parse

import pytest

from secure_worker import OTHER, VICTIM

pytestmark = pytest.mark.integration

DB_NAME = "streamapp_test_security"
REDIS_DB = 10
TOKEN = secrets.token_urlsafe(32)
#: A second configured token: rotation means both work for a while.
SECOND_TOKEN = secrets.token_hex(24)

#: Views that return personal data, with a request that would return some.
PERSONAL = (f"/api/users/{VICTIM['user_id']}/",
            f"/api/audit/?user_id={VICTIM['user_id']}&size=5",
            f"/api/audit/search/?user_id={VICTIM['user_id']}&size=5",
            "/api/audit/doc/00000000-0000-4000-8000-000000000000/")
#: What must never appear in an answer to a request that should get nothing.
SECRETS = (VICTIM["email"], OTHER["email"], VICTIM["display_name"], OTHER["display_name"],
           "tok_secret")


@pytest.fixture(scope="module")
def worker_env():
    return DB_NAME, REDIS_DB, {"API_TOKENS": f" {TOKEN} , {SECOND_TOKEN},"}


@pytest.fixture(scope="module")
def api(secure_worker):
    return secure_worker


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def assert_no_data(reply) -> None:
    for secret in SECRETS:
        assert secret not in reply.text, (reply.status, reply.text[:300])


# --- authentication ------------------------------------------------------------------

async def test_the_token_opens_personal_views(api):
    """The positive control: the seeded person is there for a valid token."""
    for token in (TOKEN, SECOND_TOKEN):
        reply = await api.get(PERSONAL[0], bearer(token))
        assert reply.status == 200, reply.text
        assert VICTIM["email"] in reply.text and "tok_secret" not in reply.text
        assert reply.headers["Cache-Control"] == "no-store"
    # the scheme is case-insensitive
    reply = await api.get(PERSONAL[1], {"Authorization": f"bearer {TOKEN}"})
    assert reply.status in (200, 503), reply.text  # 503: audit store unreachable


@pytest.mark.parametrize("path", PERSONAL)
async def test_no_token_is_401_with_a_bearer_challenge(api, path):
    for method in ("GET", "HEAD"):
        async with api.http.request(method, api.base + path) as r:
            body = await r.read()
            assert r.status == 401, (method, r.status, body)
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
    reply = await api.get(path)
    assert reply.status == 401 and "error" in reply.text
    assert_no_data(reply)


@pytest.mark.parametrize("authorization", [
    "Bearer wrong-token",
    f"Bearer {TOKEN[:-1]}",                 # one character short
    f"Bearer {TOKEN}x",                     # one character more
    f"Bearer {TOKEN[:-1]}{'A' if TOKEN[-1] != 'A' else 'B'}",  # last character wrong
    f"Bearer {TOKEN},{SECOND_TOKEN}",       # the whole setting is not a token
    f"Bearer {TOKEN.upper()}x",
    f"Basic {TOKEN}",                       # right secret, wrong scheme
    f"{TOKEN}",                             # no scheme
    "Bearer",                               # no token
    "Bearer ",
    "Bearer \u00e9\u00e8",                  # non-ASCII
    "Bearer " + "x" * 4000,
], ids=["wrong", "short", "long", "last-char", "setting", "upper", "basic", "no-scheme",
        "scheme-only", "empty", "non-ascii", "huge"])  # ids without the test token
@pytest.mark.parametrize("path", PERSONAL)
async def test_wrong_token_is_401(api, path, authorization):
    reply = await api.get(path, {"Authorization": authorization})
    assert reply.status == 401, (authorization, reply.status, reply.text)
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert_no_data(reply)


async def test_token_in_the_query_string_is_not_accepted(api):
    for path in (f"/api/users/{VICTIM['user_id']}/?access_token={TOKEN}",
                 f"/api/audit/?token={TOKEN}"):
        reply = await api.get(path)
        assert reply.status == 401, reply.text
        assert_no_data(reply)


@pytest.mark.parametrize("path,expected", [
    ("/api/titles/m00000/", {404}),         # no catalog seeded: public, not found
    ("/api/leaderboards/?board=rated", {200}),
    ("/api/health/", {200}),
    ("/api/stats/", {200}),
    ("/dashboard/", {200}),
    ("/audit/", {200}),                     # the explorer page holds no data
    ("/api/series/", {200}),
    ("/static/chart.umd.min.js", {200}),
    ("/", {200}),
    ("/assignment/", {200}),
    ("/performance/", {200}),
    ("/metrics", {200}),
])
async def test_public_views_need_no_token(api, path, expected):
    reply = await api.get(path)
    assert reply.status in expected, (path, reply.status, reply.text[:300])
    assert_no_data(reply)


@pytest.mark.parametrize("path", ["/table/", "/table/rating-counts/",
                                  "/table/rating-counts/m00000/"])
async def test_faust_table_pages_are_closed(api, path):
    """Faust's /table/ pages would serve table values to anyone: not mounted."""
    for headers in ({}, bearer(TOKEN)):
        reply = await api.get(path, headers)
        assert reply.status == 404, (path, reply.status, reply.text[:300])


async def test_dashboard_polls_public_views_only(api):
    """The dashboard page sends no token, so every view it polls must be public."""
    html = (await api.get("/dashboard/")).text
    paths = set(re.findall(r'"(/api/[a-z]+/)', html))
    assert paths >= {"/api/stats/", "/api/leaderboards/", "/api/health/"}, paths
    for path in paths:
        reply = await api.get(path)
        assert reply.status == 200, (path, reply.status, reply.text[:300])
    assert "Authorization" not in html


async def test_tokens_never_reach_the_log(api):
    """After good, bad and malformed authenticated requests the worker's log
    holds no token, and no Authorization header at all."""
    wrong = secrets.token_urlsafe(32)
    for token in (TOKEN, SECOND_TOKEN, wrong):
        for path in (*PERSONAL, "/api/users/'%20OR%201=1--/", "/api/leaderboards/?n=0",
                     "/api/titles/m00000/", "/api/nothing-here/"):
            await api.get(path, bearer(token))
    # requests aiohttp's parser refuses (and logs), with the token in them
    auth = b"Authorization: Bearer " + TOKEN.encode()
    for target, headers in [
            (b"/api/users/u1/", auth + b"\r\nX-Broken: a\x01b\r\n"),
            (b"/api/users/u1/", auth + b"\x01\r\n"),               # the broken header
            (b"/api/users/u1/", auth + b"a" * 9000 + b"\r\n"),      # too long
            (b"/api/users/u1/", b"authorization: bearer\t" + TOKEN.encode() + b"\x7f\r\n"),
            (b"/api/users/u1/?" + b"a" * 9000, auth + b"\r\n"),
            (b"/api/users/u1/?" + TOKEN.encode() + b"\x01", auth + b"\r\n")]:
        reply = await api.raw_get(target, headers)
        assert reply.status == 400, (target[:40], headers[:40], reply.status)
    assert (await api.get("/api/health/")).status == 200  # the worker is still up
    log = api.log()
    assert "Worker]: Ready" in log  # it is the worker's log
    for secret in (TOKEN, SECOND_TOKEN, wrong):
        assert secret not in log
    assert "Authorization" not in log and "Bearer" not in log


# --- injection through every parameter -------------------------------------------------

#: SQL and MongoDB operator injection, encodings and characters no id has.
PAYLOADS = [
    "' OR 1=1--",
    "' OR '1'='1",
    "u-victim-1' OR 'a'='a",
    "u-victim-1'; DROP TABLE users;--",
    "u-victim-1\" OR \"\"=\"",
    "1 UNION SELECT email, NULL FROM users--",
    "%",
    "u-%",
    "*",
    '{"$gt": ""}',
    '{"$ne": null}',
    '{"$where": "this.email"}',
    "$where",
    "$ne",
    "this.email != ''",
    "[$ne]",
    "u-victim-1\x00",
    "\x00",
    "u-victim-1\n",
    "u-victim-1\r\nX-Injected: 1",
    "u\u0307-victim",                        # combining dot
    "\uff55-victim-1",                       # fullwidth u
    "u-victim-\u0661",                      # Arabic-Indic digit one
    "\u202eu-victim-1",                      # right-to-left override
    "\U0001f600",
    "\ud800",                                # lone surrogate (sent as %ED%A0%80)
    "../../etc/passwd",
    "${7*7}",
    "<script>alert(1)</script>",
    "x" * 65,
]


def encode(value: str) -> str:
    return urllib.parse.quote(value.encode("utf-8", "surrogatepass"), safe="")


#: (template, parameter): every parameter of every view, path and query.
TARGETS = [
    ("/api/users/{}/", "user_id"),
    ("/api/titles/{}/", "movie_id"),
    ("/api/leaderboards/?board={}", "board"),
    ("/api/leaderboards/?board=window&window={}", "window"),
    ("/api/leaderboards/?board=rated&genre={}", "genre"),
    ("/api/leaderboards/?n={}", "n"),
    ("/api/audit/?event_type={}", "event_type"),
    ("/api/audit/?user_id={}", "user_id"),
    ("/api/audit/?kind={}", "kind"),
    ("/api/audit/?since={}", "since"),
    ("/api/audit/?until={}", "until"),
    ("/api/audit/?size={}", "size"),
    ("/api/audit/search/?event_type={}", "event_type"),
    ("/api/audit/search/?user_id={}", "user_id"),
    ("/api/audit/search/?movie_id={}", "movie_id"),
    ("/api/audit/search/?kind={}", "kind"),
    ("/api/audit/search/?status={}", "status"),
    ("/api/audit/search/?since={}", "since"),
    ("/api/audit/search/?until={}", "until"),
    ("/api/audit/search/?interval={}", "interval"),
    ("/api/audit/search/?page={}", "page"),
    ("/api/audit/search/?size={}", "size"),
    ("/api/series/?minutes={}", "minutes"),
]


@pytest.mark.parametrize("template,param", TARGETS, ids=[t[1] + ":" + t[0].split("?")[0]
                                                          for t in TARGETS])
async def test_injection_is_400_without_data(api, template, param):
    failures = []
    for payload in PAYLOADS:
        path = template.format(encode(payload))
        reply = await api.get(path, bearer(TOKEN))
        if reply.status != 400 or any(s in reply.text for s in SECRETS) \
                or not reply.text.startswith('{"error"'):
            failures.append((payload, reply.status, reply.text[:200]))
    assert not failures, failures


@pytest.mark.parametrize("query", [
    "user_id[$ne]=x",
    "user_id[$gt]=",
    "user_id[]=u-victim-1",
    "user_id.$ne=x",
    "$where=1",
    "$or[0][user_id]=u-victim-1",
    "size[$gt]=0",
    "since[$lt]=2100-01-01",
    "kind=event&kind[$ne]=x",
    "user_id=u-victim-1&user_id=u-other-2",     # repeated key
    "size=5&size=100",
    "=x",
    "filter=" + encode('{"user_id": {"$ne": null}}'),
    "q=" + encode("' OR 1=1--"),
])
async def test_operator_style_keys_are_400(api, query):
    for path in ("/api/audit/?", f"/api/users/{VICTIM['user_id']}/?", "/api/titles/m00000/?",
                 "/api/leaderboards/?"):
        reply = await api.get(path + query, bearer(TOKEN))
        assert reply.status == 400, (path + query, reply.status, reply.text[:300])
        assert_no_data(reply)


# --- oversized and hostile query strings ---------------------------------------------------

async def test_oversized_and_hostile_query_strings(api):
    cases = {
        "value over the limit": "/api/audit/?user_id=" + "u" * 300,
        "huge value": "/api/audit/?user_id=" + "u" * 20000,
        "huge value, public view": "/api/leaderboards/?board=" + "r" * 20000,
        "many parameters": "/api/audit/?" + "&".join(f"p{i}=1" for i in range(500)),
        "many repeats": "/api/audit/?" + "&".join("size=5" for _ in range(500)),
        "many empty parameters": "/api/audit/?" + "&" * 5000,
        "many equals": "/api/leaderboards/?n=" + "=" * 5000,
        "percent soup": "/api/audit/?since=" + "%" * 3000,
        "invalid escapes": "/api/audit/?user_id=%zz%0%%%25%u0000",
        "huge path": "/api/users/" + "u" * 20000 + "/",
        "many slashes": "/api/users/" + "/" * 5000,
        "huge key": "/api/audit/?" + "k" * 7000 + "=1",
    }
    failures = {}
    for name, path in cases.items():
        reply = await api.get(path, bearer(TOKEN))
        ok = reply.status in (400, 404, 414) and (reply.status != 404 or "huge path" in name
                                                   or "slashes" in name)
        if not ok or any(s in reply.text for s in SECRETS):
            failures[name] = (reply.status, reply.text[:200])
    assert not failures, failures
    # big headers too
    reply = await api.raw_get(b"/api/users/u-victim-1/",
                              b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                              + b"X-Big: " + b"a" * 20000 + b"\r\n")
    assert reply.status in (400, 431), reply.status
    reply = await api.raw_get(b"/api/users/u-victim-1/", b"Authorization: Bearer " + TOKEN.encode()
                              + b"\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(300)))
    assert reply.status in (200, 400, 431), reply.status
    assert (await api.get("/api/health/")).status == 200  # still serving


# --- path traversal on the dashboard ---------------------------------------------------------

TRAVERSALS = [
    b"/dashboard/../../etc/passwd",
    b"/dashboard/../../../../../../etc/passwd",
    b"/dashboard/..%2f..%2f..%2fetc%2fpasswd",
    b"/dashboard/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    b"/dashboard/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    b"/dashboard/%252e%252e%252f%252e%252e%252fetc%252fpasswd",
    b"/dashboard/..%5c..%5c..%5cetc%5cpasswd",
    b"/dashboard/....//....//....//etc/passwd",
    b"/dashboard/..;/..;/etc/passwd",
    b"/dashboard/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
    b"/dashboard/static/../../../../etc/passwd",
    b"/dashboard/static/dashboard.html",
    b"/dashboard/dashboard.html",
    b"/dashboard/../config.py",
    b"/dashboard/..%2f..%2fconfig.py",
    b"/dashboard/%2e%2e/views.py",
    b"/static/dashboard.html",
    b"/static/../../etc/passwd",
    b"/..%2f..%2f..%2f..%2fetc%2fpasswd",
    b"/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    b"/../../../../etc/passwd",
    b"/etc/passwd",
    b"/dashboard/%00../../etc/passwd",
    b"/dashboard/?file=../../etc/passwd",
    b"//etc/passwd",
    b"/api/../../etc/passwd",
]


@pytest.mark.parametrize("target", TRAVERSALS, ids=[t.decode() for t in TRAVERSALS])
async def test_path_traversal_gets_no_file(api, target):
    reply = await api.raw_get(target)
    if target == b"/dashboard/?file=../../etc/passwd":
        # the page ignores query strings: the dashboard itself, nothing else
        assert reply.status == 200 and b"<!doctype html>" in reply.body
    else:
        assert reply.status in (400, 404), (target, reply.status, reply.body[:200])
    assert b"root:" not in reply.body
    assert b"import " not in reply.body and b"def " not in reply.body
