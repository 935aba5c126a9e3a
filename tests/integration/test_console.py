"""The live console in a real headless Chromium: it shows what Redis holds for a user and keeps updating.

Redis is written as the job writes it (``RedisWriter``, the job's envelope scheme) by a thread that
moves the model's event count, the user's score time and the dead-letter counts forward every
300 ms, like a job learning a steady stream. Two screenshots a few seconds apart differ; the DOM
shows the user's top-k, the events learned (between what Redis held before and after the page
read it), the dead-letter reasons and the bandit arms.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from config import Settings
from flink_jobs.redis_writer import RedisWriter
from schemas.redis_keys import RedisKeys
from serving import create_app
from serving.server import running
from tests.integration.browser import dump_dom, screenshot

READ, PUBLISHABLE = "rk-console-test", "pk-console-test"
USER = "console-u1"
ITEMS = [("jacket-4", 4.8), ("boots-2", 4.6), ("scarf-9", 4.2), ("gloves-1", 3.9)]


class LiveJob:
    """Writes what the job writes, moving forward every 300 ms, until stopped."""

    def __init__(self, settings: Settings) -> None:
        self.keys = RedisKeys(settings.redis_prefix)
        self.url = settings.redis_url
        self.learned = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _writes(self, now: int) -> list[tuple[str, int, object]]:
        k = self.keys
        self.learned += 137
        return [
            (k.recs(USER), now - 400, {"items": [list(p) for p in ITEMS], "global_mean": 3.5}),
            (k.factors(USER), now - 400, {"bias": 0.2, "factors": [0.1, 0.3]}),
            *((k.item_params(item), now - 400, {"bias": 0.1, "factors": [1.0, 0.5], "version": 3})
              for item, _ in ITEMS),
            (k.session(USER), now - 400, {"open": True, "session_id": "s-7", "n_events": self.learned // 137,
                                          "counts": {"view": 5, "click": 2}, "recent_items": ["hat-1"]}),
            (k.model("mf"), now - 250, {"model": "mf", "model_version": "mf-v1", "events_learned": self.learned,
                                        "rmse": 0.91, "n_factors": 2}),
            (k.model("dlq"), now - 250, {"by_reason": {"bad_id": self.learned // 1000, "truncated": 3}}),
            (k.bandit("ts", "global"), now - 250, {"policy": "ts", "scope": "global",
                                                   "stat_names": ["successes", "failures"],
                                                   "arms": {"banner-a": [12.0, 30.0], "banner-b": [25.0, 20.0]},
                                                   "hyperparameters": {}}),
        ]

    def _run(self) -> None:
        with RedisWriter(self.keys, "mf-v1", url=self.url) as writer:
            while not self.stop.is_set():
                writer.write_batch(self._writes(int(time.time() * 1000)))
                self.stop.wait(0.3)

    def __enter__(self) -> LiveJob:
        with RedisWriter(self.keys, "mf-v1", url=self.url) as writer:
            writer.write_batch(self._writes(int(time.time() * 1000)))
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


@pytest.fixture
def console(settings: Settings) -> Iterator[tuple[str, LiveJob]]:
    served = settings.model_copy(update={"serving_api_keys": SecretStr(f"read:{READ}, publishable:{PUBLISHABLE}")})
    with LiveJob(settings) as job, running(create_app(served), timeout_s=60) as url:
        yield url, job


def test_the_console_shows_redis_values_and_updates(console: tuple[str, LiveJob]) -> None:
    base, job = console
    state = f"{base}/v1/console/state?user_id={USER}"
    assert httpx.get(state).status_code == 401
    assert httpx.get(state, headers={"Authorization": f"Bearer {PUBLISHABLE}"}).status_code == 403
    assert httpx.get(f"{base}/console").status_code == 200  # the page itself holds no data

    page = f"{base}/console#key={READ}&user={USER}"
    first = screenshot(page, "console-1.png", budget_ms=4000, size="1100,1100")
    first_bytes = first.read_bytes()
    time.sleep(3)
    second = screenshot(page, "console-2.png", budget_ms=4000, size="1100,1100")
    assert second.read_bytes() != first_bytes, "two screenshots 3 s apart are identical"

    before = job.learned
    dom = dump_dom(page, budget_ms=4000)
    after = job.learned
    assert 'data-state="live"' in dom, dom[-3000:]
    assert re.findall(r'<tr data-item="([^"]+)"', dom) == [item for item, _ in ITEMS]
    learned = int(re.search(r'id="events-learned">(\d+)<', dom).group(1))  # type: ignore[union-attr]
    assert before <= learned <= after
    assert re.findall(r'<tr data-arm="([^"]+)"', dom) == ["banner-a", "banner-b"]
    assert "<td>bad_id</td>" in dom and "<td>truncated</td>" in dom
    assert "0.556" in dom  # banner-b's mean, 25 / 45
    assert re.search(r'id="rmse">0\.910<', dom)
    polls = int(re.search(r'data-polls="(\d+)"', dom).group(1))  # type: ignore[union-attr]
    print(f"\nconsole: {polls} polls in one page load, events learned shown {learned:,} "
          f"(Redis {before:,}..{after:,}); screenshots {first.name}, {second.name}")
    assert polls >= 2
