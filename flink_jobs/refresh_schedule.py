"""When a user's Redis value (counts, session, factors, top-k) is rewritten after a change.

A user not rewritten for ``interval_s`` is rewritten at the end of the batch that changed it
(the loop's latency: no wait); one rewritten less than ``interval_s`` ago waits until
``interval_s`` after this change, so a busy user costs at most about one rewrite per interval.
Pure: the user stage (``user_state.py``) asks it which users to refresh in each batch.

>>> schedule = RefreshSchedule(interval_s=0.2)
>>> schedule.want("u1", now=10.0)
>>> schedule.take(now=10.0)
['u1']
>>> schedule.want("u1", now=10.05)  # rewritten 50 ms ago: waits
>>> schedule.take(now=10.1), schedule.take(now=10.25)
([], ['u1'])
"""

from __future__ import annotations

from flink_jobs.batching import due_keys


class RefreshSchedule:
    """Users whose refresh is pending, now or at a due time, and when each was last refreshed."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.now: dict[str, None] = {}  # refreshed at the end of this batch
        self.later: dict[str, float] = {}  # user -> due time, in due order (batching.due_keys)
        self.refreshed: dict[str, float] = {}  # user -> last refresh, oldest first; only the last interval's

    def want(self, user_id: str, now: float) -> None:
        """``user_id`` changed at ``now`` (and has no refresh pending)."""
        last = self.refreshed.get(user_id)
        if last is None or now - last >= self.interval_s:
            self.now[user_id] = None
        else:  # now + interval keeps ``later`` in due order
            self.later.pop(user_id, None)
            self.later[user_id] = now + self.interval_s

    def take(self, now: float, everyone: bool = False) -> list[str]:
        """The users to refresh at ``now`` (every pending one if ``everyone``), recorded as refreshed."""
        users = list(self.now)
        self.now.clear()
        for user_id in due_keys(self.later, now, everyone):
            del self.later[user_id]
            users.append(user_id)
        for user_id in users:
            self.refreshed.pop(user_id, None)  # to the end: the dict stays in refresh order
            self.refreshed[user_id] = now
        self._forget_before(now - self.interval_s)
        return users

    def drop(self, user_id: str) -> None:
        """``user_id`` is gone (erased): nothing pending for it."""
        self.now.pop(user_id, None)
        self.later.pop(user_id, None)
        self.refreshed.pop(user_id, None)

    def __contains__(self, user_id: object) -> bool:
        """Whether a refresh is pending for ``user_id``."""
        return user_id in self.now or user_id in self.later

    def _forget_before(self, since: float) -> None:
        # Only a refresh within the last interval delays the next one: older entries go.
        stale = []
        for user_id, at in self.refreshed.items():
            if at >= since:
                break  # in refresh order: every later one is newer
            stale.append(user_id)
        for user_id in stale:
            del self.refreshed[user_id]
