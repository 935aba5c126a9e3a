"""How messages find their stage: rows on each stage's main output, split and keyed in the JVM.

Every Python stage sends ``Row(key, message, kind, raw)`` on its main output; the JVM splits the
stream by kind and keys each part on the Row's first field.

Two PyFlink costs this avoids, both measured on the job (bench/README.md):

* a side output is a call from Python into the JVM per record, and PEMJA gives up the Python
  interpreter's lock (which every Python operator of the TaskManager shares) around each such
  call, so the stage must wait to take it back; main-output records are handed over when the
  function returns;
* ``key_by(python_function)`` adds a Python step before each keyed stage (one more crossing per
  record) just to wrap the record as ``Row(key, record)``. Senders here know the key, so they build
  that Row themselves, and PyFlink's own Java key selector keys on it as ``key_by`` would.

A keyed stage receives the message alone, as after ``key_by``. The filter and the raw-bytes map
are two small Java classes (``flink_jobs/java/pulse/flink``).
"""

from __future__ import annotations

import zlib
from typing import Any

from pyflink.common import Types
from pyflink.datastream import DataStream, KeyedStream
from pyflink.java_gateway import get_gateway

from flink_jobs.messages import EraseUser

#: ``Row(key, message, kind, raw)``: a message for the stages of ``kind``, keyed by ``key`` there;
#: ``raw`` carries bytes for a Kafka sink instead (closed sessions, item snapshots).
MESSAGE = Types.ROW([Types.STRING(), Types.PICKLED_BYTE_ARRAY(), Types.STRING(), Types.PRIMITIVE_ARRAY(Types.BYTE())])

# Kinds of message, by consumer.
TO_ITEMS = "item"
TO_BANDITS = "bandit"
TO_POPULARITY = "popularity"
TO_MODEL = "model"
TO_EXPERIMENTS = "experiment"
TO_REDIS = "redis"
CLOSED_SESSION = "closed-session"
ITEM_SNAPSHOT = "item-snapshot"


#: A message as a batched stage packs it (``flink_jobs/batching.py``): the fields of :data:`MESSAGE`.
Message = tuple[str, Any, str, bytes]


def message(kind: str, key: str, payload: Any) -> Message:
    """A message for the stage of ``kind``, keyed by ``key`` there."""
    return (key, payload, kind, b"")


def raw_message(kind: str, data: bytes) -> Message:
    """Bytes for the Kafka sink of ``kind``."""
    return ("", None, kind, data)


def to_redis(payload: Any, shards: int) -> Message:
    """A Redis-bound message (write, writes, erasure, deletion) keyed by its sink shard."""
    return (shard_of(payload, shards), payload, TO_REDIS, b"")


def shard_of(payload: Any, shards: int) -> str:
    """The Redis sink shard of a message: all keys of one user land on one shard, in order."""
    route = payload.user_id if isinstance(payload, EraseUser) else payload.route
    return f"s{zlib.crc32(route.encode()) % shards}"


def messages_of(stream: DataStream, kind: str) -> DataStream:
    """The :data:`MESSAGE` rows of ``kind`` in ``stream`` (filtered in the JVM)."""
    return DataStream(stream._j_data_stream.filter(get_gateway().jvm.pulse.flink.MessageKind(kind)))


def keyed_messages(stream: DataStream, kind: str) -> KeyedStream:
    """The messages of ``kind`` in ``stream``, keyed by their first field (in the JVM)."""
    return keyed_rows(messages_of(stream, kind))


def keyed_rows(stream: DataStream) -> KeyedStream:
    """Rows ``(key, pickled value, ...)`` keyed by their first field in the JVM, as ``key_by`` would.

    PyFlink's own ``KeyByKeySelector`` keys on field 0; a keyed Python stage then receives field 1.
    """
    j_keyed = stream._j_data_stream.keyBy(
        get_gateway().jvm.KeyByKeySelector(), Types.ROW([Types.STRING()]).get_java_type_info()
    )
    return KeyedStream(j_keyed, Types.PICKLED_BYTE_ARRAY(), stream)


def raw_bytes_of(stream: DataStream, kind: str) -> DataStream:
    """The raw bytes of the messages of ``kind`` in ``stream``, for a Kafka sink."""
    j_bytes = messages_of(stream, kind)._j_data_stream.map(
        get_gateway().jvm.pulse.flink.RawBytes(), Types.PRIMITIVE_ARRAY(Types.BYTE()).get_java_type_info()
    )
    return DataStream(j_bytes)
