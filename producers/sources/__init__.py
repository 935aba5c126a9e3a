"""Event sources for the producers, chosen by a short spec string.

============================  ==========================================================
``synthetic``                 seeded synthetic stream (:mod:`producers.sources.synthetic`)
``synthetic:users=1000,...``  the same, with :class:`SyntheticConfig` overrides
``movielens:PATH``            MovieLens ``u.data`` / ``ratings.csv`` / ``ratings.dat``
``obd:PATH``                  Open Bandit Dataset logged impressions
``jsonl:PATH``                Pulse event JSON lines and/or OTTO session lines
============================  ==========================================================

File sources are replayed in event-time order by default (:mod:`producers.sources.ordering`).

>>> events = list(open_source("synthetic:users=30,items=100", seed=1, limit=3))
>>> len(events), events[0].user_id.startswith("u")
(3, True)
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

from producers.sources.jsonl import read_jsonl, write_jsonl
from producers.sources.movielens import read_movielens, write_movielens
from producers.sources.ordering import ReplayOrder, ordered
from producers.sources.synthetic import synthetic_events, synthetic_ratings
from producers.sources.synthetic_config import EventMix, SyntheticConfig
from schemas.events import Event

__all__ = [
    "SOURCE_HELP",
    "SOURCE_SCHEMES",
    "EventMix",
    "ReplayOrder",
    "SyntheticConfig",
    "open_source",
    "parse_synthetic_overrides",
    "read_jsonl",
    "read_movielens",
    "synthetic_events",
    "synthetic_ratings",
    "write_jsonl",
    "write_movielens",
]

SOURCE_SCHEMES = ("synthetic", "movielens", "obd", "jsonl")

#: Short names accepted in ``synthetic:key=value`` besides the SyntheticConfig field names.
SYNTHETIC_ALIASES = {
    "users": "n_users",
    "items": "n_items",
    "zipf": "zipf_exponent",
    "user_zipf": "user_zipf_exponent",
    "gap_ms": "session_gap_ms",
    "events_per_session": "mean_events_per_session",
    "impressions": "impression_rate",
    "arms": "n_arms",
    "ctr": "mean_ctr",
    "segments": "n_segments",
    "categories": "n_categories",
    "start_ms": "start_time_ms",
    "inter_event_ms": "mean_inter_event_ms",
    "session_interarrival_ms": "mean_session_interarrival_ms",
    "blocks": "block_share",
}
_MIX_KEYS = {f.name for f in dataclasses.fields(EventMix)} | {"cart"}

SOURCE_HELP = """\
Event source, one of:
  synthetic                   seeded synthetic stream (Zipf items, sessions, funnel, ratings,
                              impressions with propensities and linked reward clicks)
  synthetic:K=V,K=V           the same with overrides, e.g. synthetic:users=1000,items=5000,zipf=1.2;
                              keys: users, items, zipf, user_zipf, gap_ms, events_per_session,
                              impressions, arms, ctr, segments, categories, taste, rank, rating_noise,
                              start_ms, inter_event_ms, session_interarrival_ms, blocks (share of
                              block events, schema v2), seed, and the event mix weights view,
                              click, add_to_cart (cart), purchase, rating
  movielens:PATH              MovieLens u.data, ratings.csv or ratings.dat (detected by content)
  obd:PATH                    Open Bandit Dataset logged impressions
  jsonl:PATH                  JSON lines of Pulse events and/or OTTO sessions (.gz ok)
File sources are replayed in event-time order (--order time) unless --order file."""


def parse_synthetic_overrides(text: str, *, seed: int = 7) -> SyntheticConfig:
    """Build a :class:`SyntheticConfig` from ``"users=1000,items=5000"`` (empty: defaults).

    >>> c = parse_synthetic_overrides("users=1000, items=5_000,zipf=1.3,click=0.3", seed=2)
    >>> c.seed, c.n_users, c.n_items, c.zipf_exponent, c.mix.click
    (2, 1000, 5000, 1.3, 0.3)
    >>> parse_synthetic_overrides("colour=red")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown synthetic option 'colour'; valid: ...
    """
    config_fields = {f.name: f for f in dataclasses.fields(SyntheticConfig) if f.name != "mix"}
    values: dict[str, object] = {"seed": seed}
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, raw = (s.strip() for s in part.partition("="))
        if not sep or not raw:
            raise ValueError(f"synthetic option {part!r} is not key=value")
        try:
            if key in _MIX_KEYS:
                mix["add_to_cart" if key == "cart" else key] = float(raw)
                continue
            name = SYNTHETIC_ALIASES.get(key, key)
            if name not in config_fields:
                valid = sorted({*SYNTHETIC_ALIASES, *config_fields, *_MIX_KEYS})
                raise ValueError(f"unknown synthetic option {key!r}; valid: {', '.join(valid)}")
            is_int = str(config_fields[name].type) == "int"
            values[name] = int(raw) if is_int else float(raw)
        except ValueError as exc:
            if "unknown synthetic option" in str(exc):
                raise
            raise ValueError(f"synthetic option {key}={raw!r}: {exc}") from None
    if mix:
        values["mix"] = dataclasses.replace(EventMix(), **mix)
    return SyntheticConfig(**values)  # type: ignore[arg-type]


def _obd_reader() -> Callable[[Path], Iterator[Event]]:
    try:
        from producers.sources.obd import read_obd
    except ModuleNotFoundError as exc:
        if exc.name != "producers.sources.obd":
            raise
        raise ValueError("the obd source is not available (producers/sources/obd.py is missing)") from None
    return read_obd


def open_source(
    spec: str,
    *,
    seed: int = 7,
    limit: int | None = None,
    order: ReplayOrder = ReplayOrder.TIME,
    block_share: float | None = None,
) -> Iterator[Event]:
    """Open the event source named by ``spec`` (see :data:`SOURCE_HELP`).

    ``seed`` seeds the synthetic source (a ``seed=`` override wins); ``limit`` caps the number
    of events of any source. A file source is replayed in ``order`` (by default by event time,
    so ``limit`` keeps the earliest events); the synthetic source is generated as it goes.
    Unknown schemes raise :class:`ValueError` listing the valid ones, missing files
    :class:`FileNotFoundError` naming the path, both before the first event. ``block_share``
    (synthetic only) overrides the synthetic ``blocks=`` share of block events.

    >>> open_source("kafka:events")
    Traceback (most recent call last):
    ...
    ValueError: unknown source scheme 'kafka' in 'kafka:events'; valid: synthetic, movielens, obd, jsonl
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    scheme, _, arg = spec.strip().partition(":")
    scheme = scheme.strip().lower()
    if scheme == "synthetic":
        config = parse_synthetic_overrides(arg, seed=seed)
        if block_share is not None:
            config = dataclasses.replace(config, block_share=block_share)
        return synthetic_events(config, limit)
    if scheme not in SOURCE_SCHEMES:
        raise ValueError(f"unknown source scheme {scheme!r} in {spec!r}; valid: {', '.join(SOURCE_SCHEMES)}")
    if block_share:
        raise ValueError(f"a block share applies to the synthetic source only, not {scheme!r}")
    if not arg.strip():
        raise ValueError(f"source {scheme!r} needs a path: {scheme}:PATH")
    path = Path(arg.strip()).expanduser()
    events: Iterator[Event]
    if scheme == "movielens":
        events = read_movielens(path)
    elif scheme == "jsonl":
        events = read_jsonl(path)
    else:
        reader = _obd_reader()
        if not path.exists():
            raise FileNotFoundError(2, "No such file or directory", str(path))
        events = reader(path)
    events = ordered(events, order)
    return events if limit is None else itertools.islice(events, limit)
