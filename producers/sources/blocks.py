"""Block events ("not interested", event schema version 2) mixed into an event stream.

After an event that shows the user an item, a block follows at a small rate: of that item, or
(a quarter of the blocks) of the item's ``context["category"]`` when the event names one. The
block has the same event time as the event before it, so the stream stays in time order, and
its own random stream, so the other events are exactly those of the same stream without blocks.

>>> from schemas.events import Event, EventType
>>> seen = [Event(f"e{k}", EventType.VIEW, "u1", 1_000 + k, item_id=f"i{k}", context={"category": "c1"})
...         for k in range(400)]
>>> mixed = list(with_blocks(seen, share=0.2, seed=1))
>>> [e for e in mixed if e.type is not EventType.BLOCK] == seen
True
>>> blocks = [e for e in mixed if e.type is EventType.BLOCK]
>>> 0.15 < len(blocks) / len(mixed) < 0.25, {(e.item_id is None) != (e.category is None) for e in blocks}
(True, {True})
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator

from producers.sources.synthetic_world import random_stream
from schemas.events import Event, EventType

#: Blocks are drawn after events that show the user an item (not after erasures or other blocks).
SHOWN_TYPES = frozenset({
    EventType.VIEW, EventType.CLICK, EventType.ADD_TO_CART, EventType.PURCHASE, EventType.RATING, EventType.IMPRESSION,
})
#: Of the blocks, this share blocks the category of the item rather than the item.
CATEGORY_SHARE = 0.25
MAX_SHARE = 0.5
_BLOCKS_STREAM = 6  # the numbered random stream of the synthetic world (synthetic_world.random_stream)
_KEPT_CONTEXT = ("segment", "device")


def with_blocks(events: Iterable[Event], share: float, seed: int) -> Iterator[Event]:
    """Yield ``events`` with block events mixed in, about ``share`` of the events yielded.

    >>> list(with_blocks([], share=0.9, seed=1))
    Traceback (most recent call last):
    ...
    ValueError: block share must be in [0, 0.5], got 0.9
    """
    if not 0.0 <= share <= MAX_SHARE:
        raise ValueError(f"block share must be in [0, {MAX_SHARE}], got {share}")
    return _mixed(events, share, seed)


def _mixed(events: Iterable[Event], share: float, seed: int) -> Iterator[Event]:
    # A block after a fraction p of the events is p / (1 + p) of what is yielded: p = share / (1 - share).
    rate = share / (1.0 - share)
    draw = random.Random(int(random_stream(seed, _BLOCKS_STREAM).integers(2**62))).random
    block = EventType.BLOCK
    for event in events:
        yield event
        if event.type in SHOWN_TYPES and event.item_id is not None and draw() < rate:
            context = {k: event.context[k] for k in _KEPT_CONTEXT if k in event.context}
            category = event.context.get("category")
            if category and draw() < CATEGORY_SHARE:
                yield Event(f"{event.event_id}-block", block, event.user_id, event.event_time_ms, None, None, context,
                            category=category)
            else:
                yield Event(f"{event.event_id}-block", block, event.user_id, event.event_time_ms, event.item_id,
                            None, context)
