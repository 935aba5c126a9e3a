r"""Read and write events as JSON lines (orjson).

Each input line is one of two shapes, told apart per line:

* a Pulse event, the dict of :meth:`Event.to_avro` (what :func:`write_jsonl` writes), e.g. a
  block (event schema version 2): ``{"type": "block", "category": "shoes", ...}``;
* an OTTO session, ``{"session": 12, "events": [{"aid": 5, "ts": 1659304800025, "type": "clicks"}]}``
  (the ``otto-de/recsys-dataset`` layout; ``ts`` in ms): one event per entry, with
  ``user_id=f"otto-{session}"``, ``item_id=str(aid)``, clicks/carts/orders mapped to
  click/add_to_cart/purchase and ``event_id=f"otto-{session}-{index}"``.

Blank lines are skipped; a ``.gz`` name is (de)compressed on the fly.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "mixed.jsonl")
>>> _ = open(path, "w").write(
...     '{"session": 3, "events": [{"aid": 9, "ts": 1659304800025, "type": "carts"}]}\n'
...     '{"event_id": "e1", "type": "view", "user_id": "u1", "item_id": "i1", "event_time_ms": 1}\n')
>>> [(e.event_id, e.type.value, e.user_id, e.item_id) for e in read_jsonl(path)]
[('otto-3-0', 'add_to_cart', 'otto-3', '9'), ('e1', 'view', 'u1', 'i1')]
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from producers.sources._files import existing_file, open_binary
from schemas.events import Decision, Event, EventType

OTTO_TYPES = {"clicks": EventType.CLICK, "carts": EventType.ADD_TO_CART, "orders": EventType.PURCHASE}


class _BadLine(ValueError):
    """A line-level problem; :func:`read_jsonl` adds the file name and line number."""


def read_jsonl(path: str | Path) -> Iterator[Event]:
    r"""Yield the events of a JSON-lines file of Pulse events and/or OTTO sessions.

    Raises :class:`FileNotFoundError` at once for a missing file, and :class:`ValueError`
    naming the file and line for a line that is not JSON or not one of the two shapes.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "bad.jsonl")
    >>> _ = open(path, "w").write('{"hello": 1}\n')
    >>> list(read_jsonl(path))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: .../bad.jsonl:1: neither a Pulse event (event_id, type, ...) nor an OTTO session ...
    """
    return _read(existing_file(path))


def _read(path: Path) -> Iterator[Event]:
    with open_binary(path) as lines:
        for line_no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
                if not isinstance(obj, dict):
                    raise _BadLine(f"expected a JSON object, got {type(obj).__name__}")
                if "event_id" in obj:
                    event = _pulse_event(obj)
                elif "session" in obj and "events" in obj:
                    yield from _otto_events(obj)
                    continue
                else:
                    raise _BadLine(
                        "neither a Pulse event (event_id, type, ...) nor an OTTO session "
                        f"(session, events): keys {sorted(obj)[:8]}"
                    )
            except (orjson.JSONDecodeError, _BadLine) as exc:
                raise ValueError(f"{path}:{line_no}: {exc}") from None
            yield event


def _pulse_event(obj: dict[str, Any]) -> Event:
    try:
        event_type = EventType(obj["type"])
        event_id, user_id, ts = obj["event_id"], obj["user_id"], obj["event_time_ms"]
    except KeyError as exc:
        raise _BadLine(f"Pulse event without {exc.args[0]!r}") from None
    except ValueError:
        raise _BadLine(f"unknown event type {obj.get('type')!r}") from None
    item_id, value, category = obj.get("item_id"), obj.get("value"), obj.get("category")
    context = obj.get("context") or {}
    if not (isinstance(event_id, str) and isinstance(user_id, str) and isinstance(item_id, str | None)):
        raise _BadLine("event_id and user_id must be strings, item_id a string or null")
    if not isinstance(category, str | None):
        raise _BadLine(f"category must be a string or null, got {category!r}")
    if not isinstance(ts, int) or isinstance(ts, bool):
        raise _BadLine(f"event_time_ms must be an integer (ms since epoch), got {ts!r}")
    if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
        raise _BadLine(f"value must be a number or null, got {value!r}")
    if not isinstance(context, dict) or not all(isinstance(v, str) for v in context.values()):
        raise _BadLine("context must be an object of string values")
    raw_decision = obj.get("decision")
    decision = None
    if raw_decision is not None:
        try:
            decision = Decision(
                request_id=raw_decision["request_id"],
                policy=raw_decision["policy"],
                arm=raw_decision["arm"],
                propensity=float(raw_decision["propensity"]),
            )
        except (KeyError, TypeError, ValueError):
            raise _BadLine(f"decision needs request_id, policy, arm, propensity: {raw_decision!r}") from None
    value = None if value is None else float(value)
    return Event(event_id, event_type, user_id, ts, item_id, value, context, decision, category)


def _otto_events(obj: dict[str, Any]) -> list[Event]:
    session, entries = obj["session"], obj["events"]
    if not isinstance(entries, list):
        raise _BadLine("OTTO 'events' must be a list")
    user = f"otto-{session}"
    out = []
    for i, entry in enumerate(entries):
        try:
            event_type = OTTO_TYPES[entry["type"]]
            aid, ts = entry["aid"], entry["ts"]
        except (KeyError, TypeError):
            raise _BadLine(f"OTTO event {i} needs aid, ts and type in {sorted(OTTO_TYPES)}: {entry!r}") from None
        if not isinstance(ts, int) or isinstance(ts, bool):
            raise _BadLine(f"OTTO event {i}: ts must be integer ms, got {ts!r}")
        out.append(Event(f"otto-{session}-{i}", event_type, user, ts, str(aid)))
    return out


def write_jsonl(path: str | Path, events: Iterable[Event]) -> int:
    """Write ``events`` one JSON object per line (:meth:`Event.to_avro` shape); return the count.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "out.jsonl")
    >>> e = Event("e1", EventType.RATING, "u1", 1_700_000_000_000, "i1", 4.0)
    >>> write_jsonl(path, [e]), list(read_jsonl(path)) == [e]
    (1, True)
    """
    p = Path(path)
    written = 0
    dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    with gzip.open(p, "wb") if p.suffix == ".gz" else p.open("wb") as out:
        for e in events:
            out.write(dumps(e.to_avro(), option=newline))
            written += 1
    return written
