"""The shim's multiplexed Redis connection against a real Redis: order, errors, auth, timeouts, reconnects."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from infra.local.process import free_port
from infra.local.redis import RedisServer
from serving.redis_mux import MultiplexedRedis


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test alone (with a password), so the test can pause and stop it."""
    server = RedisServer(tmp_path, free_port(), password="mux-secret")
    server.start(timeout_s=30)
    try:
        yield server
    finally:
        server.process.stop()


def _mux(url: str, **kwargs: float | str) -> MultiplexedRedis:
    mux = MultiplexedRedis.from_url(url, **kwargs)  # type: ignore[arg-type]
    assert mux is not None
    return mux


def test_concurrent_callers_get_their_own_replies(redis_url: str) -> None:
    prefix = f"mux-{uuid.uuid4().hex[:8]}"
    sync = redis.Redis.from_url(redis_url)
    for i in range(200):
        sync.hset(f"{prefix}:{i}", mapping={"v": str(i), "w": f"w{i}"})

    async def run() -> list[list[object]]:
        mux = _mux(redis_url)
        try:
            return await asyncio.gather(*(mux.execute([("HGETALL", f"{prefix}:{i}"), ("HGETALL", f"{prefix}:none")])
                                          for i in range(200)))
        finally:
            await mux.close()

    for i, (hit, miss) in enumerate(asyncio.run(run())):
        assert isinstance(hit, list)
        assert dict(zip(hit[::2], hit[1::2], strict=True)) == {b"v": str(i).encode(), b"w": f"w{i}".encode()}
        assert miss == []
    sync.delete(*(f"{prefix}:{i}" for i in range(200)))


def test_an_error_reply_raises_after_the_whole_call_was_read(redis_url: str) -> None:
    key = f"mux-{uuid.uuid4().hex[:8]}"
    redis.Redis.from_url(redis_url).set(key, "a string")

    async def run() -> list[object]:
        mux = _mux(redis_url)
        try:
            with pytest.raises(ResponseError, match="WRONGTYPE"):
                await mux.execute([("HGETALL", key), ("PING",)])
            return await mux.execute([("PING",), ("GET", key)])  # the connection is still in step
        finally:
            await mux.close()

    assert asyncio.run(run()) == [b"PONG", b"a string"]


def test_auth_timeouts_and_reconnects(own_redis: RedisServer) -> None:
    url = f"redis://:mux-secret@127.0.0.1:{own_redis.port}/1"

    async def run() -> None:
        for bad in (_mux(own_redis.url, password="wrong"), _mux(own_redis.url)):
            with pytest.raises(RedisConnectionError):
                await bad.execute([("PING",)])
        by_kwarg = MultiplexedRedis.from_url(own_redis.url, password="mux-secret")  # as RedisStore passes it
        assert by_kwarg is not None and await by_kwarg.execute([("PING",)]) == [b"PONG"]
        await by_kwarg.close()
        mux = _mux(url, timeout_s=0.3, connect_timeout_s=2.0)
        assert await mux.execute([("PING",)]) == [b"PONG"]
        admin = redis.Redis.from_url(url)
        admin.set("which-db", "1")
        assert await mux.execute([("GET", "which-db")]) == [b"1"]  # SELECT 1 from the URL
        admin.client_pause(1000)  # replies come after the pause: later than the timeout
        with pytest.raises(RedisTimeoutError):
            await mux.execute([("PING",)])
        await asyncio.sleep(1.2)
        assert await mux.execute([("PING",)]) == [b"PONG"]  # a new connection
        admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")  # the server drops ours
        await asyncio.sleep(0.1)
        assert await mux.execute([("PING",)]) == [b"PONG"]  # read-only: retried once on a new connection
        own_redis.process.stop()
        with pytest.raises(RedisConnectionError):
            await mux.execute([("PING",)])
        await mux.close()

    asyncio.run(run())
