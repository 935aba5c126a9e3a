"""Attribution, as pure steps: which served list (experiment, variant) led to a click, cart or purchase.

The user stage keeps, in the user's record, the user's latest lists served under an experiment
(``served`` topic, :class:`schemas.ServedList`); a click, add-to-cart or purchase is credited to
the list the front-end names (``context["request_id"]``), else to the newest of the user's lists
within ``window_ms`` before it that showed the item. Each list counts once as an exposure and
once per outcome kind (``clicked``, ``carted``, ``purchased``: lists with at least one), so a
variant's CTR is a proportion of exposures; ``clicks`` and ``purchases`` count every credited
event. The counts travel as :class:`ExperimentTally` messages to the experiment's stage, which
sums them in checkpointed state (exactly once with the user's record) and writes
``RedisKeys.experiment(name)``.

Lists and events come from two topics, so an outcome can reach the user stage before the list it
answers (a backlog, a replay after a restart). An outcome that names a request id no kept list
has is parked in the record (at most ``max_lists``, for ``window_ms`` of event time) and
credited when that list arrives: by request id the count is the same in either order. Outcomes
without a request id are credited only to lists already there (best effort, documented).

>>> from schemas import ServedItem
>>> lists = Exposures()
>>> served = ServedList("r1", "u1", 1_000, "recommendations", "model", "mf", "pulse", None, "home", "B", None,
...                     (ServedItem("i1", 0, 1.0), ServedItem("i2", 1, 0.5)))
>>> [tally.exposures for tally in lists.expose(served, max_lists=10)]
[1]
>>> lists.expose(served, max_lists=10)  # the same list again (a replay): counted once
[]
>>> lists.credit("click", "i2", None, 2_000, window_ms=60_000).clicked  # by user + item
1
>>> lists.credit("click", "i1", "r1", 3_000, window_ms=60_000).clicked  # by request id; counted once
0
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from online_models.ab_results import COUNT_NAMES
from schemas import ServedList

__all__ = ["ATTRIBUTED", "ExperimentTally", "Exposure", "Exposures", "merge_tallies"]

#: Event types credited to a list, and the per-list flag each sets.
ATTRIBUTED = {"click": ("clicked", 1), "add_to_cart": ("carted", 2), "purchase": ("purchased", 4)}


@dataclass(frozen=True, slots=True)
class ExperimentTally:
    """Counts for one variant of one experiment (summed by the experiment's stage)."""

    experiment: str
    variant: str
    event_time_ms: int
    exposures: int = 0
    clicked: int = 0
    clicks: int = 0
    carted: int = 0
    purchased: int = 0
    purchases: int = 0

    def counts(self) -> dict[str, int]:
        """The counters by name (the Redis payload's per-variant fields)."""
        return {name: getattr(self, name) for name in COUNT_NAMES}


@dataclass(slots=True)
class Exposure:
    """A list served to the user under an experiment; ``flags``: outcome kinds already credited."""

    experiment: str
    variant: str
    served_at_ms: int
    items: frozenset[str]
    flags: int = 0

    def to_state(self) -> tuple[Any, ...]:
        return (self.experiment, self.variant, self.served_at_ms, tuple(sorted(self.items)), self.flags)

    @classmethod
    def from_state(cls, state: Iterable[Any]) -> Exposure:
        experiment, variant, served_at_ms, items, flags = state
        return cls(experiment, variant, served_at_ms, frozenset(items), flags)


@dataclass
class Exposures:
    """One user's latest lists under an experiment, by request id (oldest first)."""

    lists: dict[str, Exposure] = field(default_factory=dict)
    #: Outcomes naming a list not here yet: ``(event type, item, request id, event time)``, oldest first.
    parked: list[tuple[str, str | None, str, int]] = field(default_factory=list)

    def expose(self, served: ServedList, max_lists: int, window_ms: int | None = None) -> list[ExperimentTally]:
        """Keep ``served`` (when under an experiment and not seen before): its exposure, and parked outcomes.

        Lists older than ``window_ms`` before the newest leave, and the oldest beyond ``max_lists``.
        """
        if served.experiment is None or served.variant is None or served.request_id in self.lists:
            return []  # not in an experiment, or a replayed record of a list already counted
        exposure = self.lists[served.request_id] = Exposure(served.experiment, served.variant, served.served_at_ms,
                                                            frozenset(item.item_id for item in served.items))
        while len(self.lists) > max_lists:
            del self.lists[next(iter(self.lists))]
        if window_ms is not None:
            newest = max(exposure.served_at_ms for exposure in self.lists.values())
            for request_id in [r for r, e in self.lists.items() if newest - e.served_at_ms > window_ms]:
                del self.lists[request_id]
        tallies = [ExperimentTally(served.experiment, served.variant, served.served_at_ms, exposures=1)]
        waiting = [outcome for outcome in self.parked if outcome[2] == served.request_id]
        if waiting:
            self.parked = [outcome for outcome in self.parked if outcome[2] != served.request_id]
            for event_type, _, _, event_time_ms in waiting:
                tallies.append(self._credit_to(exposure, event_type, event_time_ms))  # even if it left already
        return tallies

    def credit(self, event_type: str, item_id: str | None, request_id: str | None, event_time_ms: int,
               window_ms: int, max_parked: int = 20) -> ExperimentTally | None:
        """Credit an outcome to the list it answers; ``None`` when no list of the user's led to it (yet)."""
        if event_type not in ATTRIBUTED:
            return None
        if self.parked:  # outcomes whose list never came within the window
            self.parked = [p for p in self.parked if event_time_ms - p[3] <= window_ms]
        if request_id:
            exposure = self.lists.get(request_id)
            if exposure is None:  # its list may still be on its way (another topic)
                self.parked.append((event_type, item_id, request_id, event_time_ms))
                del self.parked[:-max_parked]
                return None
        elif item_id is None or (exposure := self._showing(item_id, event_time_ms, window_ms)) is None:
            return None
        return self._credit_to(exposure, event_type, event_time_ms)

    def _credit_to(self, exposure: Exposure, event_type: str, event_time_ms: int) -> ExperimentTally:
        """The tally of one outcome credited to ``exposure``; its flags remember the kind."""
        name, flag = ATTRIBUTED[event_type]
        first = 0 if exposure.flags & flag else 1
        exposure.flags |= flag
        counts = {name: first}
        if event_type == "click":
            counts["clicks"] = 1
        elif event_type == "purchase":
            counts["purchases"] = 1
        return ExperimentTally(exposure.experiment, exposure.variant, event_time_ms, **counts)

    def _showing(self, item_id: str, event_time_ms: int, window_ms: int) -> Exposure | None:
        """The newest list that showed ``item_id`` within ``window_ms`` before the event."""
        for exposure in reversed(self.lists.values()):
            if item_id in exposure.items and 0 <= event_time_ms - exposure.served_at_ms <= window_ms:
                return exposure
        return None

    def __bool__(self) -> bool:
        return bool(self.lists or self.parked)

    def to_state(self) -> dict[str, Any]:
        return {"lists": [(request_id, exposure.to_state()) for request_id, exposure in self.lists.items()],
                "parked": list(self.parked)}

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> Exposures:
        if not state:
            return cls()
        return cls({request_id: Exposure.from_state(value) for request_id, value in state["lists"]},
                   [tuple(outcome) for outcome in state["parked"]])  # type: ignore[misc]


def merge_tallies(tallies: Iterable[ExperimentTally]) -> list[ExperimentTally]:
    """One tally per (experiment, variant) of a batch: the sums, the newest event time.

    >>> merge_tallies([ExperimentTally("e", "A", 5, exposures=1), ExperimentTally("e", "A", 7, clicked=1),
    ...                ExperimentTally("e", "B", 6, exposures=1)])  # doctest: +NORMALIZE_WHITESPACE
    [ExperimentTally(experiment='e', variant='A', event_time_ms=7, exposures=1, clicked=1, clicks=0, carted=0,
                     purchased=0, purchases=0),
     ExperimentTally(experiment='e', variant='B', event_time_ms=6, exposures=1, clicked=0, clicks=0, carted=0,
                     purchased=0, purchases=0)]
    """
    sums: dict[tuple[str, str], dict[str, int]] = {}
    times: dict[tuple[str, str], int] = {}
    for tally in tallies:
        key = (tally.experiment, tally.variant)
        counts = sums.setdefault(key, dict.fromkeys(tally.counts(), 0))
        for name, n in tally.counts().items():
            counts[name] += n
        times[key] = max(times.get(key, 0), tally.event_time_ms)
    return [ExperimentTally(experiment, variant, times[(experiment, variant)], **counts)
            for (experiment, variant), counts in sums.items()]

