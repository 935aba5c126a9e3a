"""The Redis writer against a real Redis (tests/services.py), and a password-protected one of our own."""

from __future__ import annotations

import hashlib
import logging
import pickle
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis as redis_lib

from flink_jobs.redis_writer import GUARDED_WRITE_LUA, RedisSinkError, RedisUnavailableError, RedisWriter, RetryPolicy
from infra.local.process import free_port
from infra.local.redis import RedisServer
from schemas.redis_keys import Envelope, RedisKeys

FAST_RETRY = RetryPolicy(initial_wait_s=0.01, max_wait_s=0.1, total_s=0.5)


class CountingRedis(redis_lib.Redis):
    """A real client that counts the pipelines it opens (instrumentation, not a mock)."""

    pipelines = 0

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        CountingRedis.pipelines += 1
        return super().pipeline(*args, **kwargs)


@pytest.fixture
def keys(redis_url: str) -> Iterator[RedisKeys]:
    found = RedisKeys(f"pulse-test-{uuid.uuid4().hex[:8]}")
    yield found
    client = redis_lib.Redis.from_url(redis_url)
    stale = list(client.scan_iter(match=found.pattern(), count=1000))
    if stale:
        client.delete(*stale)
    client.close()


@pytest.fixture
def writer(redis_url: str, keys: RedisKeys) -> Iterator[RedisWriter]:
    with RedisWriter(keys, "mf-1", url=redis_url, retry=FAST_RETRY) as opened:
        yield opened


def writer_sha() -> str:
    return hashlib.sha1(GUARDED_WRITE_LUA.encode()).hexdigest()


def read(client: redis_lib.Redis, key: str) -> Envelope | None:
    return Envelope.from_fields_or_none(cast(dict[bytes, bytes], client.hgetall(key)))


def test_a_thousand_keys_land_in_one_flush_and_read_back(
    redis_url: str, keys: RedisKeys, redis_client: redis_lib.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="flink_jobs.redis_writer")
    writer = RedisWriter(keys, "mf-7", client_factory=lambda: CountingRedis.from_url(redis_url))
    writer.open()
    CountingRedis.pipelines = 0
    users = [f"user:{n}" for n in range(250)]
    batch = [(keys.user(user, kind), 1_000 + n, {"user": user, "kind": kind, "scores": [n, n / 2]})
             for n, user in enumerate(users) for kind in ("recs", "session", "counts", "factors")]
    assert len(batch) == 1_000

    before = int(time.time() * 1000)
    result = writer.write_batch(batch)
    writer.close()

    assert (result.written, result.skipped_stale, result.keys) == (1_000, 0, 1_000)
    assert CountingRedis.pipelines == 1
    flushes = [r for r in caplog.records if r.name == "flink_jobs.redis_writer" and r.levelno == logging.DEBUG]
    assert len(flushes) == 1 and "1000 keys" in flushes[0].getMessage() and " ms" in flushes[0].getMessage()
    for key, event_time, payload in batch:
        env = read(redis_client, key)
        assert env is not None
        assert env.payload == payload and env.event_time_ms == event_time and env.model_version == "mf-7"
        assert before - 5 <= env.write_time_ms <= int(time.time() * 1000) + 5
    assert redis_client.type(keys.recs("user:0")) == b"hash"


def test_an_older_event_time_never_overwrites_a_newer_one(
    writer: RedisWriter, keys: RedisKeys, redis_client: redis_lib.Redis
) -> None:
    key = keys.recs("u1")
    assert writer.write_batch([(key, 2_000, {"scores": "new"})]).written == 1
    result = writer.write_batch([(key, 1_999, {"scores": "old"}), (keys.recs("u2"), 5, {"scores": "u2"})])
    assert (result.written, result.skipped_stale) == (1, 1)
    env = read(redis_client, key)
    assert env is not None and env.payload == {"scores": "new"} and env.event_time_ms == 2_000

    # Inside one batch the pipeline keeps order: the later, older write is skipped too.
    result = writer.write_batch([(key, 3_000, "third"), (key, 2_500, "late")])
    assert (result.written, result.skipped_stale) == (1, 1)
    env = read(redis_client, key)
    assert env is not None and env.payload == "third"


def test_equal_event_time_overwrites_so_replays_are_harmless(
    redis_url: str, writer: RedisWriter, keys: RedisKeys, redis_client: redis_lib.Redis
) -> None:
    key = keys.session("u1")
    writer.write_batch([(key, 1_000, {"n": 1})])
    first = read(redis_client, key)
    time.sleep(0.01)
    replay = RedisWriter(keys, "mf-2", url=redis_url)  # a restarted job, possibly a newer model
    result = replay.write_batch([(key, 1_000, {"n": 2})])
    replay.close()
    assert (result.written, result.skipped_stale) == (1, 0)
    env = read(redis_client, key)
    assert first is not None and env is not None
    assert env.payload == {"n": 2} and env.model_version == "mf-2" and env.write_time_ms > first.write_time_ms


def test_script_is_loaded_again_after_script_flush(
    writer: RedisWriter, keys: RedisKeys, redis_client: redis_lib.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flink_jobs.redis_writer")
    writer.write_batch([(keys.counts("u1"), 1, {"view": 1})])
    redis_client.script_flush()
    assert redis_client.script_exists(writer_sha()) == [False]
    result = writer.write_batch([(keys.counts("u1"), 2, {"view": 2}), (keys.counts("u2"), 1, {"view": 1})])
    assert (result.written, result.skipped_stale) == (2, 0)
    env = read(redis_client, keys.counts("u1"))
    assert env is not None and env.payload == {"view": 2}
    assert redis_client.script_exists(writer_sha()) == [True]
    assert any("loading it again" in r.getMessage() for r in caplog.records)


def test_delete_user_removes_every_key_of_that_user_and_no_other(
    writer: RedisWriter, keys: RedisKeys, redis_client: redis_lib.Redis
) -> None:
    users = ["a", "a}b", "a:b", "ü ser"]
    batch: list[tuple[str, int, Any]] = [(key, 1, {"k": key}) for user in users for key in keys.user_keys(user)]
    batch += [(keys.item_params("a"), 1, {"bias": 0.1}), (keys.item_record("a"), 1, {"bias": 0.1}),
              (keys.model("mf"), 1, {"events": 4})]
    writer.write_batch(batch)

    assert writer.delete_user("a}b") == 7  # format 2's one key, format 1's four, the two block sets
    assert not any(redis_client.exists(key) for key in keys.user_keys("a}b"))
    survivors = [key for key, _, _ in batch if key not in keys.user_keys("a}b")]
    assert redis_client.exists(*survivors) == len(survivors)
    assert writer.delete_user("a}b") == 0


def test_write_plain_ignores_the_event_time_guard(
    writer: RedisWriter, keys: RedisKeys, redis_client: redis_lib.Redis
) -> None:
    key = keys.model("mf")
    writer.write_batch([(key, 5_000, {"events_learned": 10})])
    writer.write_plain(key, {"events_learned": 0}, 0)
    env = read(redis_client, key)
    assert env is not None and env.payload == {"events_learned": 0} and env.event_time_ms == 0


def test_a_wrong_type_key_fails_with_a_clear_error(
    writer: RedisWriter, keys: RedisKeys, redis_client: redis_lib.Redis
) -> None:
    redis_client.set(keys.recs("legacy"), b"a string")
    with pytest.raises(RedisSinkError, match=r"writing 'pulse-test-.*legacy.*' failed: WRONGTYPE"):
        writer.write_batch([(keys.recs("legacy"), 1, {})])


def test_unencodable_payload_is_rejected_before_anything_is_sent(
    writer: RedisWriter, keys: RedisKeys, redis_client: redis_lib.Redis
) -> None:
    with pytest.raises(TypeError, match="cannot write"):
        writer.write_batch([(keys.recs("u1"), 1, {"ok": 1}), (keys.recs("u2"), 1, object())])
    assert not redis_client.exists(keys.recs("u1"))


def test_a_pickled_writer_opens_its_own_client(writer: RedisWriter, keys: RedisKeys) -> None:
    writer.write_batch([(keys.recs("u1"), 1, [1])])
    clone = pickle.loads(pickle.dumps(writer))
    assert clone._client is None
    assert clone.write_batch([(keys.recs("u1"), 2, [2])]).written == 1
    clone.close()


def test_unreachable_redis_fails_within_the_retry_budget(keys: RedisKeys) -> None:
    writer = RedisWriter(keys, "mf-1", url=f"redis://127.0.0.1:{free_port()}/0",
                         retry=RetryPolicy(initial_wait_s=0.01, max_wait_s=0.2, total_s=1.0))
    started = time.monotonic()
    with pytest.raises(RedisUnavailableError, match=r"unreachable after \d+ attempt"):
        writer.write_batch([(keys.recs("u1"), 1, {})])
    assert time.monotonic() - started < 5


def test_password_protected_redis(tmp_path: Path, keys: RedisKeys, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "s3cret"
    server = RedisServer(home=tmp_path, port=free_port(), password=secret)
    server.start(timeout_s=30)
    messages: list[str] = []
    try:
        writer = RedisWriter(keys, "mf-1", url=server.url, password=secret, retry=FAST_RETRY)
        assert secret not in repr(writer) and secret not in str(writer)
        assert writer.write_batch([(keys.recs("u1"), 1, {"scores": [1.0]})]).written == 1
        assert writer.delete_user("u1") == 1
        assert secret not in repr(writer) and secret not in str(writer)

        with_url_secret = RedisWriter(keys, "mf-1", url=f"redis://:{secret}@127.0.0.1:{server.port}/0")
        assert with_url_secret.write_batch([(keys.recs("u2"), 1, {})]).written == 1
        assert secret not in repr(with_url_secret)
        with_url_secret.close()

        wrong = RedisWriter(keys, "mf-1", url=server.url, password="not-it", retry=FAST_RETRY)
        with pytest.raises(RedisSinkError, match="refused the credentials") as refused:
            wrong.write_batch([(keys.recs("u1"), 1, {})])
        messages.append(str(refused.value))

        server.process.stop()
        with pytest.raises(RedisUnavailableError) as unavailable:
            writer.write_batch([(keys.recs("u1"), 2, {})])
        messages.append(str(unavailable.value))
        writer.close()
    finally:
        server.process.stop()

    assert any(r.levelno == logging.WARNING and "retrying" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        messages += [record.getMessage(), repr(record.args), record.exc_text or ""]
    assert not [message for message in messages if secret in message]
