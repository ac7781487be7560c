"""Read views and the dashboard, served by the worker.

Importing this package registers the routes on the app (the worker's
autodiscovery scans it): JSON views in ``views``, the HTML dashboard in
``dashboard``, the dashboard's time series in ``charts``, the audit explorer
in ``audit_views``.
"""
from . import audit_views, charts, dashboard, views  # noqa: F401  (registers the routes)
