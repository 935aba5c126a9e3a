"""When a queue of records nobody waits for is handed to Kafka: full, or a little after its first record."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["FlushTimer"]


class FlushTimer:
    """Calls ``flush`` at once when ``max_queued`` records wait, else ``delay_s`` after the first one.

    ``queued`` is called on the request path after each record; one timer is pending at a time (set
    and fired on the event loop). Off an event loop nothing would fire a timer, so it flushes at once.
    """

    def __init__(self, flush: Callable[[], None], delay_s: float, max_queued: int) -> None:
        self.flush = flush
        self.delay_s = delay_s
        self.max_queued = max_queued
        self._pending = False

    def queued(self, waiting: int) -> None:
        """``waiting`` records are queued now."""
        if waiting >= self.max_queued:
            self.flush()
        elif not self._pending:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._pending = True
            loop.call_later(self.delay_s, self._fire)

    def _fire(self) -> None:
        self._pending = False
        self.flush()
