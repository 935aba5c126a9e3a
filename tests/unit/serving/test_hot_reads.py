"""Per-request work the hot reads save: bandit tables parsed once per stored value, and one Redis write per
event-loop step."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.exceptions import TimeoutError as RedisTimeoutError

from schemas.redis_keys import Envelope, RedisKeys
from serving.redis_mux import _Protocol, pack
from serving.store import RedisStore

T0 = 1_700_000_000_000


class FakeMux:
    """Answers every HGETALL from a dict of hashes (RESP2: a flat field/value list)."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[bytes, bytes]] = {}
        self.calls = 0

    async def execute(self, commands: Sequence[tuple[str, str]]) -> list[Any]:
        self.calls += 1
        return [[x for pair in self.hashes.get(key, {}).items() for x in pair] for _, key in commands]


def _fields(arms: dict[str, list[float]], write_ms: int) -> dict[bytes, bytes]:
    envelope = Envelope({"policy": "ts", "scope": "global", "arms": arms}, T0, write_ms, "v1")
    return {name.encode(): value for name, value in envelope.to_fields().items()}


def test_an_unchanged_bandit_table_is_the_same_envelope_and_a_changed_one_is_read_anew() -> None:
    mux = FakeMux()
    store = RedisStore(None, RedisKeys("p"), mux)  # type: ignore[arg-type]
    key = RedisKeys("p").bandit("ts", "global")
    mux.hashes[key] = _fields({"a": [1.0, 2.0]}, T0 + 1)

    async def run() -> list[list[Envelope | None]]:
        first = await store.bandits("ts", ["user:u1", "global"])
        second = await store.bandits("ts", ["user:u1", "global"])
        mux.hashes[key] = _fields({"a": [2.0, 2.0]}, T0 + 2)
        third = await store.bandits("ts", ["user:u1", "global"])
        return [first, second, third]

    first, second, third = asyncio.run(run())
    assert first[0] is None and first[1] is not None and first[1].payload["arms"] == {"a": [1.0, 2.0]}
    assert second[1] is first[1]  # not parsed again
    assert third[1] is not first[1] and third[1] is not None and third[1].payload["arms"] == {"a": [2.0, 2.0]}
    assert mux.calls == 3  # every decision still reads Redis


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        pass


def test_commands_of_one_event_loop_step_leave_in_one_write_and_replies_keep_their_order() -> None:
    async def run() -> tuple[list[bytes], list[Any]]:
        protocol = _Protocol()
        transport = RecordingTransport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        first = protocol.send(pack([("GET", "a")]), 1)
        second = protocol.send(pack([("GET", "b"), ("GET", "c")]), 2)
        assert transport.writes == []  # at the end of the step
        await asyncio.sleep(0)
        protocol.data_received(b"$1\r\nA\r\n$1\r\nB\r\n$-1\r\n")
        return transport.writes, [await f for f in (*first, *second)]

    writes, replies = asyncio.run(run())
    assert writes == [pack([("GET", "a"), ("GET", "b"), ("GET", "c")])]
    assert replies == [b"A", b"B", None]


class AbortRecordingTransport(RecordingTransport):
    def __init__(self) -> None:
        super().__init__()
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


def test_one_watchdog_drops_the_connection_when_a_reply_is_owed_past_the_timeout() -> None:
    async def run() -> tuple[list[Any], bool, bool, bool, object]:
        protocol = _Protocol(timeout_s=0.05)
        transport = AbortRecordingTransport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        answered = protocol.send(pack([("GET", "a")]), 1)
        watchdog = protocol._watchdog
        later = protocol.send(pack([("GET", "b")]), 1)
        same_timer = protocol._watchdog is watchdog  # one timer for every call waiting, not one per call
        protocol.data_received(b"$1\r\nA\r\n")  # the first call is answered in time
        first = await answered[0]
        aborted_early = transport.aborted
        outcome: object = None
        try:
            await later[0]  # never answered: the watchdog fails it
        except Exception as exc:  # noqa: BLE001 - the exception is the outcome checked
            outcome = exc
        return [first], same_timer, aborted_early, transport.aborted, outcome

    replies, same_timer, aborted_early, aborted, outcome = asyncio.run(run())
    assert replies == [b"A"] and same_timer and not aborted_early
    assert aborted and isinstance(outcome, RedisTimeoutError) and "0.05 s" in str(outcome)
