"""Workers start on jemalloc where it is installed, unless told otherwise."""
from __future__ import annotations

import ctypes.util

from streamapp.allocator import with_jemalloc


def test_jemalloc_is_preloaded_when_installed(monkeypatch):
    monkeypatch.setattr(ctypes.util, "find_library",
                        lambda name: "libjemalloc.so.2" if name == "jemalloc" else None)
    assert with_jemalloc({"A": "1"}) == {"A": "1", "LD_PRELOAD": "libjemalloc.so.2"}


def test_a_preload_already_set_is_kept(monkeypatch):
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "libjemalloc.so.2")
    assert with_jemalloc({"LD_PRELOAD": ""}) == {"LD_PRELOAD": ""}
    assert with_jemalloc({"LD_PRELOAD": "libx.so"}) == {"LD_PRELOAD": "libx.so"}


def test_nothing_changes_without_jemalloc(monkeypatch):
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert with_jemalloc({"A": "1"}) == {"A": "1"}
