"""Stage: the catalogue (Kafka's compacted ``items`` topic) -> Redis, where serving filters on it.

Each catalogue entry becomes one write of the Redis sink: the item's entry (category,
availability, attributes) and the catalogue's indexes serving reads whole (unavailable items,
item categories, a version), in one event-time guarded script (``redis_scripts.py``); the entry's
``updated_ms`` is its event time, so a replay or an older entry never undoes a newer one.
Entries that do not decode go to the dead-letter queue like events. ADR 0003, "The catalogue".

>>> from schemas import Item
>>> from schemas.redis_keys import RedisKeys
>>> write = catalogue_write(RedisKeys("pulse"), Item("i7", updated_ms=5, category="shoes", available=False))
>>> write.key, write.event_time_ms, write.payload.available
('pulse:{catalogue}:item:i7', 5, False)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pyflink.common import Row
from pyflink.datastream import ProcessFunction, RuntimeContext

from flink_jobs.batching import pack_messages, read_batch
from flink_jobs.decode import DEAD_LETTER_COUNTS, DEAD_LETTERS, DeadLetters
from flink_jobs.messages import RedisWrite
from flink_jobs.routing import Message, to_redis
from flink_jobs.runtime import split_position
from schemas import DecodeError, Item, ItemCodec, Limits, load_registry
from schemas.redis_keys import RedisKeys
from schemas.redis_values import CatalogueValue


def catalogue_write(keys: RedisKeys, item: Item) -> RedisWrite:
    """The Redis write of one catalogue entry (routed to the sink shard of its item)."""
    value = CatalogueValue(item.item_id, item.category, item.available, dict(item.attributes))
    key = keys.catalogue_item(item.item_id)
    return RedisWrite(key, item.updated_ms, value, key)


class DecodeCatalogue(ProcessFunction):
    """Decode a micro-batch of catalogue entries (``Row("", batch)`` of positioned values) in one call.

    Out: the packed Redis-sink messages of the good entries; dead letters (with reason and source
    position) on :data:`~flink_jobs.decode.DEAD_LETTERS` and their counts on
    :data:`~flink_jobs.decode.DEAD_LETTER_COUNTS`, as the event decoder does.
    """

    def __init__(self, source_topic: str, schema_registry_url: str | None, keys: RedisKeys,
                 redis_shards: int) -> None:
        self.source_topic = source_topic
        self.schema_registry_url = schema_registry_url
        self.keys = keys
        self.redis_shards = redis_shards

    def open(self, runtime_context: RuntimeContext) -> None:
        registry = load_registry(self.schema_registry_url)
        self.items = ItemCodec(registry, Limits())
        metrics = runtime_context.get_metrics_group()
        self.decoded = metrics.counter("catalogue_entries_decoded")
        self.dead_letters = DeadLetters(self.source_topic, registry, metrics)

    def process_element(self, batch: Row, ctx: ProcessFunction.Context) -> Iterator[Any]:
        _, records = read_batch(batch[1])
        rows: list[Message] = []
        for _, positioned in records:
            partition, offset, value = split_position(positioned)
            try:
                item = self.items.decode(value)
            except DecodeError as err:
                yield DEAD_LETTERS, self.dead_letters.reject(err, value, partition, offset)
                continue
            rows.append(to_redis(catalogue_write(self.keys, item), self.redis_shards))
        if rows:
            self.decoded.inc(len(rows))
            yield pack_messages(rows)
        if (counts := self.dead_letters.counts()) is not None:
            yield DEAD_LETTER_COUNTS, counts
