"""Promote and roll back a model under load: serving switches within 1 s, no request fails (issue #18, point 8).

Two prefixes hold different scores for the same users, as two jobs would write them; a paced
load runs against the shim while ``pulse model promote`` and ``pulse model rollback`` switch the
alias (real Redis, the real shim, the real CLI).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
from typer.testing import CliRunner

from config import Settings
from flink_jobs.redis_writer import RedisWriter
from pulse.cli import app
from schemas.redis_keys import RedisKeys
from schemas.redis_values import CompactValue, encode_user_value
from tests.integration.test_serving import AUTH, serve  # noqa: F401 -- the fixture: a running shim per settings update

T0 = 1_700_000_000_000
RATE = 200  # requests/s of the paced load


def seed(writer: RedisWriter, keys: RedisKeys, first: str) -> None:
    """User u1 whose best item is ``first``, and model metadata (what a job leaves in a prefix)."""
    recs = {"items": [[first, 9.0], ["i-common", 1.0]], "global_mean": 3.5}
    value = encode_user_value({"counts": {"view": 1}, "events": 1, "learned": 1}, {"open": False},
                              {"bias": 0.0, "factors": [0.1]}, recs)
    writer.write_batch([(keys.user_record("u1"), T0, CompactValue(value)), (keys.model("mf"), T0, {"learned": 1})])


class Load(threading.Thread):
    """Paced GETs of u1's recommendations: (time, status, prefix header, first item) of each answer."""

    def __init__(self, base_url: str) -> None:
        super().__init__(daemon=True)
        self.base_url = base_url
        self.answers: list[tuple[float, int, str, str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, headers=AUTH, timeout=5.0) as client:
            next_at = time.monotonic()
            while not self.stop.is_set():
                response = client.get("/v1/users/u1/recommendations", params={"k": 1})
                items = response.json().get("items", []) if response.status_code == 200 else []
                self.answers.append((time.monotonic(), response.status_code,
                                     response.headers.get("x-pulse-prefix", ""), items[0]["item_id"] if items else ""))
                next_at += 1 / RATE
                time.sleep(max(0.0, next_at - time.monotonic()))


def switch(settings: Settings, *args: str) -> float:
    """Run ``pulse model ARGS`` against the test Redis; the time the switch was made."""
    env = {"PULSE_REDIS_URL": settings.redis_url, "PULSE_REDIS_PREFIX": settings.redis_prefix}
    result = CliRunner().invoke(app, ["model", *args], env=env)
    assert result.exit_code == 0, result.output
    print(result.output.strip())
    return time.monotonic()


def test_promote_and_rollback_switch_serving_within_1_s_under_load(serve: Any, settings: Settings,  # noqa: F811
                                                                    redis_url: str) -> None:
    home, new = RedisKeys(settings.redis_prefix), RedisKeys(f"{settings.redis_prefix}-v2")
    with RedisWriter(home, "mf-v1", url=redis_url) as writer:
        seed(writer, home, "i-old")
        seed(writer, new, "i-new")
    client = serve()
    load = Load(str(client.base_url))
    load.start()
    time.sleep(1.0)
    promoted = switch(settings, "promote", new.prefix)
    time.sleep(2.0)
    rolled_back = switch(settings, "rollback")
    time.sleep(2.0)
    load.stop.set()
    load.join()
    answers = load.answers
    assert len(answers) > RATE * 3 and {status for _, status, _, _ in answers} == {200}  # no failed request
    served = {(prefix, first) for _, _, prefix, first in answers}
    # The header names what was read; the message shows what was served when it fails.
    assert served == {(home.prefix, "i-old"), (new.prefix, "i-new")}, sorted(served)

    def switched_after(at: float, until: float, prefix: str) -> float:
        window = [(t, p) for t, _, p, _ in answers if at <= t < until]
        last_other = max((t for t, p in window if p != prefix), default=at)
        assert all(p == prefix for t, p in window if t > last_other)
        return last_other - at

    to_new, back = switched_after(promoted, rolled_back, new.prefix), switched_after(rolled_back, 1e12, home.prefix)
    print(f"{len(answers):,} requests at {RATE}/s, all 200; promote took effect after {to_new:.2f} s, "
          f"rollback after {back:.2f} s")
    assert to_new <= 1.0 and back <= 1.0
    show = CliRunner().invoke(app, ["model", "live"], env={"PULSE_REDIS_URL": settings.redis_url,
                                                          "PULSE_REDIS_PREFIX": settings.redis_prefix})
    assert show.output.strip() == f"live: {home.prefix}", show.output  # the rollback used up the history


def test_a_switch_that_cannot_be_made_is_refused_with_one_line(settings: Settings) -> None:
    env = {"PULSE_REDIS_URL": settings.redis_url, "PULSE_REDIS_PREFIX": settings.redis_prefix}
    empty = CliRunner().invoke(app, ["model", "promote", f"{settings.redis_prefix}-nothing"], env=env)
    assert empty.exit_code == 1 and "no model metadata" in empty.output and "Traceback" not in empty.output
    bad = CliRunner().invoke(app, ["model", "promote", "{pulse}"], env=env)
    assert bad.exit_code == 1 and "must be ':'-separated words" in bad.output
    nothing = CliRunner().invoke(app, ["model", "rollback"], env=env)
    assert nothing.exit_code == 1 and "nothing to roll back to" in nothing.output
