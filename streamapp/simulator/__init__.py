"""S1: ``python -m streamapp.simulator``."""
