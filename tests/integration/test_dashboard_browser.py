"""The dashboard in a real headless Chromium, against a real worker while the
simulator feeds it at a steady rate: the counters move, leaderboards fill,
store health shows.

Uses the Debian ``chromium`` package through Playwright's ``executable_path``
(no browser download); skipped when it is not installed.
"""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

from harness import ROOT, Worker, isolated_env, reset_stores

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
DB_NAME = "streamapp_test_dashboard"
REDIS_DB = 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



@pytest.fixture(scope="module")
async def dashboard_worker(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian package 'chromium')")
    env = isolated_env(database=DB_NAME, redis_db=REDIS_DB)
    await reset_stores(env)
    port = free_port()
    worker = Worker(env, tmp_path_factory.mktemp("dashboard") / "worker.log", port=port)
    try:
        worker.start()
        await asyncio.to_thread(worker.wait_ready, 60)
        yield env, f"http://127.0.0.1:{port}", worker
    finally:
        worker.stop()
        shutil.rmtree(env["STREAMAPP_DATA_DIR"], ignore_errors=True)


def start_simulator(env: Dict[str, str], log: Path) -> subprocess.Popen:
    """The simulator at a steady 400 events/s for 10 s, in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "streamapp.simulator", "--quiet", "--count", "4000",
         "--rate", "400", "--seed", "12"],
        cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
        stderr=open(log, "wb"), start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)


async def number(page, testid: str) -> float:
    text = await page.get_by_test_id(testid).inner_text()
    digits = re.sub(r"[^0-9.]", "", text)
    return float(digits) if digits else 0.0


async def test_dashboard_shows_live_numbers(dashboard_worker, tmp_path):
    from playwright.async_api import async_playwright

    env, base, worker = dashboard_worker
    page_errors = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        simulator = None
        try:
            page = await browser.new_page()
            page.on("pageerror", lambda exc: page_errors.append(str(exc)))
            response = await page.goto(base + "/dashboard/")
            assert response.status == 200
            assert await page.title() == "streamapp dashboard"

            simulator = start_simulator(env, tmp_path / "simulator.log")
            # the first events arrive, then the total keeps growing while it runs
            await page.wait_for_function(
                "() => /[1-9]/.test(document.querySelector('[data-testid=events-total]')"
                ".textContent)", timeout=20_000)
            first = await number(page, "events-total")
            # The total is what the group committed: it moves when the worker
            # commits (every 2.8 s) and the page polls (every 2 s) after that,
            # so a fixed 4.5 s wait missed the next commit now and then.
            await page.wait_for_function(
                "(first) => parseFloat(document.querySelector('[data-testid=events-total]')"
                ".textContent.replace(/[^0-9.]/g, '')) > first", arg=first, timeout=20_000)
            second = await number(page, "events-total")
            assert second > first > 0

            # events per second per topic, from consecutive samples
            await page.wait_for_function(
                "() => parseFloat(document.querySelector('[data-testid=rate-ratings]')"
                "?.textContent || '0') > 0", timeout=15_000)
            assert await number(page, "rate-sessions") >= 0

            # leaderboards fill from Redis (mirrored from the tables)
            await page.get_by_test_id("board-watched-row").first.wait_for(timeout=20_000)
            await page.get_by_test_id("board-best-row").first.wait_for(timeout=20_000)
            row = await page.get_by_test_id("board-watched-row").first.inner_text()
            assert re.search(r"m\d{5}", row), row

            # store health
            for store in ("postgres", "mongodb", "redis"):
                await page.wait_for_function(
                    f"() => document.querySelector('[data-testid=health-{store}]')"
                    ".textContent === 'up'", timeout=10_000)
            assert await page.get_by_test_id("health-status").text_content() == "ok"
            assert await number(page, "now-watching") > 0
            assert await number(page, "workers") == 1  # the deployment's, from heartbeats
            assert not await page.get_by_test_id("error").is_visible()
        finally:
            if simulator is not None:
                stop(simulator)
            await browser.close()
    assert not page_errors, page_errors
    assert worker.proc.poll() is None, worker.tail()
