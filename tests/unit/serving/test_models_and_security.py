from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from schemas.redis_keys import Envelope
from serving.models import DecisionRequest, EventIn
from serving.recommendations import PopularityCache, _decayed, _explain
from serving.security import ApiKeys


@pytest.mark.parametrize("user_id", ["", "a/b", "a{b}", "a b", "x" * 257, "é"])
def test_ids_are_limited_in_length_and_charset(user_id: str) -> None:
    with pytest.raises(ValidationError):
        DecisionRequest(user_id=user_id, decision_point="home")


def test_decision_requests_reject_duplicate_arms_and_bad_context() -> None:
    with pytest.raises(ValidationError):
        DecisionRequest(user_id="u", decision_point="p", arms=["a", "a"])
    with pytest.raises(ValidationError):
        DecisionRequest(user_id="u", decision_point="p", context={"k": "line\nbreak"})
    with pytest.raises(ValidationError):
        DecisionRequest(user_id="u", decision_point="p", context={f"k{i}": "v" for i in range(33)})


def test_events_are_strictly_typed() -> None:
    with pytest.raises(ValidationError):
        EventIn.model_validate({"type": "view", "user_id": "u", "value": True})
    with pytest.raises(ValidationError):
        EventIn.model_validate({"type": "view", "user_id": "u", "event_time_ms": 1_700_000_000})  # seconds
    assert EventIn.model_validate({"type": "rating", "user_id": "u", "value": 4}).value == 4


def test_api_keys() -> None:
    keys = ApiKeys.parse(SecretStr(" a , b,,"))
    assert keys.enabled and keys.allows("a") and keys.allows("b")
    assert not keys.allows("") and not keys.allows("a ") and not keys.allows("c")
    assert not ApiKeys.parse(None).enabled and not ApiKeys.parse("").enabled


def test_popularity_decays_by_half_lives() -> None:
    payload = {"items": [["a", 8.0], ["b", 4.0]], "at_ms": 0, "half_life_ms": 1000}
    assert _decayed(payload, 2000) == [("a", 2.0), ("b", 1.0)]
    assert _decayed(payload, -5) == [("a", 8.0), ("b", 4.0)]


def test_explanation_parts_sum_to_the_total() -> None:
    user = Envelope({"bias": 0.5, "factors": [1.0, 2.0]}, 1, 1, "v")
    item = Envelope({"bias": -0.25, "factors": [0.5, 0.25], "version": 3}, 1, 1, "v")
    why = _explain(3.0, user, item)
    assert why is not None and why.dot == 1.0 and why.total == 3.0 + 0.5 - 0.25 + 1.0
    assert why.item_params_version == 3
    assert _explain(3.0, None, item) is None
    assert _explain(3.0, user, Envelope({"bias": 0.0, "factors": [1.0]}, 1, 1, "v")) is None


def test_popularity_cache_expires() -> None:
    now = [0.0]
    cache = PopularityCache(ttl_s=10.0, clock=lambda: now[0])
    cache.put("*", Envelope({}, 1, 1, "v"))
    now[0] = 10.0
    assert cache.get("*") is not None
    now[0] = 10.5
    assert cache.get("*") is None
