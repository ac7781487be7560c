"""Read views and the dashboard, served by the worker."""
