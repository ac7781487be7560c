"""S3 inside the worker when ``AUDIT_IN_WORKER=true`` (by default it runs as its
own process: ``python -m streamapp.audit``)."""
import asyncio

from streamapp.app import app
from streamapp.audit import AuditTrail
from streamapp.config import settings


@app.task
async def audit_trail():
    if not settings.audit_in_worker or not settings.elasticsearch_url:
        return
    stop = asyncio.Event()
    try:
        await AuditTrail(settings).run(stop)
    finally:
        stop.set()
