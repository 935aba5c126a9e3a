"""One user's state in the user stage (ADR 0005): what keyed state holds, as plain objects in memory.

Pure (no Flink): :mod:`flink_jobs.user_steps` changes these, ``flink_jobs/user_state.py`` keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flink_jobs.attribution import Exposures
from online_models import session as sessions
from online_models.mf import UserParams

__all__ = ["HISTORY", "Progress", "UserRecord", "remembered"]

#: Items of the user's closed sessions kept in the record, newest first (serving reads the user's taste from them).
HISTORY = 20


@dataclass
class Progress:
    """The user's progress not yet reported to the model stage.

    It lives in the user's keyed state, so a restore rolls it back together with what it counts:
    model counters stay exact across failures (an operator-level tally would lose what it held).
    In state it is the list ``[learned, squared error, absolute error, matched, unmatched, late]``,
    then ``judged, hits`` when the implicit learner judged anything (its running HitRate@k).
    """

    learned: int = 0
    squared_error: float = 0.0
    absolute_error: float = 0.0
    rewards_matched: int = 0
    rewards_unmatched: int = 0
    late_events: int = 0
    judged: int = 0  # positives ranked before learning them (implicit learner)
    hits: int = 0  # of those, in the top k

    def any(self) -> bool:
        """Anything to report."""
        return any(self.as_list())

    def as_list(self) -> list[Any]:
        """The state's shape (ADR 0005)."""
        kept = [self.learned, self.squared_error, self.absolute_error,
                self.rewards_matched, self.rewards_unmatched, self.late_events]
        return [*kept, self.judged, self.hits] if self.judged else kept


@dataclass
class UserRecord:
    """One user's state (ADR 0005): one pickled dict of primitives in keyed state.

    In memory the session and the user's parameters are objects; they become bytes only when
    the record is written to keyed state (before a checkpoint barrier), not on every event.

    >>> record = UserRecord.from_state({"counts": {"view": 2}, "learned": 1, "session": None,
    ...                                 "factors": None, "t": 5, "pending": [1, 0.25, 0.5, 0, 0, 0]})
    >>> record.progress.squared_error, record.due, record.session_timer
    (0.25, False, None)
    >>> UserRecord.from_state(record.to_state()) == record
    True
    """

    counts: dict[str, int] = field(default_factory=dict)
    learned: int = 0
    session: sessions.SessionState | None = None  # in state: SessionState.to_bytes()
    factors: UserParams | None = None  # in state: UserParams.to_bytes()
    t: int = 0  # latest event time seen
    progress: Progress = field(default_factory=Progress)
    due: bool = False  # a score refresh is scheduled
    session_timer: int | None = None  # the session's pending deadline timer
    exposures: Exposures = field(default_factory=Exposures)  # lists served under an experiment (attribution)
    history: tuple[str, ...] = ()  # items of closed sessions, newest first (at most HISTORY)
    seen: sessions.SessionState | None = None  # the implicit learner's judge: the session without impressions

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> UserRecord:
        """From keyed state (records written before ``pending``/``due``/``session_timer`` existed load too)."""
        session, factors = state["session"], state["factors"]
        return cls(state["counts"], state["learned"],
                   sessions.SessionState.from_bytes(session) if session else None,
                   UserParams.from_bytes(factors) if factors else None, state["t"],
                   Progress(*state.get("pending") or ()), bool(state.get("due")), state.get("session_timer"),
                   Exposures.from_state(state.get("served")), tuple(state.get("history") or ()),
                   sessions.SessionState.from_bytes(state["seen"]) if state.get("seen") else None)

    def to_state(self) -> dict[str, Any]:
        """The dict keyed state holds (the same keys and value types as ever)."""
        return {"counts": self.counts, "learned": self.learned,
                "session": None if self.session is None else self.session.to_bytes(),
                "factors": None if self.factors is None else self.factors.to_bytes(),
                "t": self.t, "pending": self.progress.as_list(), "due": self.due,
                "session_timer": self.session_timer,
                **({"served": self.exposures.to_state()} if self.exposures else {}),
                **({"history": list(self.history)} if self.history else {}),
                **({"seen": self.seen.to_bytes()} if self.seen is not None else {})}


def remembered(session_items: tuple[str, ...], history: tuple[str, ...], keep: int = HISTORY) -> tuple[str, ...]:
    """A closed session's items (oldest first) before the history (newest first), each once, ``keep`` at most.

    >>> remembered(("a", "b"), ("b", "c", "d"), keep=3)
    ('b', 'a', 'c')
    """
    newest_first = dict.fromkeys((*reversed(session_items), *history))
    return tuple(newest_first)[:keep]
