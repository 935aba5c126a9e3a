"""User sessions as a step function over event time.

``step(state, event)`` returns the new state and what to emit. A session opens on a user's
first event and closes when an event arrives ``gap_ms`` or more after the latest one seen
(or when the job's timer at :func:`deadline_ms` fires and calls :func:`on_timer`), emitting a
frozen :class:`SessionSummary`. Events older than the latest one seen are counted into the
session when they are at most ``allowed_lateness_ms`` late; later ones are emitted as
:class:`LateEvent` so the job can route them (e.g. to a side output) instead of losing them.
An erase event drops the session without a summary.

>>> from schemas.events import Event, EventType
>>> def ev(k, t, kind=EventType.VIEW):
...     return Event(f"e{k}", kind, "u1", t, item_id=f"i{k}", context={"category": "books"})
>>> state, out = step(None, ev(1, 0))
>>> state, out = step(state, ev(2, 60_000, EventType.CLICK))
>>> state, out = step(state, ev(3, 60_000 + 31 * 60_000))
>>> summary = out[0]
>>> summary.dwell_ms, summary.counts, summary.recent_items, summary.categories
(60000, (('view', 1), ('click', 1)), ('i1', 'i2'), (('books', 2),))
>>> state.session_id, state.n_events
('e3', 1)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

from online_models.base import StateHeader
from schemas.events import SYMBOL_OF, Event, EventType, quick_init

__all__ = [
    "LateEvent",
    "SessionOutput",
    "SessionState",
    "SessionSummary",
    "close",
    "deadline_ms",
    "on_timer",
    "step",
]

DEFAULT_GAP_MS = 30 * 60 * 1000
DEFAULT_ALLOWED_LATENESS_MS = 5 * 60 * 1000
DEFAULT_MAX_RECENT = 20

_HEADER = StateHeader(b"SESS")
_FIXED = struct.Struct("<qqII")  # start_ms, end_ms, n_events, n_late
_LEN = struct.Struct("<H")
_COUNT = struct.Struct("<I")
_TIME = struct.Struct("<q")

Pairs = tuple[tuple[str, int], ...]


@quick_init
@dataclass(frozen=True, slots=True)
class SessionState:
    """One open session of one user (``recent``: distinct ``(time_ms, item)``, oldest first)."""

    user_id: str
    session_id: str
    start_ms: int
    end_ms: int
    n_events: int = 0
    n_late: int = 0
    counts: Pairs = ()
    recent: tuple[tuple[int, str], ...] = ()
    categories: Pairs = ()

    def to_bytes(self) -> bytes:
        """Versioned compact bytes (strings length-prefixed UTF-8)."""
        parts = [_HEADER.pack(1), _str(self.user_id), _str(self.session_id)]
        parts.append(_FIXED.pack(self.start_ms, self.end_ms, self.n_events, self.n_late))
        for pairs in (self.counts, self.categories):
            parts.append(_COUNT.pack(len(pairs)))
            parts.extend(_str(name) + _COUNT.pack(n) for name, n in pairs)
        parts.append(_COUNT.pack(len(self.recent)))
        parts.extend(_TIME.pack(t) + _str(item) for t, item in self.recent)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> SessionState:
        """Inverse of :meth:`to_bytes`."""
        reader = _Reader(data, _HEADER.unpack(data, supported=(1,))[1])
        user_id, session_id = reader.text(), reader.text()
        start_ms, end_ms, n_events, n_late = reader.unpack(_FIXED)
        counts = tuple((reader.text(), reader.unpack(_COUNT)[0]) for _ in range(reader.unpack(_COUNT)[0]))
        cats = tuple((reader.text(), reader.unpack(_COUNT)[0]) for _ in range(reader.unpack(_COUNT)[0]))
        recent = tuple((reader.unpack(_TIME)[0], reader.text()) for _ in range(reader.unpack(_COUNT)[0]))
        reader.done()
        return cls(user_id, session_id, start_ms, end_ms, n_events, n_late, counts, recent, cats)


@quick_init
@dataclass(frozen=True, slots=True)
class SessionSummary:
    """What a closed session emits; counts per event type and per category as name/count pairs."""

    user_id: str
    session_id: str
    start_ms: int
    end_ms: int
    dwell_ms: int
    n_events: int
    n_late: int
    counts: Pairs
    recent_items: tuple[str, ...]
    categories: Pairs


@quick_init
@dataclass(frozen=True, slots=True)
class LateEvent:
    """An event too late to count into the open session (``lateness_ms`` behind its latest)."""

    event: Event
    session_id: str
    lateness_ms: int


SessionOutput = SessionSummary | LateEvent


def step(
    state: SessionState | None,
    event: Event,
    *,
    gap_ms: int = DEFAULT_GAP_MS,
    allowed_lateness_ms: int = DEFAULT_ALLOWED_LATENESS_MS,
    max_recent: int = DEFAULT_MAX_RECENT,
) -> tuple[SessionState | None, list[SessionOutput]]:
    """Fold ``event`` into the user's session; return the new state and what to emit."""
    if state is not None and state.user_id != event.user_id:
        raise ValueError(f"event of user {event.user_id!r} stepped into a session of {state.user_id!r}")
    if event.type is EventType.ERASE:
        return None, []
    if state is None:
        return _add(_open(event), event, max_recent), []
    t = event.event_time_ms
    if t >= state.end_ms + gap_ms:
        return _add(_open(event), event, max_recent), [close(state)]
    if t >= state.end_ms:
        return _add(state, event, max_recent), []
    lateness = state.end_ms - t
    if lateness <= allowed_lateness_ms and t > state.start_ms - gap_ms:
        return replace(_add(state, event, max_recent), n_late=state.n_late + 1), []
    return state, [LateEvent(event, state.session_id, lateness)]


def deadline_ms(state: SessionState, *, gap_ms: int = DEFAULT_GAP_MS) -> int:
    """Event time at which the session closes unless another event arrives first."""
    return state.end_ms + gap_ms


def on_timer(
    state: SessionState | None, timer_ms: int, *, gap_ms: int = DEFAULT_GAP_MS
) -> tuple[SessionState | None, list[SessionOutput]]:
    """An event-time timer fired: close the session if its deadline has passed (stale timers no-op)."""
    if state is None or timer_ms < deadline_ms(state, gap_ms=gap_ms):
        return state, []
    return None, [close(state)]


def close(state: SessionState) -> SessionSummary:
    """The summary of ``state``."""
    return SessionSummary(
        user_id=state.user_id,
        session_id=state.session_id,
        start_ms=state.start_ms,
        end_ms=state.end_ms,
        dwell_ms=state.end_ms - state.start_ms,
        n_events=state.n_events,
        n_late=state.n_late,
        counts=state.counts,
        recent_items=tuple(item for _, item in state.recent),
        categories=state.categories,
    )


def _open(event: Event) -> SessionState:
    t = event.event_time_ms
    return SessionState(event.user_id, event.event_id, t, t)


def _bump(pairs: Pairs, name: str) -> Pairs:
    counts = dict(pairs)
    counts[name] = counts.get(name, 0) + 1
    return tuple(counts.items())


def _add(state: SessionState, event: Event, max_recent: int) -> SessionState:
    t = event.event_time_ms
    recent = state.recent
    item = event.item_id
    if item is not None:
        newest = (t, item)
        if not recent or newest > recent[-1]:
            # In order (nearly every event): the pair sorts last, so the rest keeps its order. The same
            # tuple as the general case below, at a third of its cost (a step runs for every event).
            recent = (*[pair for pair in recent if pair[1] != item], newest)[-max_recent:]
        else:
            latest = {seen: time for time, seen in recent}
            latest[item] = max(t, latest.get(item, t))
            recent = tuple(sorted((time, seen) for seen, time in latest.items()))[-max_recent:]
    category = event.context.get("category")
    # The constructor, not dataclasses.replace: this runs for every event (replace costs 2 % of the job).
    return SessionState(
        state.user_id,
        state.session_id,
        min(state.start_ms, t),
        max(state.end_ms, t),
        state.n_events + 1,
        state.n_late,
        _bump(state.counts, SYMBOL_OF[event.type]),
        recent,
        state.categories if category is None else _bump(state.categories, category),
    )


def _str(text: str) -> bytes:
    raw = text.encode()
    return _LEN.pack(len(raw)) + raw


class _Reader:
    def __init__(self, data: bytes, offset: int) -> None:
        self.data, self.offset = data, offset

    def unpack(self, fmt: struct.Struct) -> tuple[int, ...]:
        values: tuple[int, ...] = fmt.unpack_from(self.data, self.offset)
        self.offset += fmt.size
        return values

    def text(self) -> str:
        (size,) = self.unpack(_LEN)
        self.offset += size
        return self.data[self.offset - size : self.offset].decode()

    def done(self) -> None:
        if self.offset != len(self.data):
            raise ValueError(f"{len(self.data) - self.offset} trailing bytes after session state")
