"""Long-running system suites on the real stack: ``make chaos`` and ``make bench``."""
