"""Start workers on jemalloc instead of glibc's malloc, where it is installed.

Under steady load the worker's memory in use stayed flat while glibc's main
heap kept growing, about 1 MB a minute: holes freed between long-lived
blocks that later requests did not fit.  Neither fewer arenas
(``MALLOC_ARENA_MAX=2``) nor ``malloc_trim`` every 30 s changed that slope;
on jemalloc it was gone (bench/README.md, "Soak").  The allocator is chosen
when a process starts (``LD_PRELOAD``), so the launchers set it: ``make
run``, ``make soak`` and the Docker image.  An ``LD_PRELOAD`` that is
already set, even empty, is left alone: that is how to run on glibc.
"""
from __future__ import annotations

import ctypes.util
from typing import Dict, Mapping


def with_jemalloc(env: Mapping[str, str]) -> Dict[str, str]:
    """``env`` plus ``LD_PRELOAD`` of jemalloc, if it is installed and none is set."""
    out = dict(env)
    if "LD_PRELOAD" not in out:
        library = ctypes.util.find_library("jemalloc")
        if library:
            out["LD_PRELOAD"] = library
    return out
