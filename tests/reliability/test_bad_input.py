"""Bad-input campaign: every kind of malformed event, mixed into good traffic, ends in the DLQ.

Issue: ">= 10,000 malformed events of every kind (truncated, wrong magic, unknown schema id, wrong
types, missing ids, far-future/past timestamps, oversized, unicode edge cases in ids) mixed into
good traffic -> 100% in the DLQ with reasons, job never restarts."

The malformed payloads come from the codec's own generators (``tests.unit.schemas.test_codec``)
plus one for Unicode edge cases in ids. What the codec decides about those ids:

* rejected with ``bad_id``: C0 control characters and DEL (NUL, newline, ``\\x1b``, ``\\x7f``),
  ids longer than 256 characters (counted in characters: 257 emoji), ids (and the segment)
  that start with a byte-order mark U+FEFF/U+FFFE — PyFlink hands keys back to Python through
  UTF-16 decoding that drops it, so such a user was written to another user's keys, and
  ``"\\ufffe"`` became ``""`` and failed the job;
* rejected with ``invalid_body``: bytes that are not UTF-8 at all, which is how a lone surrogate
  (WTF-8 ``ED A0 80``), a CESU-8 surrogate pair or an overlong encoding (``C0 80``) arrives —
  Avro strings are UTF-8, so these fail before any id check;
* accepted (and their users counted exactly in Redis): any other Unicode text — Japanese,
  emoji (256 of them is still 256 characters), ZWJ sequences, combining marks, a BOM that is
  not first, bidi override, U+10FFFF, ``{``/``}``/``%`` (escaped in Redis keys).

"Never restarts": the job runs with ``restart_attempts=0`` (restart strategy ``none``), so any
task failure ends the job with a non-zero exit instead of a silent restart and replay; while
it runs, its Prometheus endpoint is scraped and ``numRestarts`` must stay 0.

Sizes: ``PULSE_BAD_INPUT_PER_KIND`` (default 10,000) malformed payloads of every kind;
``PULSE_BAD_INPUT_OVERSIZED`` (default: the same) of the oversized (>64 KiB) kind.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis as redis_lib
from confluent_kafka import Consumer
from prometheus_client.parser import text_string_to_metric_families

from config import Settings
from infra.local.process import free_port
from producers.producer import EventProducer
from producers.sources import open_source
from producers.topics import ensure_topics
from schemas import DeadLetterCodec, DecodeError, DecodeReason, Event, EventCodec, EventType
from schemas.redis_keys import Envelope, RedisKeys
from serving.sync_reads import user_part
from tests.conftest import isolated_settings
from tests.integration.jobs import start_job, stop_job, tail
from tests.unit.schemas.test_codec import MALFORMED, make_event

pytestmark = [pytest.mark.integration, pytest.mark.flink_job]

PER_KIND = int(os.environ.get("PULSE_BAD_INPUT_PER_KIND", "10000"))
OVERSIZED = int(os.environ.get("PULSE_BAD_INPUT_OVERSIZED", str(PER_KIND)))
N_GOOD = 4000
JOB_TIMEOUT_S = 600

Generator = Callable[[EventCodec, random.Random, int], tuple[bytes, DecodeReason]]


def _expect(reason: DecodeReason) -> Generator:
    """A codec generator (always the one reason) as a generator of (payload, expected reason)."""
    make = MALFORMED[reason]
    return lambda codec, rng, i: (make(codec, rng, i), reason)


#: A private-use character (3 UTF-8 bytes) that a 3-byte invalid sequence replaces in place.
_PLACEHOLDER = "\ue000"


def _not_utf8(codec: EventCodec, i: int, raw: bytes) -> bytes:
    """A valid event whose user id has ``raw`` (3 bytes, not UTF-8) in the middle; lengths stay right."""
    payload = codec.encode(make_event(i, user_id=f"u{_PLACEHOLDER}{i}"))
    mark = _PLACEHOLDER.encode()
    assert len(raw) == len(mark) and payload.count(mark) == 1
    return payload.replace(mark, raw)


_NOT_UTF8 = [
    "\ud800".encode("utf-8", "surrogatepass"),  # lone high surrogate (WTF-8)
    "\udfff".encode("utf-8", "surrogatepass"),  # lone low surrogate
    b"\xc0\x80\x41",  # overlong NUL (modified UTF-8) + "A"
    b"\xe0\x80\xaf",  # overlong "/"
    b"\xed\xa0\xbd",  # first half of a CESU-8 surrogate pair
]
_CONTROL = ["\x00", "\n", "\r", "\t", "\x1b", "\x7f", "\x01"]


def bad_unicode_id(codec: EventCodec, rng: random.Random, i: int) -> tuple[bytes, DecodeReason]:
    """Unicode edge cases in ids that must be rejected (reason per the codec, see the module doc)."""
    variant = i % 5
    if variant == 0:
        return _not_utf8(codec, i, _NOT_UTF8[(i // 5) % len(_NOT_UTF8)]), DecodeReason.INVALID_BODY
    if variant == 1:
        control = _CONTROL[(i // 5) % len(_CONTROL)]
        field = rng.choice(["user_id", "item_id", "event_id"])
        return codec.encode(make_event(i, **{field: f"ユ{control}{i}"})), DecodeReason.BAD_ID
    if variant == 2:  # 257 characters, whatever their byte length
        char = rng.choice(["😀", "ユ", "é", "\u200d"])
        return codec.encode(make_event(i, user_id=char * 257)), DecodeReason.BAD_ID
    if variant == 3:  # a leading byte-order mark (PyFlink's Java->Python strings drop it)
        bom = rng.choice(["\ufeff", "\ufffe"])
        overrides = rng.choice([{"user_id": f"{bom}u{i}"}, {"item_id": f"{bom}"}, {"context": {"segment": bom}}])
        return codec.encode(make_event(i, **overrides)), DecodeReason.BAD_ID
    return codec.encode(make_event(i, user_id=f"👩\u200d💻{i}\x1f")), DecodeReason.BAD_ID


#: Kind (the issue's words) -> generator. Together they cover every DecodeReason.
KINDS: dict[str, Generator] = {
    "truncated": _expect(DecodeReason.TRUNCATED),
    "wrong_magic": _expect(DecodeReason.BAD_MAGIC),
    "unknown_schema_id": _expect(DecodeReason.UNKNOWN_SCHEMA),
    "wrong_types": _expect(DecodeReason.INVALID_BODY),  # bad enum index, non-UTF-8, trailing bytes
    "wrong_values": _expect(DecodeReason.BAD_VALUE),  # NaN/inf value, propensity outside (0, 1]
    "missing_ids": _expect(DecodeReason.MISSING_FIELD),
    "bad_timestamps": _expect(DecodeReason.BAD_TIMESTAMP),  # before 1990, > 1 day in the future
    "oversized": _expect(DecodeReason.TOO_LARGE),  # 64 KiB + up to 10 KB
    "bad_ids": _expect(DecodeReason.BAD_ID),  # NUL, newline, > 256 chars
    "unicode_ids": bad_unicode_id,
}

#: Valid non-ASCII ids: accepted by the codec, counted in Redis like any other user.
UNICODE_USERS = [
    "ユーザー", "😀", "👩\u200d💻", "e\u0301", "x\ufeffy", "a\ufffe", "\u202eevil", "\U0010ffff", "{brace}%",
    "Ω-𝔸", "😀" * 256, "a b", "ü:ser", "\u00a0nbsp",
]
EVENTS_PER_UNICODE_USER = 15


def digest(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=16).digest()


@dataclass
class Campaign:
    sent: Counter[tuple[bytes, str, str]]  # (digest, kind, expected reason) per malformed payload
    injected: Counter[str]  # per kind
    good: list[Event]


def counts_for(kind: str) -> int:
    return OVERSIZED if kind == "oversized" else PER_KIND


def good_events() -> list[Event]:
    events = list(open_source("synthetic", seed=33, limit=N_GOOD))
    now = time.time_ns() // 1_000_000
    kinds = [EventType.VIEW, EventType.CLICK, EventType.ADD_TO_CART, EventType.VIEW, EventType.PURCHASE]
    events += [
        Event(f"uni-{n}-{k}", kinds[k % len(kinds)], user, now - 60_000 + k, item_id=f"item-{k % 7}")
        for n, user in enumerate(UNICODE_USERS)
        for k in range(EVENTS_PER_UNICODE_USER)
    ]
    return events


def produce_campaign(settings: Settings) -> Campaign:
    """Every malformed payload (checked against the codec first), interleaved with the good events.

    Payloads are made one at a time as they are sent (10,000 oversized ones are 700 MB).
    """
    codec = EventCodec()
    rng = random.Random(17)
    plan = [(kind, i) for kind in KINDS for i in range(counts_for(kind))]
    rng.shuffle(plan)
    good = good_events()
    rng.shuffle(good)  # unicode users spread through the stream (counts do not depend on order)
    total = len(good) + len(plan)
    bad_at = set(rng.sample(range(total), len(plan)))
    sent: Counter[tuple[bytes, str, str]] = Counter()
    injected: Counter[str] = Counter()
    wrong: list[str] = []
    goods, bads = iter(good), iter(plan)
    with EventProducer(settings) as producer:
        for n in range(total):
            if n not in bad_at:
                producer.send(next(goods))
                continue
            kind, i = next(bads)
            payload, reason = KINDS[kind](codec, random.Random(f"{kind}-{i}"), i)
            try:
                codec.decode(payload)
                wrong.append(f"{kind}: decodes")
            except DecodeError as err:
                if err.reason is not reason:
                    wrong.append(f"{kind}: {err.reason.value} != {reason.value} ({err.detail[:80]})")
            producer.send_raw(f"bad-{n % 97}".encode(), payload)
            sent[(digest(payload), kind, reason.value)] += 1
            injected[kind] += 1
    assert not wrong, f"{len(wrong)} generated payloads do not fail as their kind says, e.g. {wrong[:3]}"
    assert producer.report.ok and producer.report.produced == total, producer.report
    return Campaign(sent, injected, good)


def numrestarts(url: str) -> float | None:
    """The job's ``numRestarts`` in a scrape of its Prometheus endpoint; None if not up (yet)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    values = [s.value for family in text_string_to_metric_families(text) for s in family.samples
              if s.name.endswith("numRestarts")]
    return max(values) if values else None


def run_bounded_watching_restarts(settings: Settings, log: Path) -> tuple[list[float], float]:
    """Run the bounded job to completion (exit 0 required); numRestarts seen while it ran, and seconds."""
    url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
    started = time.monotonic()
    proc = start_job(settings, "--bounded", "--restore", "none", log=log)
    seen: list[float] = []
    try:
        while proc.poll() is None:
            if time.monotonic() - started > JOB_TIMEOUT_S:
                raise AssertionError(f"job did not finish in {JOB_TIMEOUT_S}s:\n{tail(log)}")
            value = numrestarts(url)
            if value is not None:
                seen.append(value)
            time.sleep(1.0)
    finally:
        stop_job(proc)
    assert proc.returncode == 0, f"job exited {proc.returncode} (restart strategy none: a failure):\n{tail(log)}"
    return seen, time.monotonic() - started


def read_dead_letters(settings: Settings, expected: int, timeout_s: float = 180) -> Counter[tuple[bytes, str]]:
    """(digest of the original bytes, reason) of every committed dead letter; the bytes are not kept."""
    consumer = Consumer(settings.kafka_config(**{
        "group.id": f"t-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest", "isolation.level": "read_committed",
        "fetch.max.bytes": 64 * 1024 * 1024,
    }))
    consumer.subscribe([settings.topic_dlq])
    codec = DeadLetterCodec()
    found: Counter[tuple[bytes, str]] = Counter()
    no_detail = 0
    deadline = time.monotonic() + timeout_s
    idle_until = None
    try:
        while time.monotonic() < deadline:
            batch = [m for m in consumer.consume(1000, timeout=1.0) if m.error() is None]
            for message in batch:
                record = codec.decode(message.value())
                found[(digest(record["original"]), record["reason"])] += 1
                no_detail += not record["detail"]
            if sum(found.values()) >= expected:  # linger a little for anything beyond what was expected
                idle_until = idle_until or time.monotonic() + 2.0
                if time.monotonic() > idle_until:
                    break
    finally:
        consumer.close()
    assert no_detail == 0, f"{no_detail} dead letters without a detail"
    return found


@pytest.fixture
def campaign_settings(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> Settings:
    return isolated_settings(
        kafka_bootstrap, redis_url,
        checkpoint_dir=tmp_path / "checkpoints", checkpoint_interval_ms=2000,
        restart_attempts=0, metrics_port=free_port(),
    )


def test_every_kind_of_malformed_event_ends_in_the_dlq(campaign_settings: Settings, tmp_path: Path) -> None:
    settings = campaign_settings
    ensure_topics(settings)
    t0 = time.monotonic()
    campaign = produce_campaign(settings)
    t_produce = time.monotonic() - t0
    n_bad = sum(campaign.injected.values())

    restarts_seen, t_job = run_bounded_watching_restarts(settings, tmp_path / "job.log")

    t1 = time.monotonic()
    dead = read_dead_letters(settings, n_bad)
    t_read = time.monotonic() - t1

    # Table: per kind, what was injected and what the DLQ holds (matched by the original bytes).
    kind_of = {(d, reason): kind for (d, kind, reason) in campaign.sent}
    in_dlq: dict[str, Counter[str]] = defaultdict(Counter)
    for (d, reason), n in dead.items():
        in_dlq[kind_of.get((d, reason), "?unmatched")][reason] += n
    expected_reasons: dict[str, Counter[str]] = defaultdict(Counter)
    for (_, kind, reason), n in campaign.sent.items():
        expected_reasons[kind][reason] += n
    print(f"\n{'kind':<20}{'injected':>10}{'in DLQ':>10}  reason(s) in the DLQ")
    for kind in [*KINDS, *(k for k in in_dlq if k not in KINDS)]:
        reasons = ", ".join(f"{r}={n}" for r, n in sorted(in_dlq[kind].items()))
        print(f"{kind:<20}{campaign.injected[kind]:>10}{sum(in_dlq[kind].values()):>10}  {reasons}")
    print(f"{'total':<20}{n_bad:>10}{sum(dead.values()):>10}  (+ {len(campaign.good)} good events)")
    print(f"produce {t_produce:.1f}s, job {t_job:.1f}s, DLQ read {t_read:.1f}s; "
          f"numRestarts scraped {len(restarts_seen)}x, max {max(restarts_seen, default=None)}")

    # 100% in the DLQ, each with the reason of its kind, the original bytes whole (digest per payload).
    sent = Counter({(d, reason): n for (d, _, reason), n in campaign.sent.items()})
    assert dead == sent, (
        f"DLQ differs from what was sent: missing {sum((sent - dead).values())}, "
        f"unexpected {sum((dead - sent).values())}"
    )
    for kind in KINDS:
        assert campaign.injected[kind] == counts_for(kind)
        assert in_dlq[kind] == expected_reasons[kind], kind

    # Good traffic (ASCII and Unicode users) counted exactly.
    client = redis_lib.Redis.from_url(settings.redis_url)
    keys = RedisKeys(settings.redis_prefix)
    want: dict[str, Counter[str]] = defaultdict(Counter)
    for event in campaign.good:
        want[event.user_id][event.type.value] += 1
    stored = {user: user_part(client, keys, user, "counts") for user in want}
    wrong = [(u, dict(c), s and s.payload["counts"]) for u, c in want.items()
             if (s := stored[u]) is None or s.payload["counts"] != dict(c)]
    assert not wrong, f"{len(wrong)} of {len(want)} users have wrong counts, e.g. {wrong[:2]}"
    for user in UNICODE_USERS:
        envelope = stored[user]
        assert envelope is not None and envelope.payload["events"] == EVENTS_PER_UNICODE_USER, user

    # The console's dead-letter panel reads the same counts from Redis (model:dlq), exactly.
    by_reason = Counter(reason for (_, reason) in dead.elements())
    dlq = Envelope.from_fields_or_none(client.hgetall(keys.model("dlq")))
    assert dlq is not None and dlq.payload == {"by_reason": dict(by_reason), "total": n_bad}, dlq

    # Never restarted: restart strategy none and exit 0 (above); the metric agrees while it ran.
    assert restarts_seen, "the job's Prometheus endpoint never answered while the job ran"
    assert max(restarts_seen) == 0, restarts_seen


def test_kinds_cover_every_decode_reason() -> None:
    rng = random.Random(0)
    codec = EventCodec()
    reasons = {make(codec, rng, i)[1] for make in KINDS.values() for i in range(8)}
    assert reasons == set(DecodeReason)

