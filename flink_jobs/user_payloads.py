"""The user's session and closed sessions as Redis and the ``sessions`` topic carry them (pure)."""

from __future__ import annotations

import time
from typing import Any

from online_models import session as sessions

__all__ = ["session_payload", "summary_payload"]


def session_payload(state: sessions.SessionState | None) -> dict[str, Any]:
    """The live session as the ``session`` Redis key holds it."""
    if state is None:
        return {"open": False}
    return {
        "open": True,
        "session_id": state.session_id,
        "start_ms": state.start_ms,
        "end_ms": state.end_ms,
        "n_events": state.n_events,
        "n_late": state.n_late,
        "counts": dict(state.counts),
        "recent_items": [item for _, item in state.recent],
        "categories": dict(state.categories),
    }


def summary_payload(summary: sessions.SessionSummary) -> dict[str, Any]:
    """A closed session as the ``sessions`` topic carries it."""
    return {
        "user_id": summary.user_id,
        "session_id": summary.session_id,
        "start_ms": summary.start_ms,
        "end_ms": summary.end_ms,
        "dwell_ms": summary.dwell_ms,
        "n_events": summary.n_events,
        "n_late": summary.n_late,
        "counts": dict(summary.counts),
        "recent_items": list(summary.recent_items),
        "categories": dict(summary.categories),
        "closed_at_ms": time.time_ns() // 1_000_000,
    }
