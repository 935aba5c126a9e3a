"""Which Redis prefix this worker reads: the alias ``pulse model promote`` / ``rollback`` set.

The alias is ``<PULSE_REDIS_PREFIX>:{live}`` (absent: that prefix itself; ``pulse/model_alias.py``
writes it). Every ``refresh_s`` one ``GET`` reads it; when it names another prefix, the store's keys
switch at once (a request in flight then reads its remaining keys under the new prefix), the
catalogue is read again under the new prefix, and the switch is logged and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from schemas.redis_keys import RedisKeys
from serving.polling import poll_forever
from serving.store import RedisStore

__all__ = ["LiveAlias"]

log = logging.getLogger(__name__)


class LiveAlias:
    """Keeps ``store.keys`` on the live prefix; ``on_switch(prefix)`` runs after each switch."""

    def __init__(self, store: RedisStore, home: RedisKeys, refresh_s: float,
                 on_switch: Callable[[str], None] = lambda prefix: None) -> None:
        self.store = store
        self.home = home
        self.refresh_s = refresh_s
        self.on_switch = on_switch

    async def refresh(self) -> bool:
        """Follow the alias; whether the prefix changed."""
        (value,) = await self.store.read_raw([("GET", self.home.live())])
        prefix = self.home.prefix if value is None else value.decode()
        if prefix == self.store.keys.prefix:
            return False
        try:
            keys = RedisKeys(prefix)
        except ValueError as exc:  # set by hand to something that is no prefix: keep serving what we serve
            log.error("ignoring the live alias %s: %s", self.home.live(), exc)
            return False
        log.info("live prefix %r -> %r (%s)", self.store.keys.prefix, prefix, self.home.live())
        self.store.keys = keys
        self.on_switch(prefix)
        return True

    async def run(self) -> None:
        """Poll forever (a task of the app's lifespan)."""
        await poll_forever(self.refresh, self.refresh_s, "live alias")
