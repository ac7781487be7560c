"""``--record FILE`` and ``--replay FILE``: traffic as JSON lines.

A recording holds one event per line, each exactly the bytes of the Kafka
record's value: the contract's wire form (docs/events.md), as the simulator
produced it.  Replaying a file produces every line again, unchanged, to the
topic its ``type`` belongs to, keyed and timestamped as the contract says
(``movie_id`` or ``user_id``; ``occurred_at``), so a recorded run is
reproduced byte for byte and anyone can feed their own traffic.  A line the
codec refuses is still produced (the worker dead-letters it, as it did the
first time), to the topic of its ``type`` when that can be read
(``rating.deleted`` goes to the ratings topic), with the wall clock as its
timestamp; a line whose type cannot be read at all is skipped and counted.
"""
from __future__ import annotations

import re
import time
from typing import BinaryIO, Iterator, Optional, Tuple

import orjson

from ..codec import Rejection, decode, key_of
from ..topics import STREAM_OF_TYPE
from .outcome import Outcome

#: Stream of each event type's family (``rating.`` -> ``ratings``).
STREAM_OF_FAMILY = {t.split(".")[0]: s for t, s in STREAM_OF_TYPE.items()}
_TYPE = re.compile(rb'"type"\s*:\s*"([A-Za-z0-9_.-]{1,64})"')
_KEY = {field: re.compile(rb'"' + field.encode() + rb'"\s*:\s*"([A-Za-z0-9_.:-]{1,64})"')
        for field in ("movie_id", "user_id")}

Record = Tuple[str, bytes, bytes, float, Optional[str]]


def route(value: bytes) -> Optional[str]:
    """The stream a line belongs to, from its ``type`` (read leniently)."""
    try:
        body = orjson.loads(value)
        event_type = body.get("type") if isinstance(body, dict) else None
    except orjson.JSONDecodeError:
        found = _TYPE.search(value)
        event_type = found.group(1).decode() if found else None
    if not isinstance(event_type, str):
        return None
    return STREAM_OF_TYPE.get(event_type) or STREAM_OF_FAMILY.get(event_type.split(".")[0])


def _guess_key(stream: str, value: bytes) -> bytes:
    found = _KEY["movie_id" if stream in ("ratings", "catalog") else "user_id"].search(value)
    return found.group(1) if found else b""


class Replay:
    """The records of a recording, in order; ``outcome`` accounts for them as
    the world does for its own events."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.outcome = Outcome()
        self.lines = 0
        self.unroutable = 0
        self.elapsed_s = 0.0     # (the producer paces a replay by count)
        self.intensity = 1.0

    def events(self, count: int) -> Iterator[Record]:
        produced = 0
        for line in self.fh:
            if count and produced >= count:
                return
            value = line[:-1] if line.endswith(b"\n") else line
            if not value.strip():
                continue
            self.lines += 1
            event = decode(value)
            if not isinstance(event, Rejection):
                self.outcome.account(event)
                yield (STREAM_OF_TYPE[event.TYPE], key_of(event), value,
                       event.occurred_at.timestamp(), None)
            else:
                stream = route(value)
                if stream is None:
                    self.unroutable += 1
                    continue
                self.outcome.bad[stream] += 1
                yield stream, _guess_key(stream, value), value, time.time(), event.code
            produced += 1

    def summary(self) -> dict:
        return {**self.outcome.summary(),
                "replay": {"lines": self.lines, "unroutable": self.unroutable}}
