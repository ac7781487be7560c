"""Traffic profiles: how busy the platform is at a given world time.

``intensity(profile, t)`` is the traffic relative to the average (1.0).  The
world spends ``10 ms / intensity`` of event time per event, so a busy hour
packs more events into the same time, and the producer paced with ``--rate``
sends ``rate x intensity`` events per second.

- ``steady``: always 1.0 (the default; exactly 10 ms of event time per event).
- ``daily``: a day's rhythm, peak at 20:30, trough (0.4) in the morning.
- ``launch-spike``: steady, then a blockbuster is released one world hour in;
  traffic jumps to 3x and settles back over a few hours.
"""
from __future__ import annotations

import math

PROFILES = ("steady", "daily", "launch-spike")
DAILY_AMPLITUDE = 0.6
DAILY_PEAK_HOUR = 20.5
SPIKE_AT_S = 3600.0
SPIKE_HEIGHT = 2.0
SPIKE_DECAY_S = 3 * 3600.0


def intensity(profile: str, t: float, start_hour: float = 0.0) -> float:
    """Traffic at world second ``t`` of a run that started at ``start_hour`` (0-24)."""
    if profile == "daily":
        hour = (start_hour + t / 3600.0) % 24.0
        return 1.0 + DAILY_AMPLITUDE * math.cos(2 * math.pi * (hour - DAILY_PEAK_HOUR) / 24.0)
    if profile == "launch-spike":
        if t < SPIKE_AT_S:
            return 1.0
        since = t - SPIKE_AT_S
        ramp = min(1.0, since / 600.0)  # ten world minutes to reach the peak
        return 1.0 + SPIKE_HEIGHT * ramp * math.exp(-since / SPIKE_DECAY_S)
    if profile == "steady":
        return 1.0
    raise ValueError(f"unknown profile {profile!r} (one of {', '.join(PROFILES)})")
