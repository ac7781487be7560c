"""Sample the deployment's numbers for the dashboard's charts (``streamapp.series``).

Every worker runs the timer, at half the sampling interval so that no slot is
missed; a claim in Redis lets one worker per slot take the sample.
"""
import logging

from streamapp.app import app
from streamapp.series import series

log = logging.getLogger(__name__)


@app.timer(interval=series.every_s / 2)
async def sample_series() -> None:
    try:
        await series.maybe_sample(str(app.conf.canonical_url))
    except Exception as exc:  # Kafka or Redis away: the charts show a gap
        log.info("series sample skipped: %s: %s", type(exc).__name__, exc)
