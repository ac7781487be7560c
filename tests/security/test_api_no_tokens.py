"""A worker started without API tokens keeps personal data closed (403),
whatever a client sends, and still serves the public views."""
from __future__ import annotations

import pytest

from secure_worker import OTHER, VICTIM

pytestmark = pytest.mark.integration

DB_NAME = "streamapp_test_security_open"
REDIS_DB = 11

PERSONAL = (f"/api/users/{VICTIM['user_id']}/", "/api/audit/?size=5", "/api/audit/",
            "/api/audit/search/", "/api/audit/doc/00000000-0000-4000-8000-000000000000/")


@pytest.fixture(scope="module")
def worker_env():
    # The test session sets API_TOKENS for every worker; this one has none.
    return DB_NAME, REDIS_DB, {"API_TOKENS": " , "}


@pytest.mark.parametrize("path", PERSONAL)
@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer "}, {"Authorization": "Bearer anything"},
    {"Authorization": "Bearer ,"}, {"Authorization": "Basic Og=="},
], ids=["none", "empty", "any", "comma", "basic"])
async def test_personal_views_are_403(secure_worker, path, headers):
    reply = await secure_worker.get(path, headers)
    assert reply.status == 403, (path, headers, reply.status, reply.text)
    assert "API_TOKENS" in reply.text
    for secret in (VICTIM["email"], OTHER["email"], VICTIM["display_name"]):
        assert secret not in reply.text


@pytest.mark.parametrize("path", ["/api/leaderboards/", "/api/health/", "/api/stats/",
                                  "/dashboard/", "/", "/metrics", "/audit/", "/api/series/"])
async def test_public_views_stay_open(secure_worker, path):
    reply = await secure_worker.get(path)
    assert reply.status == 200, (path, reply.status, reply.text[:300])
