"""``GET /dashboard/``: one static HTML page that polls the JSON views.

The page (``static/dashboard.html``) is plain HTML, CSS and JavaScript with
no external resources, so it works on machines without internet access.  It
polls ``/api/stats/``, ``/api/leaderboards/`` and ``/api/health/`` every two
seconds; events per second are computed in the browser from consecutive
``/api/stats/`` samples.  All three are public views: the page holds no
API token and shows nothing about a person.  Its charts draw
``/api/series/`` (``charts``) with Chart.js, vendored in ``static/`` and
served from ``/static/`` (``scripts/vendor_chartjs.sh``).
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


#: Files served from ``static/`` besides the pages, with their content types.
STATIC = {"chart.umd.min.js": "application/javascript",
          "chart.js.LICENSE.md": "text/plain"}


@cache
def static_file(name: str) -> str:
    return (resources.files(__package__) / "static" / name).read_text("utf-8")


@app.page("/static/{name:[^/]+}", name="static")
class StaticView(View):
    """The vendored scripts the pages load (a fixed list: nothing else is served)."""

    async def get(self, request: Request, name: str) -> Response:
        if name not in STATIC:
            return self.error(404, "not found")
        return self.text(static_file(name), content_type=STATIC[name],
                         headers={"Cache-Control": "public, max-age=3600"})
