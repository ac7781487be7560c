"""The database tools (scripts/tools.py) in a real headless Chromium, each
showing streamapp's data: the pipeline (a real worker fed by the simulator)
fills PostgreSQL, MongoDB (FerretDB) and Redis, then pgAdmin shows the
``users`` table and its row count, mongo-express the ``movies`` collection
and its documents, redis-commander the keys under the app's prefix and a
leaderboard.

The tools install themselves on first use into .stack/tools (pgAdmin from
PyPI, the npm packages from the committed lockfile: about a minute, then
cached). Skipped without /usr/bin/chromium or Node.js. A screenshot of each
tool goes to test-artifacts/db-tools/ (git ignores it).
"""
from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import pytest
from test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS

from harness import ROOT, Worker, free_port, isolated_env, reset_stores, scripts_module, simulate, url_path, wait_until

pytestmark = pytest.mark.integration

#: The database name before ``isolated_env`` adds the session tag.
DB_NAME = "streamapp_test_tools"
REDIS_DB = 12
ARTIFACTS = ROOT / "test-artifacts" / "db-tools"
VIEWPORT = {"width": 1400, "height": 900}


async def seed(env, log: Path) -> dict:
    """Run the pipeline: a worker, the simulator to completion, until the
    stores hold what the worker writes (users rows, movies, leaderboards)."""
    import asyncpg
    import redis.asyncio as aioredis
    from pymongo import AsyncMongoClient

    await reset_stores(env)
    worker = Worker(env, log, port=free_port())
    try:
        worker.start()
        await asyncio.to_thread(worker.wait_ready, 90)
        summary = await asyncio.to_thread(
            simulate, env, "--count", "1500", "--rate", "1000", "--seed", "21",
            summary=log.parent / "summary.json")
        expected = summary["expect"]
        pg = await asyncpg.connect(env["POSTGRES_DSN"])
        mongo = AsyncMongoClient(env["MONGODB_URL"])
        r = aioredis.Redis.from_url(env["REDIS_URL"], decode_responses=True)
        movies = mongo.get_default_database()["movies"]
        prefix = env.get("REDIS_KEY_PREFIX", "sa:")

        async def stored():
            users = await pg.fetchval("SELECT count(*) FROM users") if await pg.fetchval(
                "SELECT to_regclass('users') IS NOT NULL") else 0
            return (users == expected["postgres"]["users"]
                    and await movies.count_documents({}) > 0
                    and await r.exists(prefix + "lb:watched")) and {
                "users": users, "movies": await movies.count_documents({}),
                "watched": await r.zrevrange(prefix + "lb:watched", 0, 0),
                "prefix": prefix}

        try:
            seeded = await wait_until(stored, timeout=60)
            assert seeded, f"the pipeline did not fill the stores: {worker.tail()}"
        finally:
            await pg.close()
            await mongo.close()
            await r.aclose()
        return seeded
    finally:
        worker.stop()
        shutil.rmtree(env["STREAMAPP_DATA_DIR"], ignore_errors=True)


@pytest.fixture(scope="module")
async def db_tools(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian package 'chromium')")
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("Node.js and npm are not installed (mongo-express, redis-commander)")
    tools = scripts_module("tools")
    await asyncio.to_thread(tools.install)  # cached after the first run
    env = isolated_env(database=DB_NAME, redis_db=REDIS_DB)
    state = tmp_path_factory.mktemp("db-tools")
    seeded = await seed(env, state / "worker.log")
    ports = {name: free_port() for name in tools.TOOL_CLASSES}
    started = tools.tools(state=state, env=env, ports=ports)
    try:
        await asyncio.to_thread(tools.start_all, started)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        yield {tool.name: tool for tool in started}, {**seeded, "env": env,
                                                       "database": url_path(env["POSTGRES_DSN"])}
    finally:
        await asyncio.to_thread(tools.stop_all, started)
    for tool in started:
        assert tool.pid() is None, f"{tool.name} still running"


@pytest.fixture
async def browser():
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def test_pgadmin_shows_the_users_table(db_tools, browser):
    tools, seeded = db_tools
    pgadmin = tools["pgadmin"]
    page = await browser.new_page(viewport=VIEWPORT)
    try:
        await page.goto(pgadmin.url)
        await page.locator("input[name=email]").fill(pgadmin.creds["email"])
        await page.locator("input[name=password]").fill(pgadmin.creds["password"])
        await page.get_by_role("button", name="Login").click()

        def node(depth: int, name: str):
            return page.locator(f'.file-entry[data-depth="{depth}"]'
                                f':has(.file-name:text-is("{name}"))').first

        async def expand(depth: int, name: str) -> None:
            """Open a tree node unless pgAdmin already did (it restores and
            auto-opens some), until a child shows."""
            toggle = node(depth, name).locator(".directory-toggle")
            child = page.locator(f'.file-entry[data-depth="{depth + 1}"]').first
            for _ in range(5):  # pgAdmin loads each level lazily; slow on a busy machine
                await toggle.wait_for(timeout=30_000)
                if "open" not in (await toggle.get_attribute("class") or ""):
                    await toggle.click()
                try:
                    await child.wait_for(timeout=20_000)
                    return
                except Exception:
                    # Open without children: the lazy load failed (seen on a
                    # busy machine: the server connected, its node open and
                    # empty).  Close it, so that the next try loads it again.
                    if "open" in (await toggle.get_attribute("class") or ""):
                        await toggle.click()
                    continue
            await page.screenshot(path=ARTIFACTS / "pgadmin-failed.png")
            dialogs = await page.locator('[role="dialog"], .modal').all_inner_texts()
            raise AssertionError(f"pgAdmin's tree did not open {name}; dialogs: {dialogs}; "
                                 f"tree: {await page.locator('.file-name').all_inner_texts()}")

        # Servers > streamapp (pre-registered) > Databases > the app's database > ...
        for depth, name in enumerate(["Servers", "streamapp", "Databases", seeded["database"],
                                      "Schemas", "public", "Tables"], 1):
            await expand(depth, name)
        users = node(8, "users")
        await users.wait_for(timeout=30_000)
        tables = await page.locator('.file-entry[data-depth="8"] .file-name').all_inner_texts()
        assert {"users", "ratings", "payments", "subscriptions"} <= set(tables), tables

        # The table's statistics: its live rows are the users the pipeline wrote.
        await users.click()
        await page.get_by_role("tab", name="Statistics").first.click()
        live = page.locator('.pgrt-row-content:has(.pgrd-row-cell[title="Live tuples"])'
                            ' .pgrd-row-cell').nth(1)
        await live.wait_for(timeout=20_000)
        await page.screenshot(path=ARTIFACTS / "pgadmin.png")
        assert int(await live.inner_text()) == seeded["users"] > 0
    finally:
        await page.close()


async def test_mongo_express_shows_the_movies(db_tools, browser):
    tools, seeded = db_tools
    me = tools["mongo-express"]
    context = await browser.new_context(
        viewport=VIEWPORT, http_credentials={"username": me.creds["user"],
                                             "password": me.creds["password"]})
    try:
        page = await context.new_page()
        response = await page.goto(me.url + f"db/{seeded['database']}/")
        assert response.status == 200
        collections = await page.locator("table a[href*='/db/']").all_inner_texts()
        assert "movies" in [c.strip() for c in collections], collections

        response = await page.goto(me.url + f"db/{seeded['database']}/movies")
        assert response.status == 200
        await page.get_by_text("Viewing Collection: movies").wait_for()
        # "Delete all N documents retrieved": N is the collection's size.
        banner = await page.get_by_text(re.compile(r"Delete all \d+ documents")).inner_text()
        assert int(re.search(r"\d+", banner).group()) == seeded["movies"], banner
        ids = await page.locator("table tbody tr td:first-child").all_inner_texts()
        assert any(re.search(r"m\d{5}", text) for text in ids), ids[:3]
        await page.screenshot(path=ARTIFACTS / "mongo-express.png")

        assert me.request("/", auth=False)[0] == 401  # no login, no data
    finally:
        await context.close()


async def _sign_in(page, creds) -> None:
    await page.locator("#signinUsername").fill(creds["user"])
    await page.locator("#signinPassword").fill(creds["password"])
    await page.get_by_role("button", name="Sign In").click()


async def _key_tree_shown(page, creds, attempts: int = 4) -> None:
    """Wait for redis-commander's key tree; reload when it stays empty.

    Its tree is filled by an XHR after sign-in, which on a busy machine
    sometimes never comes back (CI saw 20 s go by with the tree empty);
    a reload asks again.
    """
    root = page.locator("#keyTree li[aria-level], #keyTree li").first
    for attempt in range(attempts):
        try:
            await root.wait_for(timeout=20_000)
            return
        except Exception:
            if attempt == attempts - 1:
                raise
            await page.reload()
            if await page.locator("#signinUsername").is_visible():
                await _sign_in(page, creds)


async def test_redis_commander_shows_the_prefixed_keys(db_tools, browser):
    tools, seeded = db_tools
    rc = tools["redis-commander"]
    prefix = seeded["prefix"]
    page = await browser.new_page(viewport=VIEWPORT)
    try:
        await page.goto(rc.url)
        await _sign_in(page, rc.creds)
        await _key_tree_shown(page, rc.creds)
        # The prefix is "sa:<run tag>:": open the folders above it ("sa:").
        parts = prefix.split(":")[:-1]
        for depth in range(1, len(parts)):
            item = page.locator(f'#keyTree li[id$=":{":".join(parts[:depth])}:"]')
            await item.locator("> i.jstree-ocl").click()
            await item.locator("li").first.wait_for(timeout=20_000)
        folder = page.locator(f'#keyTree li[id$=":{prefix}"] > a.jstree-anchor')
        await folder.wait_for(timeout=20_000)
        # "sa:* (N)": the keys under the app's prefix. Nothing writes now, but
        # keys with a TTL may expire while the page loads.
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(seeded["env"]["REDIS_URL"])
        try:
            before = len([k async for k in r.scan_iter(match=prefix + "*", count=1000)])
            shown = int(re.search(r"\((\d+)\)", await folder.inner_text()).group(1))
            after = len([k async for k in r.scan_iter(match=prefix + "*", count=1000)])
        finally:
            await r.aclose()
        assert after <= shown <= before and shown > 0, (shown, before, after)

        # sa: > lb: > watched, the most-watched leaderboard.
        for name in (prefix, f"{prefix}lb:"):
            item = page.locator(f'#keyTree li[id$=":{name}"]')
            await item.locator("> i.jstree-ocl").click()
            await item.locator("li").first.wait_for(timeout=20_000)
        await page.locator(f'#keyTree li[id$=":{prefix}lb:watched"] > a').click()
        body = page.locator("#body")
        await body.get_by_text(f"{prefix}lb:watched").first.wait_for(timeout=20_000)
        top = seeded["watched"][0]
        await body.get_by_text(top).first.wait_for(timeout=20_000)
        await page.screenshot(path=ARTIFACTS / "redis-commander.png")
    finally:
        await page.close()
