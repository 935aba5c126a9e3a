"""The JVM's event reader (``EventFrames.java``) against the one validation truth, ``schemas/codec.py``.

The job decodes the events topic in the JVM and hands Python's codec every record the JVM does not
accept (ADR 0007, "Twenty-seventh session"). So one direction must hold on every payload: a frame
the JVM accepts, the codec accepts, with the same fields. And for the job to gain, the JVM must
accept the good events: of both schema versions, every type, the Unicode the bad-input campaign
sends as valid ids. Checked on good events, the codec's malformed generators and the bad-input
campaign's Unicode cases (each kind must go to the codec), mutated frames and random bytes.

A real ``java``/``javac`` (the job needs them anyway) compiles the pure classes (no Flink) and runs
``EventFrames.main`` over the payloads once per batch.
"""

from __future__ import annotations

import marshal
import os
import random
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from flink_jobs.messages import event_of
from schemas import Decision, DecodeError, Event, EventCodec, EventType, Limits, load_registry
from schemas.codec import jvm_event_schema_ids
from tests.unit.schemas.test_codec import MALFORMED, NOW_MS, make_event

JAVA, JAVAC = shutil.which("java"), shutil.which("javac")
pytestmark = pytest.mark.skipif((JAVA is None or JAVAC is None) and not os.environ.get("CI"), reason="needs a JDK")

JAVA_DIR = Path(__file__).resolve().parents[3] / "flink_jobs" / "java" / "pulse" / "flink"
#: The pure reader and what it uses (no Flink on the class path).
SOURCES = [JAVA_DIR / f"{name}.java" for name in ("EventFrames", "StrictAvro", "MarshalWriter", "Undecided")]
LIMITS = Limits()
SCHEMA_IDS = ",".join(f"{i}:{v}" for i, v in jvm_event_schema_ids(load_registry()).items())


@pytest.fixture(scope="module")
def classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("event-frames")
    subprocess.run([JAVAC or "javac", "-nowarn", "--release", "11", "-d", str(out), *map(str, SOURCES)], check=True)
    return out


def jvm_decode(classes: Path, payloads: list[bytes], now_ms: int = NOW_MS) -> list[bytes | None]:
    """What ``EventFrames.decode`` makes of each payload: the fields' bytes, or None (left to the codec)."""
    frames = b"".join(struct.pack(">i", len(p)) + p for p in payloads)
    args = [SCHEMA_IDS, LIMITS.max_bytes, LIMITS.max_id_length, LIMITS.min_event_time_ms, LIMITS.max_future_ms, now_ms]
    run = subprocess.run([JAVA or "java", "-cp", str(classes), "pulse.flink.EventFrames", *map(str, args)],
                         input=frames, capture_output=True, check=True)
    out, at, results = run.stdout, 0, []
    for _ in payloads:
        (length,) = struct.unpack_from(">i", out, at)
        at += 4
        results.append(None if length < 0 else out[at:at + length])
        at += max(length, 0)
    assert at == len(out)
    return results


def codec_fields(codec: EventCodec, payload: bytes) -> tuple[object, ...] | None:
    try:
        return codec.decode_fields(payload, now_ms=NOW_MS)
    except DecodeError:
        return None


def compare(classes: Path, payloads: list[bytes]) -> tuple[int, list[str]]:
    """(how many the JVM accepted, every payload where it disagreed with the codec in the wrong direction)."""
    codec = EventCodec(clock_ms=lambda: NOW_MS)
    wrong, accepted = [], 0
    for n, (payload, jvm) in enumerate(zip(payloads, jvm_decode(classes, payloads), strict=True)):
        if jvm is None:
            continue
        accepted += 1
        truth = codec_fields(codec, payload)
        if truth is None:
            wrong.append(f"#{n}: the JVM accepted what the codec refuses: {payload[:80]!r}")
        elif repr(marshal.loads(jvm)) != repr(truth):
            wrong.append(f"#{n}: {marshal.loads(jvm)!r} != {truth!r}")
    return accepted, wrong


def good_events(rng: random.Random) -> Iterator[Event]:
    """Every type, optional field and the ids the bad-input campaign sends as valid."""
    unicode_users = ["ユーザー", "😀", "👩\u200d💻", "e\u0301", "x\ufeffy", "a\ufffe", "\u202eevil", "\U0010ffff",
                     "{brace}%", "Ω-𝔸", "😀" * 256, "a b", "ü:ser", "\u00a0nbsp", "u" * 256]
    for i in range(3000):
        kind = list(EventType)[i % len(EventType)]
        user = unicode_users[i % len(unicode_users)] if i % 3 == 0 else f"user-{rng.randrange(10**9)}"
        item = None if kind in (EventType.ERASE,) and i % 2 else f"item-{rng.randrange(1000)}"
        category = None
        if kind is EventType.BLOCK and i % 2:
            item, category = None, f"cat-{i % 17}é"
        value = rng.choice([None, 0.0, -0.0, 1.0, 4.5, rng.uniform(-1e300, 1e300), 5e-324])
        if kind is EventType.RATING and value is None:
            value = 3.0
        context = rng.choice([{}, {"segment": "s1"}, {"segment": "ü", "position": str(i), "device": "📱"},
                              {f"k{j}": "v" * j for j in range(rng.randrange(1, 40))}])
        decision = None
        if kind is EventType.IMPRESSION or i % 7 == 0:
            decision = Decision(f"req-{i}", rng.choice(["ts", "ucb", ""]), f"arm-{i % 5}",
                                rng.choice([1.0, 5e-324, rng.random() or 0.5]))
        time_ms = rng.choice([LIMITS.min_event_time_ms, NOW_MS, NOW_MS + LIMITS.max_future_ms, NOW_MS - i * 999_983])
        yield Event(f"e-{i}-{rng.randrange(10**12)}", kind, user, time_ms, item_id=item, value=value,
                    context=context, decision=decision, category=category)


def good_payloads() -> list[bytes]:
    rng = random.Random(7)
    newest, oldest = EventCodec(clock_ms=lambda: NOW_MS), EventCodec(writer_version=1, clock_ms=lambda: NOW_MS)
    payloads = []
    for i, event in enumerate(good_events(rng)):
        old = i % 4 == 0 and event.type is not EventType.BLOCK and event.category is None
        payloads.append((oldest if old else newest).encode(event))
    return payloads


def test_the_jvm_accepts_every_good_event_with_the_codecs_fields(classes: Path) -> None:
    payloads = good_payloads()
    codec = EventCodec(clock_ms=lambda: NOW_MS)
    assert all(codec_fields(codec, p) is not None for p in payloads)  # the corpus is good
    accepted, wrong = compare(classes, payloads)
    assert not wrong, f"{len(wrong)} disagreements, e.g. {wrong[:3]}"
    assert accepted == len(payloads), f"the JVM left {len(payloads) - accepted} good events to the codec"


def test_what_the_jvm_writes_is_the_event_the_user_stage_reads(classes: Path) -> None:
    events = [make_event(i, context={"segment": f"s{i}", "é": "ü"}, value=float(i) / 3) for i in range(50)]
    events.append(Event("e-b", EventType.BLOCK, "u-b", NOW_MS, category="shoes"))
    jvm = jvm_decode(classes, [EventCodec().encode(e) for e in events])
    assert [event_of(b) for b in jvm if b is not None] == events


@pytest.mark.parametrize("reason", list(MALFORMED), ids=lambda r: r.value)
def test_every_malformed_payload_goes_to_the_codec(classes: Path, reason: object) -> None:
    codec = EventCodec(clock_ms=lambda: NOW_MS)
    rng = random.Random(str(reason))
    count = 60 if reason.value == "too_large" else 400  # type: ignore[attr-defined]
    payloads = [MALFORMED[reason](codec, rng, i) for i in range(count)]  # type: ignore[index]
    assert jvm_decode(classes, payloads) == [None] * count


def test_the_bad_input_campaigns_unicode_ids_go_to_the_codec(classes: Path) -> None:
    from tests.reliability.test_bad_input import bad_unicode_id

    codec, rng = EventCodec(clock_ms=lambda: NOW_MS), random.Random(5)
    payloads = [bad_unicode_id(codec, rng, i)[0] for i in range(500)]
    assert all(codec_fields(codec, p) is None for p in payloads)
    assert jvm_decode(classes, payloads) == [None] * len(payloads)


def mutated(payload: bytes, rng: random.Random) -> bytes:
    data = bytearray(payload)
    match rng.randrange(5):
        case 0:
            data[rng.randrange(5, len(data))] = rng.randrange(256)
        case 1:
            del data[rng.randrange(5, len(data)):]
        case 2:
            data.insert(rng.randrange(5, len(data) + 1), rng.randrange(256))
        case 3:
            del data[rng.randrange(5, len(data))]
        case _:
            at = rng.randrange(5, len(data))
            data[at] ^= 1 << rng.randrange(8)
    return bytes(data)


def test_mutated_and_random_frames_never_pass_the_jvm_where_the_codec_refuses(classes: Path) -> None:
    rng = random.Random(11)
    good = good_payloads()
    payloads = [mutated(rng.choice(good), rng) for _ in range(20_000)]
    header = EventCodec()._header
    payloads += [header + bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80))) for _ in range(2_000)]
    accepted, wrong = compare(classes, payloads)
    assert not wrong, f"{len(wrong)} disagreements, e.g. {wrong[:3]}"
    assert accepted > 1_000  # many mutations stay valid events (a changed character), and the JVM takes them
