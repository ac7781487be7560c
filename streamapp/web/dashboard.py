"""``GET /dashboard/``: one static HTML page that polls the JSON views.

The page (``static/dashboard.html``) is plain HTML, CSS and JavaScript with
no external resources, so it works on machines without internet access.  It
polls ``/api/stats/``, ``/api/leaderboards/`` and ``/api/health/`` every two
seconds; events per second are computed in the browser from consecutive
``/api/stats/`` samples.  All three are public views: the page holds no
API token and shows nothing about a person.
"""
from __future__ import annotations

from functools import cache
from importlib import resources

from faust.web import Request, Response, View

from ..app import app


@cache
def page() -> str:
    return (resources.files(__package__) / "static" / "dashboard.html").read_text("utf-8")


@app.page("/dashboard/", name="dashboard")
class DashboardView(View):
    async def get(self, request: Request) -> Response:
        return self.html(page(), headers={"Cache-Control": "no-cache"})
