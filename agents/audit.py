"""S3 inside the worker: the audit trail with its own consumer group."""
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
