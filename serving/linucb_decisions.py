"""LinUCB decisions at request time, from the arm table the job writes (issue 18; ADR 0004).

The job's LinUCB table (:meth:`online_models.bandits.LinUCB.table_payload`) carries the learner's
state: exact float64 ``A`` and ``b`` per arm. :class:`LinUCBTables` restores it once per table
version (the store hands back the same :class:`~schemas.redis_keys.Envelope` object while the
stored value is unchanged); the restored learner solves ``A^-1`` and ``theta`` once and stacks them
per tuple of candidate arms, so a decision is the hashed features of its context, one
``(K·(d+1), d) @ x`` product and, for a tie only, one draw.

The choice is the learner's own :meth:`~online_models.bandits.LinUCB.decide` with the request's
seed (``int(request_id, 16) mod 2**64``): the same arithmetic as the job's learner and as
``pulse eval bandit --decide``, so the same state, context and seed give the same arm. LinUCB is
deterministic: the logged propensity is 1 for a single best arm and ``1/k`` when ``k`` arms tie
(the seed splits them uniformly, as the other policies split ties). The context read is the one the
impression logs (the request's, ``decision_point``, the assignment, ``bandit_scope``), restricted to
the learner's features, so the job learns from exactly the features the decision used.

>>> from online_models.bandits import LinUCB
>>> learner = LinUCB(n_features=8, features=["segment"])
>>> for _ in range(5):
...     learner.update("shirt", 1.0, {"segment": "men"}); learner.update("dress", 0.0, {"segment": "men"})
>>> table = LinUCBTable.of(learner.table_payload())
>>> table.arms, table.choose(table.arms, {"segment": "men"}, seed=7)
(('dress', 'shirt'), (1, 1.0))
>>> LinUCBTable.of(None).choose(("a", "b"), {}, seed=7)[1]   # no table: the prior, every arm tied
0.5
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from online_models.bandits import LinUCB
from schemas.redis_keys import Envelope
from serving.arm_distributions import rng_for

__all__ = ["LINUCB", "LinUCBTable", "LinUCBTables"]

LINUCB = "linucb"


@dataclass(frozen=True, slots=True)
class LinUCBTable:
    """One scope's LinUCB, restored from its arm table, and the table's arms in order."""

    learner: LinUCB
    arms: tuple[str, ...]

    @classmethod
    def of(cls, payload: Mapping[str, Any] | None) -> LinUCBTable:
        """From an arm table's payload (``None``: no table yet, the prior); ``ValueError`` if it is no LinUCB's."""
        if payload is None:
            return cls(LinUCB(), ())
        learner = LinUCB.from_table_payload(dict(payload))
        return cls(learner, tuple(sorted(learner.known_arms())))

    def choose(self, arms: tuple[str, ...], context: Mapping[str, str], seed: int) -> tuple[int, float]:
        """Index in ``arms`` of the arm chosen for ``context`` with ``seed``, and its propensity."""
        return self.learner.choose_index(arms, self.learner.featurize(context), lambda: rng_for(seed))


class LinUCBTables:
    """Per scope key, the last envelope read and its restored :class:`LinUCBTable` (bounded)."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._known: dict[str, tuple[Envelope | None, LinUCBTable]] = {}

    def table(self, scope: str, envelope: Envelope | None) -> LinUCBTable:
        """The restored table of ``envelope`` (restored once while the scope's stored value is unchanged)."""
        known = self._known.get(scope)
        if known is not None and known[0] is envelope:
            return known[1]
        table = LinUCBTable.of(None if envelope is None else envelope.payload)
        if len(self._known) >= self.max_entries:
            self._known.clear()  # user scopes: bounded, and the live ones come straight back
        self._known[scope] = (envelope, table)
        return table
