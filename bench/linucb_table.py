"""A LinUCB arm table and decision bodies with contexts for ``bench/serving.py --policy linucb``.

The table is the shape of the OBD's: 34 arms, ``n_features`` 32, features ``segment`` and four
user features (each of 10 values), learned from 20,000 seeded updates, written as the job writes
it (:meth:`online_models.bandits.LinUCB.table_payload`). Each request carries a context drawn from
the same values, so decisions score all 34 arms on a real, varying feature vector.
"""

from __future__ import annotations

import random
from typing import Any

import orjson

from online_models.bandits import LinUCB

FEATURES = ("segment", "user_feature_0", "user_feature_1", "user_feature_2", "user_feature_3")
N_ARMS = 34


def _context(rng: random.Random) -> dict[str, str]:
    return {"segment": rng.choice(["men", "women", "all"]),
            **{name: f"v{rng.randrange(10)}" for name in FEATURES[1:]}}


def linucb_payload(updates: int = 20_000) -> dict[str, Any]:
    """The global scope's table, as ``flink_jobs.shared_steps.BanditArms`` writes it."""
    rng = random.Random(0)
    bandit = LinUCB(features=FEATURES)
    for _ in range(updates):
        context, arm = _context(rng), f"a{rng.randrange(N_ARMS)}"
        bandit.update(arm, float(rng.random() < 0.005 * (1 + int(arm[1:]) % 3)), context)
    return {"policy": "linucb", "scope": "global", **bandit.table_payload()}


def linucb_bodies(n: int) -> list[bytes]:
    """``n`` decision requests, each with its own context."""
    rng = random.Random(1)
    return [orjson.dumps({"user_id": f"u{i}", "decision_point": "home", "context": _context(rng)}) for i in range(n)]
