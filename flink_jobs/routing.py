"""How messages find their keyed stage: each sender puts the key in front, Flink keys on it in Java.

PyFlink's ``key_by(python_function)`` adds a Python step before every keyed stage that calls the
function and wraps each message as ``Row(key, message)``; on a side output it cannot be fused with
the sender, so every message crossed from the JVM into Python and back once more just to be keyed.
Here the sender builds that ``Row`` itself (it knows the key) and :func:`keyed_by_row_key` keys the
stream on the Row's first field with PyFlink's own Java key selector, as ``key_by`` does after
its Python step. The keyed stage receives the message alone, exactly as after ``key_by``.
"""

from __future__ import annotations

import zlib
from typing import Any

from pyflink.common import Row, Types
from pyflink.datastream import DataStream, KeyedStream
from pyflink.java_gateway import get_gateway

from flink_jobs.messages import EraseUser

#: ``Row(key, message)``: a message with the key of the stage it goes to.
KEYED_MESSAGE = Types.ROW([Types.STRING(), Types.PICKLED_BYTE_ARRAY()])


def keyed_by_row_key(stream: DataStream) -> KeyedStream:
    """``stream`` of :data:`KEYED_MESSAGE` rows, keyed by their first field (in the JVM)."""
    key_selector = get_gateway().jvm.KeyByKeySelector()
    j_keyed = stream._j_data_stream.keyBy(key_selector, Types.ROW([Types.STRING()]).get_java_type_info())
    return KeyedStream(j_keyed, Types.PICKLED_BYTE_ARRAY(), stream)


def shard_of(message: Any, shards: int) -> str:
    """The Redis sink shard of a message: all keys of one user land on one shard, in order."""
    route = message.user_id if isinstance(message, EraseUser) else message.route
    return f"s{zlib.crc32(route.encode()) % shards}"


def to_redis(message: Any, shards: int) -> Row:
    """A Redis-bound message (write, writes, erasure, deletion) keyed by its sink shard."""
    return Row(shard_of(message, shards), message)
