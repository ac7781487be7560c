"""The dashboard's charts and the audit explorer in a real headless Chromium,
against a real worker (S3 inside it) and the real OpenSearch, while the
simulator feeds it.

Assertions read the charts' own data (``window.dashboardCharts``,
``window.auditExplorer``: the Chart.js instances and the last answers), not
just that a canvas exists.  Screenshots go to ``test-artifacts/`` (not
committed) for a person to look at.
"""
from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import pytest
from test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, free_port, start_simulator, stop

from harness import ROOT, Worker, api_headers, isolated_env, reset_stores

pytestmark = pytest.mark.integration

DB_NAME = "streamapp_test_audit_browser"
REDIS_DB = 13
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
async def live(tmp_path_factory):
    """A worker sampling its series every second, fed 4,000 events over 10 s."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian package 'chromium')")
    env = isolated_env(database=DB_NAME, redis_db=REDIS_DB)
    env["SERIES_SAMPLE_S"] = "1"
    await reset_stores(env)
    port = free_port()
    tmp = tmp_path_factory.mktemp("audit-browser")
    worker = Worker(env, tmp / "worker.log", port=port)
    simulator = None
    try:
        worker.start()
        await asyncio.to_thread(worker.wait_ready, 60)
        simulator = start_simulator(env, tmp / "simulator.log")
        yield env, f"http://127.0.0.1:{port}", worker, simulator
    finally:
        if simulator is not None:
            stop(simulator)
        worker.stop()
        shutil.rmtree(env["STREAMAPP_DATA_DIR"], ignore_errors=True)


@pytest.fixture
async def browser():
    from playwright.async_api import async_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


#: The data of each dataset of a chart: ``{label: [y, ...]}``.
CHART_DATA = """(name) => {
  const c = window.dashboardCharts && window.dashboardCharts[name];
  if (!c) return null;
  const out = {};
  for (const d of c.data.datasets) out[d.label] = d.data.map((p) => (p && typeof p === 'object') ? p.y : p);
  return {labels: c.data.labels || null, data: out};
}"""


async def test_dashboard_charts_hold_live_data(live, browser):
    env, base, worker, simulator = live
    page = await browser.new_page(viewport={"width": 1400, "height": 1300})
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    assert (await page.goto(base + "/dashboard/")).status == 200

    # events/s per topic: a rate above zero for the ratings topic, from the
    # deployment's committed offsets sampled into Redis
    await page.wait_for_function(
        "() => { const c = window.dashboardCharts?.rates; if (!c) return false;"
        " const d = c.data.datasets.find((d) => d.label === 'ratings');"
        " return d && d.data.some((p) => p.y > 0); }", timeout=40_000)
    rates = await page.evaluate(CHART_DATA, "rates")
    assert set(rates["data"]) == {"users", "subscriptions", "payments", "preferences",
                                  "ratings", "sessions", "catalog"}
    assert max(y for y in rates["data"]["sessions"] if y is not None) > 0
    assert len(rates["data"]["ratings"]) >= 3

    # consumer lag and store latency: one value per sample, latencies real numbers
    lag = await page.evaluate(CHART_DATA, "lag")
    assert set(lag["data"]) == set(rates["data"])
    assert all(len(v) == len(rates["data"]["ratings"]) for v in lag["data"].values())
    assert all(y is not None and y >= 0 for v in lag["data"].values() for y in v)
    latency = await page.evaluate(CHART_DATA, "latency")
    assert set(latency["data"]) >= {"postgres", "mongodb", "redis"}
    for store in ("postgres", "mongodb", "redis"):
        values = [y for y in latency["data"][store] if y is not None]
        assert values and all(0 < y < 5000 for y in values), (store, values)

    # the rating windows as bars: ratings per 1-minute window, from the boards
    # the rating tables mirror into Redis
    await page.wait_for_function(
        "() => { const c = window.dashboardCharts?.windows;"
        " return c && c.data.labels.length > 0 && c.data.datasets[0].data.some((n) => n > 0); }",
        timeout=30_000)
    windows = await page.evaluate(CHART_DATA, "windows")
    assert all(re.fullmatch(r"\d\d:\d\d", label) for label in windows["labels"])
    assert 0 < sum(windows["data"]["ratings"]) <= 4000

    # still live: more samples a few seconds later
    before = len(rates["data"]["ratings"])
    await asyncio.sleep(4)
    after = await page.evaluate(CHART_DATA, "rates")
    assert len(after["data"]["ratings"]) > before

    await page.screenshot(path=str(ARTIFACTS / "dashboard-charts.png"), full_page=True)
    # the dashboard links to the explorer, and titles to their audit trail
    assert await page.get_by_test_id("audit-link").get_attribute("href") == "/audit/"
    link = page.locator("[data-testid=board-watched] a").first
    await link.wait_for(timeout=10_000)
    assert (await link.get_attribute("href")).startswith("/audit/?movie_id=m")
    assert not await page.get_by_test_id("error").is_visible()
    assert not errors, errors


async def test_explorer_shows_documents_histogram_and_outcomes(live, browser):
    env, base, worker, simulator = live
    await asyncio.to_thread(simulator.wait, 60)  # all 4,000 events produced
    page = await browser.new_page(viewport={"width": 1500, "height": 1100})
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    assert (await page.goto(base + "/audit/")).status == 200
    assert await page.title() == "streamapp audit explorer"
    # without a token the page says what it needs and shows nothing
    await page.get_by_test_id("message").wait_for(timeout=10_000)
    assert "token" in await page.get_by_test_id("message").inner_text()
    assert await page.locator("[data-testid=hit]").count() == 0

    token = api_headers(env)["Authorization"].split(" ", 1)[1]
    await page.get_by_test_id("token").fill(token)
    await page.get_by_test_id("token-use").click()
    # documents (searching again while S3 catches up), and a histogram whose
    # bars add up to the total
    for _ in range(30):
        await page.wait_for_function("() => window.auditExplorer.lastSearch", timeout=15_000)
        if await page.evaluate("() => window.auditExplorer.lastSearch.total > 5000"):
            break
        await asyncio.sleep(2)
        await page.get_by_test_id("search").click()
    await page.wait_for_function(
        "() => { const s = window.auditExplorer; return s.lastSearch.total > 5000"
        " && s.histogram && s.histogram.data.datasets.length > 3; }", timeout=15_000)
    state = await page.evaluate("""() => {
      const s = window.auditExplorer, h = s.histogram;
      return {total: s.lastSearch.total,
              bars: h.data.datasets.reduce((n, d) => n + d.data.reduce((a, b) => a + b, 0), 0),
              buckets: h.data.labels.length,
              types: h.data.datasets.map((d) => d.label)};
    }""")
    assert state["bars"] == state["total"] and state["buckets"] >= 15
    assert {"rating.submitted", "session.started", "title.upserted"} <= set(state["types"])
    assert await page.locator("[data-testid=hit]").count() == 20
    assert "of" in await page.get_by_test_id("page").inner_text()
    await page.screenshot(path=str(ARTIFACTS / "audit-explorer.png"), full_page=True)

    # paging: the next page holds other documents
    first = await page.locator("[data-testid=hit]").first.get_attribute("data-id")
    await page.get_by_test_id("next").click()
    await page.wait_for_function("() => window.auditExplorer.lastSearch.page === 2")
    assert await page.locator("[data-testid=hit]").first.get_attribute("data-id") != first

    # filter to sign-ups, open one: masked payload and its processing outcome
    await page.select_option("#event_type", "user.registered")
    await page.select_option("#kind", "event")
    await page.get_by_test_id("search").click()
    await page.wait_for_function(
        "() => { const s = window.auditExplorer.lastSearch; return s.page === 1 && s.hits.length"
        " && s.hits.every((h) => h.event_type === 'user.registered'); }", timeout=15_000)
    assert "event_type=user.registered" in page.url
    await page.locator("[data-testid=hit]").first.click()
    # the page looks again while the newest event's outcome is being indexed
    await page.locator("[data-testid=outcome]").first.wait_for(timeout=60_000)
    outcome = await page.locator("[data-testid=outcome]").first.inner_text()
    assert "stored" in outcome and "postgres" in outcome
    payload = await page.get_by_test_id("payload").inner_text()
    assert '"email": "***"' in payload and "@" not in payload
    doc = await page.evaluate("() => window.auditExplorer.lastDoc")
    assert doc["doc"]["doc_kind"] == "event"
    assert doc["outcomes"][0]["event_id"] == doc["doc"]["event_id"]
    assert "doc=" in page.url
    await page.screenshot(path=str(ARTIFACTS / "audit-document.png"), full_page=True)

    # the outcome links back to its event
    await page.locator("[data-testid=outcome] a").first.click()
    await page.get_by_test_id("event-link").wait_for(timeout=10_000)
    assert not await page.get_by_test_id("message").is_visible()
    assert not errors, errors
    assert worker.proc.poll() is None, worker.tail()
