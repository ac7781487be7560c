"""The dashboard's series sampling on the real Redis, PostgreSQL, MongoDB and
search store: however many workers sample, one takes each slot."""
from __future__ import annotations

import json

import pytest

from streamapp.series import Series

pytestmark = pytest.mark.integration


async def test_one_sample_per_slot_whatever_the_number_of_workers():
    """Two workers' samplers on the real Redis: one takes each slot, the list
    keeps the last SERIES_KEEP_S worth."""
    from harness import isolated_env, settings_for, stores_for
    from streamapp.deployment import Deployment

    env = isolated_env(redis_db=1)
    env["REDIS_KEY_PREFIX"] = f"{env['TOPIC_PREFIX']}:"
    cfg = settings_for({**env, "SERIES_SAMPLE_S": "5", "SERIES_KEEP_S": "20"})
    stores = stores_for({**env})
    deployment = Deployment(cfg, stores, cfg.app_id)
    a, b = Series(cfg, stores, deployment), Series(cfg, stores, deployment)
    try:
        now = 1_800_000_000.0
        taken = []
        for i in range(8):  # 8 slots, both workers twice per slot
            for t in (now + i * 5, now + i * 5 + 2.5):
                taken += [await a.maybe_sample("w1", t), await b.maybe_sample("w2", t)]
        assert sum(taken) == 8
        kept = await stores.redis.client.lrange(a.key, 0, -1)
        assert len(kept) == a.keep == 4
        sample = json.loads(kept[-1])
        assert sample["at"] == now + 35
        assert set(sample["latency_ms"]) >= {"postgres", "mongodb", "redis"}
        assert all(v is None or v > 0 for v in sample["latency_ms"].values())
        assert sample["windows"] == {str(int(now + 35) // 60 * 60 - 60): 0,
                                     str(int(now + 35) // 60 * 60): 0}
    finally:
        keys = [k async for k in stores.redis.client.scan_iter(match=env["REDIS_KEY_PREFIX"] + "*")]
        if keys:
            await stores.redis.client.delete(*keys)
        await deployment.close()
        await stores.close()
