"""Random hex ids (request and event ids) from the OS's generator, read in blocks.

One ``getrandom`` call per 64 ids of 32 hex digits instead of one per id (a syscall on every
decision and every list served). The bytes are the OS's, as ``os.urandom(16).hex()``'s; a forked
process starts a fresh block, so workers never share ids.

>>> ids = RandomHex(block_bytes=32)
>>> a, b, c = ids.take(32), ids.take(32), ids.take(32)
>>> len({a, b, c}), all(len(x) == 32 and int(x, 16) >= 0 for x in (a, b, c))
(3, True)
"""

from __future__ import annotations

import os
import weakref

__all__ = ["RandomHex", "random_hex"]

_LIVE: weakref.WeakSet[RandomHex] = weakref.WeakSet()


class RandomHex:
    """Hex digits of ``os.urandom`` handed out in order, never twice; refilled ``block_bytes`` at a time."""

    def __init__(self, block_bytes: int = 2048) -> None:
        self.block_bytes = block_bytes
        self._hex = ""
        self._at = 0
        _LIVE.add(self)

    def take(self, digits: int) -> str:
        """The next ``digits`` hex digits (at most ``2 * block_bytes``)."""
        at = self._at
        end = at + digits
        if end > len(self._hex):
            self._hex, at, end = os.urandom(self.block_bytes).hex(), 0, digits
        self._at = end
        return self._hex[at:end]

    def forget(self) -> None:
        """Drop the digits not handed out yet (a forked child must not repeat its parent's)."""
        self._hex, self._at = "", 0


def _after_fork() -> None:
    for ids in list(_LIVE):
        ids.forget()


os.register_at_fork(after_in_child=_after_fork)

#: The process's ids: ``random_hex(32)`` is a request id.
random_hex = RandomHex().take
