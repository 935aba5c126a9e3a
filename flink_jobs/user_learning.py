"""The implicit learner's step in the user stage (``PULSE_MF_LEARNER=bpr|wmf``): judge, know, learn.

Pure (no Flink), used by :class:`flink_jobs.user_steps.UserSteps`. For each event about an item,
as ``pulse eval mf --metric ranking`` does it (``online_models/ranking.py``), so the job's running
HitRate@k is the evaluation's:

1. **judge** a positive before learning it: the rank of its item among every item of the
   subtask's replica, scored for the user, with the items of the user's open session excluded
   (a session of the user's events but impressions, kept for this in the record: shown is not
   seen); an item already in it is not judged, an item the replica does not know is a miss;
2. **know** the item (a replica row with its initial parameters), so it can be ranked and drawn
   as a negative before anyone clicked it, as :class:`online_models.implicit.ImplicitMF` knows it;
3. **learn**: BPR with negatives drawn from the replica's rows by the event's id, or WMF; each
   item the step changed becomes one :class:`ItemTouch` for its owner.

At parallelism 1 the replica holds the items in the order the evaluation's learner does, so the
negatives and the judgements are the same; with more subtasks each judges its own users against
its replica, which lags other subtasks' updates by the item snapshots' staleness.
"""

from __future__ import annotations

import numpy as np

from flink_jobs.item_replica import ItemReplica, RowsStep
from flink_jobs.messages import ItemTouch
from flink_jobs.user_record import UserRecord
from online_models import session as sessions
from online_models.implicit_params import (
    ImplicitConfig,
    bpr_rows,
    draw_key,
    initial_implicit_user,
    last_draws,
    negative_rows,
    wmf_step,
)
from online_models.mf import GlobalParams, ItemParams, UserParams
from online_models.ranking import DEFAULT_POSITIVES, rank_of
from schemas import Event, EventType

__all__ = ["ImplicitLearning"]

#: The implicit learner has no global mean and no user bias (they cannot change a user's ranking).
_NO_GLOBAL = GlobalParams()


class ImplicitLearning:
    """One user-stage subtask's implicit learner over its item replica.

    >>> from online_models.implicit_params import item_shape
    >>> cfg = ImplicitConfig(n_factors=4, seed=1)
    >>> learning = ImplicitLearning(cfg, ItemReplica(item_shape(cfg), subtask=0), k=10)
    >>> record = UserRecord()
    >>> clicks = [Event(f"e{n}", EventType.CLICK, f"u{n}", n, item_id=item) for n, item in enumerate("aab")]
    >>> [len(learning.touch(record, click, 1.0, None)) for click in clicks]  # b's step also moves a (a negative)
    [1, 1, 2]
    >>> record.progress.judged, record.progress.hits, record.learned  # a, then b: unknown when judged (misses)
    (3, 1, 3)
    """

    def __init__(self, cfg: ImplicitConfig, replica: ItemReplica, k: int,
                 gap_ms: int = sessions.DEFAULT_GAP_MS) -> None:  # fmt: skip
        self.cfg = cfg
        self.replica = replica
        self.k = k
        self.gap_ms = gap_ms

    def touch(self, record: UserRecord, event: Event, weight: float, segment: str | None) -> list[ItemTouch]:
        """Judge, know and learn ``event`` (it names an item); the touches for the items' owners.

        ``weight`` and ``segment``: the event's popularity hit, carried by the touch of its own item.
        """
        item_id = event.item_id
        assert item_id is not None
        user = record.factors if record.factors is not None else initial_implicit_user(self.cfg, event.user_id)
        if event.type in DEFAULT_POSITIVES:
            self._judge(record, user, item_id)
        row = self.replica.items.know(item_id)
        step = self._learn(user, event, row, record)
        if step is None:
            return [ItemTouch(item_id, event.event_time_ms, weight, segment)] if weight > 0 else []
        # Row 0 of the step is the event's own item (its popularity hit rides on its touch), then the negatives.
        items, t, subtask = self.replica.items, event.event_time_ms, self.replica.subtask
        updates = self.replica.learned_rows(*step)
        return [ItemTouch(items.item_at(r), t, weight if n == 0 else 0.0, segment if n == 0 else None, update.d_bias,
                          update.d_factors.astype("<f8", copy=False).tobytes(), subtask, update.seq)
                for n, (r, update) in enumerate(zip(step[0], updates, strict=True))]  # fmt: skip

    def observe(self, record: UserRecord, event: Event) -> None:
        """After the event's touch: the judge's session takes every event but impressions."""
        if event.type is not EventType.IMPRESSION:
            record.seen, _ = sessions.step(record.seen, event, gap_ms=self.gap_ms)

    def _judge(self, record: UserRecord, user: UserParams, item_id: str) -> None:
        items = self.replica.items
        seen = [item for _, item in record.seen.recent] if record.seen is not None else []
        if item_id in seen:  # the job could never recommend it: not judged (the evaluation's "repeat")
            return
        record.progress.judged += 1
        row = items.row(item_id)
        if row is None:  # not known yet: a miss
            return
        skip = [r for r in map(items.row, seen) if r is not None]
        if rank_of(items.scores(user, _NO_GLOBAL), row, skip) <= self.k:
            record.progress.hits += 1

    def _learn(self, user: UserParams, event: Event, row: int, record: UserRecord) -> RowsStep | None:
        """One learning step, if the event is one: the changed rows, old and new; the user's factors in ``record``."""
        cfg, items = self.cfg, self.replica.items
        if event.type is EventType.IMPRESSION:
            weight = cfg.weights.impression if cfg.loss == "wmf" else 0.0
        else:
            weight = cfg.weights.positive(event)
        if weight <= 0:
            return None
        rows = [row]
        if cfg.loss == "wmf":
            old_biases, old_factors = items.rows_params(rows)
            target = 0.0 if event.type is EventType.IMPRESSION else 1.0
            user, new = wmf_step(user, ItemParams(float(old_biases[0]), old_factors[0]), target, weight, cfg)
            new_biases, new_factors = np.array([new.bias]), new.factors[np.newaxis, :]
        else:
            drawn = negative_rows(cfg.seed, draw_key(event.event_id), len(items), cfg.n_negatives, skip=row)
            kept = last_draws(drawn)  # drawn twice: the later step wins, as in ImplicitMF
            rows += kept
            old_biases, old_factors = items.rows_params(rows)  # the positive, then each drawn row once
            drawn_biases, drawn_factors = items.rows_params(drawn)  # every draw: a row drawn twice steps twice
            user, positive, negative_biases, negative_factors = bpr_rows(
                user, ItemParams(float(old_biases[0]), old_factors[0]), drawn_biases, drawn_factors, weight, cfg)
            index = list(kept.values())
            new_biases = np.concatenate(([positive.bias], negative_biases[index]))
            new_factors = np.vstack((positive.factors, negative_factors[index]))
        record.factors = user
        record.learned += 1
        record.progress.learned += 1
        return rows, old_biases, old_factors, new_biases, new_factors
