"""The baseline the Flink job is measured against: one hand-written single-process consume loop.

Same input, same learners, same Redis output as the job's per-user stage, with nothing else:

* a confluent-kafka consumer on ``PULSE_TOPIC_EVENTS`` (group ``PULSE_JOB_GROUP_ID``, earliest),
  ``consume(max_batch, poll_timeout)`` -- one batch per poll;
* decode with :class:`schemas.EventCodec` (bad payloads are counted and skipped; no DLQ);
* per event: lifetime counts, ``online_models.session.step`` and, for learned event types,
  ``online_models.mf.learn_step`` against an :class:`online_models.item_table.ItemTable`
  (predict, learn, put the item back with version + 1) -- what ``flink_jobs/user_state.py`` does;
* per poll: the value ``UserSteps.snapshot`` writes for every user the batch touched (format 2:
  counts, session, factors and ``recs`` = top-k of the item table without the session's recent
  items, in one string), through ``flink_jobs.redis_writer.RedisWriter.write_batch`` --
  one pipeline per poll.

Not done here (the job does it): DLQ and closed-session sinks, impression->reward join,
bandit arms, popularity, item-parameter owners, model metadata, checkpoints. State is plain
Python objects in dicts (no per-event (de)serialisation), which is what a hand-written loop would do.

Runs until SIGTERM/SIGINT; settings come from the same ``PULSE_*`` variables as ``pulse job run``:

    PULSE_TOPIC_EVENTS=t PULSE_REDIS_PREFIX=p PULSE_JOB_GROUP_ID=g .venv/bin/python bench/loop_baseline.py \
        [--max-batch 1000] [--poll-timeout-ms 10] [--profile loop.prof]

``--profile`` runs the loop under cProfile and writes the stats on exit (slows it ~1.5-2x).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from confluent_kafka import Consumer, KafkaError

from config import Settings
from flink_jobs.redis_writer import BatchItem, RedisWriter
from flink_jobs.user_state import session_payload  # the job's own payload shape
from online_models import session as sessions
from online_models.item_table import ItemTable
from online_models.mf import GlobalParams, UserParams, initial_user, learn_step, predict
from online_models.mf_params import mf_config
from schemas import DecodeError, Event, EventCodec, EventType, Limits, load_registry
from schemas.redis_keys import RedisKeys
from schemas.redis_values import CompactValue, encode_user_value

log = logging.getLogger("loop_baseline")


class _User:
    __slots__ = ("counts", "factors", "learned", "session", "t")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.learned = 0
        self.session: sessions.SessionState | None = None
        self.factors: UserParams | None = None
        self.t = 0


class Loop:
    """Per-user state + learners; :meth:`process` one event, :meth:`snapshot` a user's Redis writes."""

    def __init__(self, settings: Settings) -> None:
        self.cfg = mf_config(settings)
        self.keys = RedisKeys(settings.redis_prefix)
        self.gap_ms = settings.session_gap_ms
        self.top_k = settings.top_k
        self.items = ItemTable(self.cfg)
        self.glob = GlobalParams()
        self.users: dict[str, _User] = {}
        self.learned = 0
        self.squared_error = 0.0

    def process(self, event: Event) -> None:
        user = self.users.get(event.user_id)
        if event.type is EventType.ERASE:
            self.users.pop(event.user_id, None)
            return
        if user is None:
            user = self.users[event.user_id] = _User()
        kind = event.type.value
        user.counts[kind] = user.counts.get(kind, 0) + 1
        user.t = max(user.t, event.event_time_ms)
        user.session, _outputs = sessions.step(user.session, event, gap_ms=self.gap_ms)  # summaries: not sunk
        target = self.cfg.targets.target(event)
        if target is None or event.item_id is None:
            return
        params = user.factors or initial_user(self.cfg, event.user_id)
        item = self.items.get(event.item_id)
        error = predict(params, item, self.glob) - target  # prequential, as the job
        user.factors, new_item, self.glob = learn_step(params, item, self.glob, target, self.cfg)
        self.items.put(event.item_id, new_item, self.items.version(event.item_id) + 1)
        user.learned += 1
        self.learned += 1
        self.squared_error += error * error

    def snapshot(self, user_id: str) -> list[BatchItem]:
        """The same value as ``flink_jobs.user_steps.UserSteps.snapshot`` (format 2: one string per user)."""
        user = self.users.get(user_id)
        if user is None:
            return []
        t, state = user.t, user.session
        counts = {"counts": user.counts, "events": sum(user.counts.values()), "learned": user.learned}
        factors = recs = None
        if user.factors is not None:
            factors = {"bias": user.factors.bias, "factors": user.factors.factors}
            seen = [item for _, item in state.recent] if state else []
            top = self.items.top_k(user.factors, self.glob, self.top_k, exclude=seen)
            recs = {"items": [[item, score] for item, score in top], "global_mean": self.glob.mean}
        body = encode_user_value(counts, session_payload(state), factors, recs)
        return [BatchItem(self.keys.user_record(user_id), t, CompactValue(body))]




def run(settings: Settings, max_batch: int, poll_timeout_s: float, stop: list[bool]) -> dict[str, float]:
    """Consume until ``stop[0]``; returns totals."""
    codec = EventCodec(load_registry(settings.schema_registry_url), Limits())
    loop = Loop(settings)
    writer = RedisWriter(RedisKeys(settings.redis_prefix), settings.model_version,
                         url=settings.redis_url, password=settings.redis_password).open()
    consumer = Consumer(settings.kafka_config(**{
        "group.id": settings.job_group_id,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
    }))
    consumer.subscribe([settings.topic_events])
    totals = {"events": 0, "bad": 0, "polls": 0, "keys_written": 0, "redis_s": 0.0}
    try:
        while not stop[0]:
            messages = consumer.consume(max_batch, poll_timeout_s)
            if not messages:
                continue
            touched: dict[str, None] = {}
            for message in messages:
                if message.error() is not None:
                    if message.error().code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer error: %s", message.error())
                    continue
                try:
                    event = codec.decode(message.value())
                except DecodeError:
                    totals["bad"] += 1
                    continue
                loop.process(event)
                touched[event.user_id] = None
                totals["events"] += 1
            batch = [item for user_id in touched for item in loop.snapshot(user_id)]
            if batch:
                result = writer.write_batch(batch)
                totals["keys_written"] += result.keys
                totals["redis_s"] += result.elapsed_s
            totals["polls"] += 1
    finally:
        consumer.close()
        writer.close()
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-batch", type=int, default=1000, help="most messages per poll")
    parser.add_argument("--poll-timeout-ms", type=float, default=10.0, help="longest wait for a batch to fill")
    parser.add_argument("--profile", type=Path, help="write cProfile stats here on exit")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings()
    stop = [False]

    def _stop(signum: int, _frame: object) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("consuming %s -> redis prefix %s (batch %d, timeout %.0f ms)", settings.topic_events,
             settings.redis_prefix, args.max_batch, args.poll_timeout_ms)
    started = time.perf_counter()
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        totals = profiler.runcall(run, settings, args.max_batch, args.poll_timeout_ms / 1000, stop)
        profiler.dump_stats(args.profile)
    else:
        totals = run(settings, args.max_batch, args.poll_timeout_ms / 1000, stop)
    log.info("stopped after %.1f s: %s", time.perf_counter() - started, totals)


if __name__ == "__main__":
    main()
