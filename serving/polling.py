"""Background reads a serving worker repeats for as long as it runs (the lifespan's tasks)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from serving.store import StoreError

__all__ = ["poll_forever"]

log = logging.getLogger(__name__)


async def poll_forever(refresh: Callable[[], Awaitable[object]], every_s: float, what: str) -> None:
    """Await ``refresh()`` every ``every_s`` until cancelled; a Redis error waits for the next round."""
    while True:
        try:
            await refresh()
        except StoreError as exc:
            log.debug("%s refresh failed: %s", what, exc)
        await asyncio.sleep(every_s)
