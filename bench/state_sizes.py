"""Serialised state sizes: what each owner's state costs in Flink state / Redis.

    .venv/bin/python bench/state_sizes.py [--factors 16]

Figures are exact byte counts of the versioned layouts (no pickle), not estimates.
"""

from __future__ import annotations

import argparse

from online_models.mf import GlobalParams, MFConfig, OwnerSplitMF, initial_item, initial_user
from online_models.popularity import DecayedPopularity
from online_models.session import SessionState, step
from schemas.events import Event, EventType


def mf_sizes(n_factors: int) -> list[tuple[str, int]]:
    cfg = MFConfig(n_factors=n_factors)
    user, item = initial_user(cfg, "123456"), initial_item(cfg, "1682")
    model = OwnerSplitMF.from_config(cfg)
    empty = len(model.to_bytes())
    for k in range(1000):
        model.learn_one(f"user{k:06d}", "item", 4.0)  # 1000 users with 10-char ids, 1 item
    per_user_in_learner = (len(model.to_bytes()) - empty) / 1000
    return [
        (f"MF user part ({n_factors} factors)", len(user.to_bytes())),
        (f"MF item part ({n_factors} factors)", len(item.to_bytes())),
        ("MF global part", len(GlobalParams(3.5, 100_000).to_bytes())),
        ("OwnerSplitMF snapshot, per user (10-char id)", round(per_user_in_learner)),
    ]


def session_size() -> tuple[str, int]:
    """A browsing session: 12 events over 4 types, 8 distinct items, 3 categories."""
    kinds = [EventType.VIEW] * 7 + [EventType.CLICK] * 3 + [EventType.ADD_TO_CART, EventType.PURCHASE]
    state: SessionState | None = None
    for k, kind in enumerate(kinds):
        event = Event(
            f"evt-{k:08d}",
            kind,
            "user000123",
            1_700_000_000_000 + k * 45_000,
            item_id=f"item{k % 8:05d}",
            context={"category": ("books", "toys", "garden")[k % 3]},
        )
        state, _ = step(state, event)
    assert state is not None
    return ("session state (12 events, 8 items, 3 categories)", len(state.to_bytes()))


def popularity_size() -> tuple[str, int]:
    pop = DecayedPopularity()
    for k in range(1000):
        pop.learn_event(Event("e", EventType.VIEW, "u", k, item_id=f"item{k:05d}", context={"segment": "fr"}))
    return ("popularity, per (segment, item) entry", round(len(pop.to_bytes()) / 2000))


def bandit_sizes() -> list[tuple[str, int]]:
    """The bandit helper's figures (online_models.bandits.bandit_state_sizes), when present."""
    try:
        from online_models.bandits import bandit_state_sizes
    except ImportError:
        return []
    return [(f"bandit {name} (34 arms)", size) for name, size in bandit_state_sizes().items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--factors", type=int, default=16)
    args = parser.parse_args()
    rows = [*mf_sizes(args.factors), session_size(), popularity_size(), *bandit_sizes()]
    width = max(len(name) for name, _ in rows)
    for name, size in rows:
        print(f"{name:<{width}}  {size:>6,} bytes")


if __name__ == "__main__":
    main()
