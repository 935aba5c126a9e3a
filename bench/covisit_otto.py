"""Co-visitation on the OTTO sample: three items' "also visited" lists, and how well they predict a session's end.

Reads OTTO's sessions (``../shared/data/otto/sample.jsonl``: one session per line, events
``{"aid", "ts", "type"}`` with type clicks / carts / orders; CC BY 4.0, otto-de/recsys-dataset),
learns :class:`~online_models.covisit.CoVisitation` (OTTO's carts-orders weights, pairs within 24 h)
and prints the lists of the three most visited items, each partner with its weighted count.

Then a held-out check: co-visitation learned from the first 80% of every session's events, the
last learned item of each session as the anchor; how many of the session's remaining items are in
the anchor's top-20, against the top-20 most visited items (popularity) learned from the same part.

    .venv/bin/python bench/covisit_otto.py [--data ../shared/data/otto/sample.jsonl] [--k 10]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config import REPO_ROOT
from online_models.covisit import OTTO_WEIGHTS, CoVisitation

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "otto" / "sample.jsonl"
WINDOW_MS = 24 * 3_600_000
#: Pairs visited an hour apart count half (items visited one after the other rank first).
GAP_HALF_LIFE_MS = 3_600_000


@dataclass(frozen=True)
class Visit:
    """One OTTO event: article id, time (ms), type (clicks, carts, orders)."""

    aid: str
    ts: int
    type: str


def read_otto(path: Path) -> list[list[Visit]]:
    """Every session of an OTTO jsonl file, its events in time order."""
    sessions = []
    with path.open() as lines:
        for line in lines:
            if line.strip():
                events = json.loads(line)["events"]
                sessions.append(sorted((Visit(str(e["aid"]), int(e["ts"]), str(e["type"])) for e in events),
                                       key=lambda visit: visit.ts))
    return sessions


def learn(sessions: Sequence[Sequence[Visit]], window_ms: int = WINDOW_MS) -> CoVisitation:
    """Co-visitation of ``sessions`` (each ended once read), OTTO's weights by event type."""
    covisit = CoVisitation(window_ms=window_ms, gap_half_life_ms=GAP_HALF_LIFE_MS)
    for n, session in enumerate(sessions):
        for visit in session:
            covisit.learn_one(str(n), visit.aid, visit.ts, OTTO_WEIGHTS.get(visit.type, 1.0))
        covisit.end_session(str(n))
    return covisit


def most_visited(sessions: Sequence[Sequence[Visit]], n: int) -> list[tuple[str, int]]:
    """The ``n`` items with the most events, ties by id."""
    counts = Counter(visit.aid for session in sessions for visit in session)
    return sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))[:n]


def held_out(sessions: Sequence[Sequence[Visit]], k: int = 20, share: float = 0.8) -> tuple[float, float, int]:
    """Hit rate of the anchor's top-``k`` co-visited items and of the top-``k`` popular items on each session's end.

    Learned from the first ``share`` of every session's events; a hit is an item of the rest of
    the session in the list. Returns (co-visitation hit rate, popularity hit rate, items to find).
    """
    heads = [session[:max(1, int(len(session) * share))] for session in sessions]
    covisit = learn(heads)
    popular = {item for item, _ in most_visited(heads, k)}
    found = baseline = total = 0
    for head, session in zip(heads, sessions, strict=True):
        rest = {visit.aid for visit in session[len(head):]}
        if not rest:
            continue
        listed = {item for item, _ in covisit.similar(head[-1].aid, k)}
        found, baseline, total = found + len(rest & listed), baseline + len(rest & popular), total + len(rest)
    return (found / total if total else 0.0), (baseline / total if total else 0.0), total


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="OTTO sessions, jsonl")
    parser.add_argument("--k", type=int, default=10, help="partners printed per item")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        raise SystemExit(f"no OTTO sample at {args.data} (see ../shared/data/README.md)")
    sessions = read_otto(args.data)
    covisit = learn(sessions)
    print(f"OTTO sample: {len(sessions)} sessions, {sum(map(len, sessions))} events, "
          f"{len({v.aid for s in sessions for v in s})} items; {covisit.n_pairs} co-visited pairs "
          f"(within {WINDOW_MS // 3_600_000} h, halved per {GAP_HALF_LIFE_MS // 60_000} min apart, "
          f"weights {OTTO_WEIGHTS})")
    for item, visits in most_visited(sessions, 3):
        partners = ", ".join(f"{other} ({count:.2f})" for other, count in covisit.similar(item, args.k))
        print(f"item {item} ({visits} events) also visited: {partners}")
    hit, popularity, total = held_out(sessions)
    print(f"held out (last 20% of each session, {total} items): {hit:.1%} in the anchor's top-20 co-visited, "
          f"{popularity:.1%} in the top-20 popular")


if __name__ == "__main__":
    main()
