"""A user's pending impressions and the reward-0 feedback of those that expire (pure; the user stage's steps use it)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from flink_jobs.messages import BanditFeedback


class PendingImpression(NamedTuple):
    """An impression waiting for its click (in state: its fields as a tuple, trailing defaults left out)."""

    arm: str
    scopes: list[str]
    expires_ms: int
    experiment: str | None = None  # the decision's experiment and variant, when attribution counts them
    variant: str | None = None
    context: tuple[tuple[str, str], ...] = ()  # its entries of UserStageConfig.bandit_context


def expiry_feedback(expired: Iterable[PendingImpression]) -> list[BanditFeedback]:
    """Reward 0 for each scope of each expired impression: one message per scope and arm (``count``).

    A contextual bandit's feedback (``context`` kept) stays one message per impression. A job restored
    after a pause expires a user's impressions together (ADR 0007, nineteenth session); a message each
    was most of what its first watermark cost.

    >>> expiry_feedback([PendingImpression("a", ["global"], 5), PendingImpression("a", ["global"], 9),
    ...                  PendingImpression("b", ["global"], 7)])  # doctest: +NORMALIZE_WHITESPACE
    [BanditFeedback(scope_key='global', arm='a', reward=0.0, event_time_ms=9, context=(), count=2),
     BanditFeedback(scope_key='global', arm='b', reward=0.0, event_time_ms=7, context=(), count=1)]
    """
    grouped: dict[tuple[str, str], tuple[int, int]] = {}  # (scope, arm) -> (count, latest event time)
    feedback: list[BanditFeedback] = []
    for pending in expired:
        for key in pending.scopes:
            if pending.context:
                feedback.append(BanditFeedback(key, pending.arm, 0.0, pending.expires_ms, pending.context))
                continue
            count, latest_ms = grouped.get((key, pending.arm), (0, 0))
            grouped[key, pending.arm] = (count + 1, max(latest_ms, pending.expires_ms))
    return [BanditFeedback(key, arm, 0.0, latest_ms, (), count)
            for (key, arm), (count, latest_ms) in grouped.items()] + feedback
