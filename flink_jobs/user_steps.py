"""What the user stage does with one user's state, as pure steps: state and event in, state and outputs out.

No Flink here (``flink_jobs/user_state.py`` is the adapter: it reads and writes keyed state,
registers the timers these steps ask for, counts metrics and routes the messages). Three steps:

* :meth:`UserSteps.on_event` — an event of the user: counts, session, impression->reward join,
  the MF learning step (prequential error first) or the implicit learner's
  (``flink_jobs/user_learning.py``: judged first), or the user's erasure;
* :meth:`UserSteps.on_refresh` — the score refresh (a processing-time timer): its Redis keys, unreported progress;
* :meth:`UserSteps.on_event_timer` — event time passed a deadline: expired impressions (reward 0)
  and a session that closed.

Each step is ``(record, input) -> (record, outputs)`` (``None``: no state for the user); it may
change the record it is given in place. Timers to set and metric effects are outputs too
(:class:`EventTimer`, :class:`CancelTimer`, :class:`RefreshTimer`, :class:`LateEvent`,
:class:`RewardUnmatched`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

import orjson

from flink_jobs.attribution import ATTRIBUTED, ExperimentTally
from flink_jobs.impressions import PendingImpression, expiry_feedback
from flink_jobs.item_replica import ItemReplica
from flink_jobs.messages import (
    BanditFeedback,
    ClosedSession,
    EraseUser,
    ForgetScope,
    ItemTouch,
    ModelProgress,
    RedisWrite,
    RedisWrites,
    SetMember,
)
from flink_jobs.user_learning import ImplicitLearning
from flink_jobs.user_payloads import session_payload, summary_payload
from flink_jobs.user_record import Progress, UserRecord, remembered
from online_models import session as sessions
from online_models.bandits import BanditScope, scope_key
from online_models.drift import DriftAlarm, DriftWatch
from online_models.implicit_params import ImplicitConfig
from online_models.mf import GlobalParams, MFConfig, initial_user, learn_step, predict
from online_models.popularity import InteractionWeights
from schemas import Event, EventType, ServedList
from schemas.events import SYMBOL_OF
from schemas.redis_keys import RedisKeys
from schemas.redis_values import CompactValue, encode_user_value

#: A user's learned events between ModelProgress reports (also sent on the user's timers).
REPORT_EVERY = 500
# Read for every event: an Enum's members, looked up on its class, cost ~0.15 us each in Python 3.11.
_ERASE, _BLOCK, _IMPRESSION, _CLICK = EventType.ERASE, EventType.BLOCK, EventType.IMPRESSION, EventType.CLICK


@dataclass(frozen=True)
class DriftReaction:
    """What the user stage does when a drift detector alarms (``drift_reaction`` and its settings).

    ``off``: no detectors; ``alert``: the alarms go out (metric, model metadata); ``boost``: also
    learn with the MF learning rates times ``boost_factor`` for the next ``boost_events`` events.
    """

    reaction: str = "alert"
    boost_factor: float = 3.0
    boost_events: int = 2000


@dataclass(frozen=True)
class UserStageConfig:
    """What the user stage needs from the settings (plain values: it is pickled into the job)."""

    mf: MFConfig
    keys: RedisKeys
    scopes: tuple[BanditScope, ...]
    session_gap_ms: int
    impression_ttl_ms: int
    top_k: int
    score_refresh_ms: int
    redis_shards: int
    value_format: str = "compact"  # "legacy": format-1 hashes (schemas.redis_keys)
    user_ttl_ms: int = 0
    drift: DriftReaction = DriftReaction()
    attribution: bool = False  # credit outcomes to experiment variants (settings.attribution_on)
    attribution_window_ms: int = 30 * 60 * 1000  # an outcome without a request id: lists this recent
    max_exposures: int = 100  # lists kept per user for attribution (within the window)
    bandit_context: tuple[str, ...] = ()  # context keys a pending impression keeps for its feedback (LinUCB's)
    implicit: ImplicitConfig | None = None  # the implicit learner (then ``mf`` is its item_shape); None: MF
    ranking_k: int = 10  # the implicit learner's running HitRate@k


class Impressions(Protocol):
    """The user's pending impressions by request id: Flink ``MapState`` in the job, a dict in tests."""

    def get(self, request_id: str) -> tuple[Any, ...] | None: ...
    def __setitem__(self, request_id: str, value: tuple[Any, ...]) -> None: ...
    def __delitem__(self, request_id: str) -> None: ...
    def items(self) -> Collection[tuple[str, tuple[Any, ...]]]: ...
    def clear(self) -> None: ...


@dataclass(frozen=True)
class EventTimer:
    """Set an event-time timer for the user at ``at_ms``."""

    at_ms: int


@dataclass(frozen=True)
class CancelTimer:
    """Delete the user's event-time timer at ``at_ms``: what it was set for is done already."""

    at_ms: int


@dataclass(frozen=True)
class RefreshTimer:
    """The user changed: its Redis value is due (the stage's ``RefreshSchedule`` says when)."""


@dataclass(frozen=True)
class LateEvent:
    """An event arrived too late for its session (counted in ``late_events``)."""


@dataclass(frozen=True)
class RewardUnmatched:
    """A click named an impression that is unknown or expired (counted in ``rewards_unmatched``)."""


class UserSteps:
    """The user stage's logic for one subtask: its item replica, global MF parameters and the steps."""

    def __init__(self, config: UserStageConfig, subtask: int) -> None:
        self.config = config
        self.replica = ItemReplica(config.mf, subtask)
        self.implicit = None if config.implicit is None else ImplicitLearning(
            config.implicit, self.replica, config.ranking_k, config.session_gap_ms)
        self.global_params = GlobalParams()
        self.weights = InteractionWeights()
        self.last_event_ms = 0
        self.joined = False
        # Per subtask, over its users' events in arrival order; rebuilt fresh after a restore (drift.py).
        self.drift = DriftWatch() if config.drift.reaction != "off" else None
        self.alarms: list[DriftAlarm] = []
        self.boost_left = 0
        self.boosted = replace(config.mf, bias_lr=config.mf.bias_lr * config.drift.boost_factor,
                               latent_lr=config.mf.latent_lr * config.drift.boost_factor)

    # -- events ---------------------------------------------------------------------------

    def on_event(
        self, record: UserRecord | None, event: Event, impressions: Impressions
    ) -> tuple[UserRecord | None, list[Any]]:
        """Apply ``event`` to the user's ``record`` (``None``: a new user); the record and what to send.

        An erasure empties ``impressions`` and returns no record: the user's state is cleared.
        """
        self.last_event_ms = max(self.last_event_ms, event.event_time_ms)
        if self.drift is not None:
            self.alarms.extend(self.drift.observe_event(event))
        kind = event.type
        if kind is _ERASE:
            return None, list(self._erase(record, event, impressions))
        record = record or UserRecord()
        symbol = SYMBOL_OF[kind]
        record.counts[symbol] = record.counts.get(symbol, 0) + 1
        record.t = max(record.t, event.event_time_ms)
        if kind is _BLOCK:  # v2 "not interested": no session step, nothing to learn
            outputs: list[Any] = [self._block(event)]
        else:
            outputs = [*self._session(record, event), *self._rewards(record, event, impressions)]
        if event.item_id is not None and kind is not _BLOCK:
            outputs.extend(self._touch(record, event))
            if record.progress.learned >= REPORT_EVERY:
                outputs.extend(self.report(record))
        if self.implicit is not None:
            self.implicit.observe(record, event)
        if not record.due:  # in the record, not a state of its own: one state write per event
            record.due = True
            outputs.append(RefreshTimer())
        if symbol in ATTRIBUTED and self.config.attribution and not self.joined:
            tally = record.exposures.credit(symbol, event.item_id, event.context.get("request_id"),
                                            event.event_time_ms, self.config.attribution_window_ms,
                                            self.config.max_exposures)
            if tally is not None:
                outputs.append(tally)
        if self.alarms:
            outputs.extend(self._react())
        return record, outputs

    def on_served(self, record: UserRecord | None, served: ServedList) -> tuple[UserRecord | None, list[Any]]:
        """A list serving answered the user: kept for attribution when it ran under an experiment."""
        if served.experiment is None:
            return record, []
        record = record or UserRecord()
        return record, record.exposures.expose(served, self.config.max_exposures, self.config.attribution_window_ms)

    def _react(self) -> list[DriftAlarm]:
        """The alarms raised since the last call, out; an error alarm starts a boost when configured."""
        alarms, self.alarms = self.alarms, []
        if self.config.drift.reaction == "boost" and any(alarm.signal == "error" for alarm in alarms):
            self.boost_left = self.config.drift.boost_events
        return alarms

    def _erase(self, record: UserRecord | None, event: Event, impressions: Impressions) -> Iterator[Any]:
        if record is not None:
            yield from self.report(record)  # what the user's events taught the model stays counted
        impressions.clear()
        yield EraseUser(event.user_id, event.event_time_ms)
        if BanditScope.USER in self.config.scopes:  # the user's own bandit is the user's data too
            yield ForgetScope(scope_key(BanditScope.USER, event), event.event_time_ms)

    def _block(self, event: Event) -> RedisWrite:
        """The blocked item or category added to the user's set serving filters on (event schema v2)."""
        keys, user_id = self.config.keys, event.user_id
        if event.item_id is not None:
            return RedisWrite(keys.blocks(user_id), event.event_time_ms, SetMember(event.item_id), user_id)
        assert event.category is not None  # decode guarantees one of the two
        return RedisWrite(keys.blocked_categories(user_id), event.event_time_ms, SetMember(event.category), user_id)

    def _session(self, record: UserRecord, event: Event) -> Iterator[Any]:
        state, outputs = sessions.step(record.session, event, gap_ms=self.config.session_gap_ms)
        record.session = state
        if state is not None and not record.session_timer:
            # One timer at a time: when it fires early (the session went on), on_event_timer sets the next.
            yield self._session_timer(record, state)
        yield from self._session_outputs(record, outputs)

    def _session_timer(self, record: UserRecord, state: sessions.SessionState) -> EventTimer:
        record.session_timer = sessions.deadline_ms(state, gap_ms=self.config.session_gap_ms)
        return EventTimer(record.session_timer)

    def _session_outputs(self, record: UserRecord, outputs: list[sessions.SessionOutput]) -> Iterator[Any]:
        for output in outputs:
            if isinstance(output, sessions.SessionSummary):
                record.history = remembered(output.recent_items, record.history)  # the taste outlives the session
                yield ClosedSession(orjson.dumps(summary_payload(output)))
            else:
                record.progress.late_events += 1
                yield LateEvent()

    def _rewards(self, record: UserRecord, event: Event, impressions: Impressions) -> Iterator[Any]:
        self.joined = False  # whether this event answered a decision (then no served list gets it)
        if event.type is _IMPRESSION and event.decision is not None:
            expires = event.event_time_ms + self.config.impression_ttl_ms
            scopes = [scope_key(scope, event) for scope in self.config.scopes]
            experiment, variant = event.context.get("experiment"), event.context.get("variant")
            kept = tuple((k, event.context[k]) for k in self.config.bandit_context if k in event.context)
            if self.config.attribution and experiment and variant:  # a decision under an experiment: exposed
                yield ExperimentTally(experiment, variant, event.event_time_ms, exposures=1)
            else:
                experiment = variant = None
            stored = (event.decision.arm, scopes, expires, experiment, variant, kept)
            impressions[event.decision.request_id] = stored[:6 if kept else 5 if experiment else 3]
            yield EventTimer(expires)
        elif event.type is _CLICK and (request_id := event.context.get("request_id")):
            stored = impressions.get(request_id)
            if stored is None:  # unknown or expired impression: counted, never silently lost
                record.progress.rewards_unmatched += 1
                yield RewardUnmatched()
                return
            del impressions[request_id]
            record.progress.rewards_matched += 1
            pending = PendingImpression(*stored)
            self.joined = True
            if pending.experiment and pending.variant:
                yield ExperimentTally(pending.experiment, pending.variant, event.event_time_ms, clicked=1, clicks=1)
            for key in pending.scopes:
                yield BanditFeedback(key, pending.arm, 1.0, event.event_time_ms, pending.context)

    def _touch(self, record: UserRecord, event: Event) -> list[ItemTouch]:
        """Learn from ``event`` (when it has a target) and say what it did to each item, one message per item."""
        assert event.item_id is not None
        weight = self.weights.weight(event.type)
        segment = event.context.get("segment")
        if self.implicit is not None:
            return self.implicit.touch(record, event, weight, segment)
        target = self.config.mf.targets.target(event)
        if target is None:
            return [ItemTouch(event.item_id, event.event_time_ms, weight, segment)] if weight > 0 else []
        cfg = self.config.mf
        if self.boost_left:
            cfg, self.boost_left = self.boosted, self.boost_left - 1
        user = record.factors if record.factors is not None else initial_user(cfg, event.user_id)
        item = self.replica.items.get(event.item_id)
        error = predict(user, item, self.global_params) - target  # prequential: predict, then learn
        user, new_item, self.global_params = learn_step(user, item, self.global_params, target, cfg)
        update = self.replica.learned(event.item_id, item, new_item)
        record.factors = user
        record.learned += 1
        record.progress.learned += 1
        record.progress.squared_error += error * error
        record.progress.absolute_error += abs(error)
        if self.drift is not None:
            self.alarms.extend(self.drift.observe_error(error * error, event.event_time_ms))
        return [ItemTouch(event.item_id, event.event_time_ms, weight, segment, update.d_bias,
                          update.d_factors.astype("<f8").tobytes(), self.replica.subtask, update.seq)]

    # -- timers -----------------------------------------------------------------------------

    def on_refresh(self, user_id: str, record: UserRecord) -> tuple[UserRecord, list[Any]]:
        """The score refresh fired: the user's Redis keys and unreported progress."""
        record.due = False
        return record, [self.snapshot(user_id, record), *self.report(record)]

    def on_event_timer(
        self, user_id: str, record: UserRecord | None, timestamp: int, impressions: Impressions,
        watermark_ms: int | None = None,
    ) -> tuple[UserRecord | None, list[Any]]:
        """Event time reached ``timestamp``: expire impressions, close the session when it is over.

        ``watermark_ms`` (the watermark this timer fires on, when later than ``timestamp``): every
        deadline of the user up to it is handled now, and the user's other timers up to it, which
        would fire on the same watermark for nothing, are cancelled (:class:`CancelTimer`). A job
        restored after a pause longer than the impression TTL otherwise fired one Python call per
        pending impression on its first watermark (ADR 0007, eighteenth session).
        """
        due = timestamp if watermark_ms is None else max(timestamp, watermark_ms)
        expired = self._expire_impressions(due, impressions)
        outputs: list[Any] = expiry_feedback(expired)
        done = {pending.expires_ms for pending in expired} - {timestamp}
        if record is None:
            return None, [*outputs, *map(CancelTimer, sorted(done))]
        # No progress report here: a timer changes no progress, and the refreshes that report it
        # all run before every barrier and at the end of a bounded input.
        if record.session_timer is not None and record.session_timer <= due:
            if record.session_timer != timestamp:
                done.add(record.session_timer)
            record.session_timer = None
        outputs.extend(map(CancelTimer, sorted(done)))
        state = record.session
        if state is None:
            return record, outputs
        state, closed = sessions.on_timer(state, due, gap_ms=self.config.session_gap_ms)
        if closed:
            record.session = None
            outputs.extend(self._session_outputs(record, closed))
            outputs.append(self.snapshot(user_id, record))
        elif not record.session_timer and state is not None:
            outputs.append(self._session_timer(record, state))  # the session went on past this timer
        return record, outputs

    @staticmethod
    def _expire_impressions(due_ms: int, impressions: Impressions) -> list[PendingImpression]:
        """The impressions whose deadline is ``due_ms`` or earlier, taken out of ``impressions`` (reward 0)."""
        pending = impressions.items()
        expired = [(rid, PendingImpression(*value)) for rid, value in pending if value[2] <= due_ms]
        if len(expired) == len(pending) and expired:  # all of them (a restored job's first watermark): one call
            impressions.clear()
        else:
            for request_id, _ in expired:
                del impressions[request_id]
        return [impression for _, impression in expired]

    # -- what the user's state says outside ---------------------------------------------------

    def snapshot(self, user_id: str, record: UserRecord) -> RedisWrites:
        """The user's keys in Redis (counts, live session, factors, top-k scores), as one message."""
        keys, t = self.config.keys, record.t
        counts = {"counts": record.counts, "events": sum(record.counts.values()), "learned": record.learned}
        state = record.session
        session = session_payload(state)
        if record.history:
            session["history"] = list(record.history)
        factors = recs = None
        if record.factors is not None:
            user = record.factors
            seen = [item for _, item in state.recent] if state else []
            top = self.replica.items.top_k(user, self.global_params, self.config.top_k, exclude=seen)
            recs = {"items": [[item, score] for item, score in top], "global_mean": self.global_params.mean}
            factors = {"bias": user.bias, "factors": user.factors}
        if self.config.value_format != "legacy":
            value = CompactValue(encode_user_value(counts, session, factors, recs), self.config.user_ttl_ms)
            return RedisWrites((RedisWrite(keys.user_record(user_id), t, value, user_id),), user_id)
        writes = [
            RedisWrite(keys.counts(user_id), t, counts, user_id),
            RedisWrite(keys.session(user_id), t, session, user_id),
        ]
        if factors is not None:
            writes.append(RedisWrite(keys.factors(user_id), t, factors, user_id))
            writes.append(RedisWrite(keys.recs(user_id), t, recs, user_id))
        return RedisWrites(tuple(writes), user_id)

    def report(self, record: UserRecord) -> Iterator[ModelProgress]:
        """The user's unreported progress as one ModelProgress; reset in ``record`` (the caller saves it)."""
        p = record.progress
        if not p.any():
            return
        yield ModelProgress(p.learned, p.squared_error, p.absolute_error, p.rewards_matched,
                            p.rewards_unmatched, p.late_events, self.last_event_ms, p.judged, p.hits)
        record.progress = Progress()
