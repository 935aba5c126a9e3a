"""Micro-batches between the JVM and a Python stage: one Python call per batch, one return value per batch.

In thread mode every Python operator of a TaskManager shares one interpreter lock, and Flink's
embedded operator takes it for each record and again for each output (ADR 0007). A batched stage
instead receives the records of up to ``max_records`` / ``max_delay_ms`` in one call, built by the
Java :code:`pulse.flink.MicroBatcher` (``UserBatcher`` for the user stage, with the item snapshots;
both also emit a batch before every watermark and every checkpoint barrier), and returns all its
messages packed in one ``bytes`` that the Java :code:`pulse.flink.UnpackMessages` turns back into
the message rows of ``flink_jobs/routing.py``.

>>> batch = bytes([1]) + (2).to_bytes(4, "big") + b"".join(
...     len(k).to_bytes(4, "big") + k + len(v).to_bytes(4, "big") + v for k, v in [(b"u1", b"a"), (b"u2", b"bc")])
>>> read_batch(batch)
(1, [('u1', b'a'), ('u2', b'bc')])
>>> len(pack_messages([]))
4
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Container, Sequence
from typing import Any

from pyflink.common import Types
from pyflink.datastream import DataStream, KeyedStream
from pyflink.java_gateway import get_gateway

from flink_jobs.routing import MESSAGE

#: Flags of a batch (``Batcher.java``, ``UserBatcher.java``).
CHECKPOINT = 1
END = 2
SNAPSHOTS = 4  # item snapshots follow the records (the user stage's batches)
#: The flags of a batch that goes out before a barrier or at the end: the stage's pending work goes with it.
BARRIER_OR_END = CHECKPOINT | END

#: ``Row(key, batch bytes)``: what the batcher emits; the Python stage receives the bytes.
BATCH = Types.ROW([Types.STRING(), Types.PRIMITIVE_ARRAY(Types.BYTE())])
#: The bytes of a batch, as the stage receives them; and what it returns per batch, its packed messages.
BATCH_BYTES = PACKED = Types.PRIMITIVE_ARRAY(Types.BYTE())

_HEADER = struct.Struct(">BI")
_LENGTH = struct.Struct(">I")


class CurrentKey:
    """Switches the keyed state backend's current key, only when it is not that key already.

    A batch holds many keys; keyed state and timers follow the backend's current key, which Flink
    sets to the batch's (first) key. PyFlink has no public call for this: the embedded runtime
    context keeps the Java backend privately (checked in apache-flink 2.2.1). Keys are
    ``Row(key)``, as :func:`flink_jobs.routing.keyed_rows` makes them.
    """

    def __init__(self, runtime_context: Any) -> None:
        from pemja import findClass  # only inside the JVM's embedded interpreter

        self.backend = runtime_context._keyed_state_backend._keyed_state_backend
        # A class of flink-dist: PEMJA finds classes with the JVM's system class loader, which does
        # not see the job's own jar (a helper of ours there cannot be called from here).
        self.row = findClass("org.apache.flink.types.Row")
        self.current: str | None = None

    def use(self, key: str) -> None:
        """Make ``key`` the current key (state and timers now act on it)."""
        if key != self.current:
            j_key = self.row.withPositions(1)
            j_key.setField(0, key)
            self.backend.setCurrentKey(j_key)
            self.current = key


def due_keys(due: dict[str, float], now: float, everyone: bool = False) -> list[str]:
    """The keys of ``due`` (key -> due time, in the order they were added) due at ``now`` (all if ``everyone``).

    A stage adds a key's due time as now + a fixed delay, so the dict is in due order and the scan
    stops at the first key not due: a batch does not walk every pending key.

    >>> due_keys({"a": 1.0, "b": 2.0, "c": 5.0}, now=2.0)
    ['a', 'b']
    >>> due_keys({"a": 1.0, "c": 5.0}, now=0.0, everyone=True)
    ['a', 'c']
    """
    if everyone:
        return list(due)
    keys = []
    for key, at in due.items():
        if at > now:
            break
        keys.append(key)
    return keys


def quiet_keys(changed: dict[str, float], quiet_since: float, limit: int, skip: Container[str] = ()) -> list[str]:
    """Up to ``limit`` keys of ``changed`` (key -> time of change, oldest first) unchanged since ``quiet_since``.

    Keys in ``skip`` are passed over (a pending write or refresh changes them again soon). A stage
    writes these back to keyed state between barriers, so the batch before a barrier has less to write.

    >>> quiet_keys({"a": 1.0, "b": 2.0, "c": 3.0, "d": 9.0}, quiet_since=5.0, limit=2, skip={"a"})
    ['b', 'c']
    >>> quiet_keys({"a": 1.0, "d": 9.0}, quiet_since=5.0, limit=0)
    []
    """
    keys: list[str] = []
    if limit <= 0:
        return keys
    for key, changed_at in changed.items():
        if changed_at > quiet_since:
            break  # in order of change: every later one changed later
        if key not in skip:
            keys.append(key)
            if len(keys) == limit:
                break
    return keys


def batched(keyed: DataStream, *, max_records: int, max_delay_ms: int, tick_ms: int, uid: str) -> KeyedStream:
    """``Row(key, pickled value)`` records (already partitioned by key) as keyed batches.

    The batcher runs after the stream's ``keyBy``, so each batch holds only its subtask's keys, and
    the batches can be declared keyed again (on their first field) without another shuffle.
    """
    batcher = get_gateway().jvm.pulse.flink.MicroBatcher(max_records, max_delay_ms, tick_ms)
    return _keyed_again(keyed._j_data_stream.transform("batch", BATCH.get_java_type_info(), batcher).uid(uid))


def user_batches(keyed: DataStream, item_snapshots: DataStream, *, max_records: int, max_delay_ms: int,
                 tick_ms: int, uid: str) -> KeyedStream:
    """The user stage's keyed batches: its users' records, and every item snapshot (broadcast) inside them.

    One input for the stage, so Flink chains the batcher (``UserBatcher.java``) into it: the batch
    before a barrier is processed in the same call as the barrier (ADR 0007).
    """
    batcher = get_gateway().jvm.pulse.flink.UserBatcher(max_records, max_delay_ms, tick_ms)
    j_connected = keyed._j_data_stream.connect(item_snapshots._j_data_stream.broadcast())
    return _keyed_again(j_connected.transform("batch", BATCH.get_java_type_info(), batcher).uid(uid))


def _keyed_again(j_batches: Any) -> KeyedStream:
    """A batcher's output declared keyed on each batch's key (its subtask's keys: no shuffle)."""
    jvm = get_gateway().jvm
    j_keyed = jvm.org.apache.flink.streaming.api.datastream.DataStreamUtils.reinterpretAsKeyedStream(
        j_batches, jvm.KeyByKeySelector(), Types.ROW([Types.STRING()]).get_java_type_info()
    )
    return KeyedStream(j_keyed, BATCH_BYTES, DataStream(j_batches))


def raw_batches(raw: DataStream, *, max_records: int, max_delay_ms: int, uid: str) -> DataStream:
    """Plain ``bytes`` records (e.g. from a Kafka source) as batches ``Row("", batch)``, not keyed."""
    batcher = get_gateway().jvm.pulse.flink.MicroBatcher(max_records, max_delay_ms, 2**62)  # no idle ticks
    return DataStream(raw._j_data_stream.transform("batch", BATCH.get_java_type_info(), batcher).uid(uid))


def unpacked_events(packed: DataStream, decoded: Any) -> DataStream:
    """The ``(Row(user_id, event), event time)`` records of a batched decode's packed output (in the JVM)."""
    j_events = packed._j_data_stream.flatMap(get_gateway().jvm.pulse.flink.UnpackEvents(), decoded.get_java_type_info())
    return DataStream(j_events)


def unpacked(packed: DataStream) -> DataStream:
    """The :data:`~flink_jobs.routing.MESSAGE` rows of a batched stage's packed output (in the JVM)."""
    j_rows = packed._j_data_stream.flatMap(get_gateway().jvm.pulse.flink.UnpackMessages(), MESSAGE.get_java_type_info())
    return DataStream(j_rows)


def read_batch(batch: bytes) -> tuple[int, list[tuple[str, bytes]]]:
    """A batch's flags and its ``(key, value bytes)`` records."""
    flags, records, _ = _read_records(batch)
    return flags, records


def read_user_batch(batch: bytes) -> tuple[int, list[tuple[str, bytes]], list[bytes]]:
    """A user-stage batch's flags, records and the item snapshots after them (flag :data:`SNAPSHOTS`).

    >>> batch = bytes([SNAPSHOTS]) + (1).to_bytes(4, "big") + (2).to_bytes(4, "big") + b"u1" + (1).to_bytes(4, "big")
    >>> batch += b"a" + (2).to_bytes(4, "big") + (1).to_bytes(4, "big") + b"x" + (2).to_bytes(4, "big") + b"yz"
    >>> read_user_batch(batch)
    (4, [('u1', b'a')], [b'x', b'yz'])
    """
    flags, records, at = _read_records(batch)
    snapshots = []
    if flags & SNAPSHOTS:
        (count,) = _LENGTH.unpack_from(batch, at)
        at += 4
        for _ in range(count):
            (n,) = _LENGTH.unpack_from(batch, at)
            snapshots.append(batch[at + 4 : at + 4 + n])
            at += 4 + n
    return flags, records, snapshots


def _read_records(batch: bytes) -> tuple[int, list[tuple[str, bytes]], int]:
    flags, count = _HEADER.unpack_from(batch)
    at = _HEADER.size
    records = []
    view = memoryview(batch)
    for _ in range(count):
        (n,) = _LENGTH.unpack_from(batch, at)
        key = bytes(view[at + 4 : at + 4 + n]).decode()
        at += 4 + n
        (n,) = _LENGTH.unpack_from(batch, at)
        records.append((key, bytes(view[at + 4 : at + 4 + n])))
        at += 4 + n
    return flags, records, at


def pack_messages(rows: Sequence[tuple[str, Any, str, bytes]]) -> bytes:
    """Messages ``(key, message, kind, raw)`` as the bytes ``UnpackMessages.java`` reads."""
    parts = [_LENGTH.pack(len(rows))]
    for key, message, kind, raw in rows:
        for field in (key.encode(), _pickled(message), kind.encode(), raw):
            parts.append(_LENGTH.pack(len(field)))
            parts.append(field)
    return b"".join(parts)


def _pickled(message: Any) -> bytes:
    # What PyFlink's PICKLED_BYTE_ARRAY fields hold: the receiving Python stage unpickles it.
    return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
