"""The browser SDK in a real headless Chromium: the example page, served by the shim, renders a user's
recommendations and sends its view events (by fetch, and by sendBeacon as when the page is left), which arrive
on Kafka carrying the recommendations' request id."""

from __future__ import annotations

import functools
import re
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from confluent_kafka import Consumer
from pydantic import SecretStr

from config import Settings
from flink_jobs.redis_writer import RedisWriter
from producers.topics import ensure_topics
from schemas import Event, EventCodec
from schemas.redis_keys import RedisKeys
from serving import create_app
from serving.console import STATIC_DIR
from serving.server import running
from tests.integration.browser import dump_dom, screenshot

T0 = 1_700_000_000_000
PUBLISHABLE, READ = "pk-web-test", "rk-web-test"
ITEMS = [("shoe-1", 4.9), ("shoe-2", 4.5), ("hat-7", 4.1), ("bag-3", 3.8)]


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def shop() -> Iterator[str]:
    """Another origin (another port) serving the same static files: a shop's own web server."""
    handler = functools.partial(_QuietFiles, directory=str(STATIC_DIR))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def shim(settings: Settings, shop: str) -> Iterator[str]:
    ensure_topics(settings, [settings.topic_events])
    keys = RedisKeys(settings.redis_prefix)
    with RedisWriter(keys, "mf-v1", url=settings.redis_url) as writer:
        writer.write_batch([(keys.recs(user), T0, {"items": [list(p) for p in ITEMS], "global_mean": 3.5})
                            for user in ("web-a", "web-b", "web-c", "web-d", "web-e")])
    served = settings.model_copy(update={"serving_api_keys": SecretStr(f"publishable:{PUBLISHABLE}, read:{READ}"),
                                         "serving_cors_origins": shop})
    with running(create_app(served), timeout_s=60) as url:
        yield url


def _events(settings: Settings, users: set[str], want: int, timeout_s: float = 60) -> list[Event]:
    codec = EventCodec()
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"t-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([settings.topic_events])
    found: list[Event] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(found) < want and time.monotonic() < deadline:
            for msg in consumer.consume(100, timeout=0.5):
                if not msg.error() and (event := codec.decode(msg.value())).user_id in users:
                    found.append(event)
    finally:
        consumer.close()
    return found


def test_the_example_page_renders_recommendations_and_its_events_reach_kafka(shim: str, settings: Settings) -> None:
    page = f"{shim}/static/example.html?key={PUBLISHABLE}&readKey={READ}&k=3"
    dom = dump_dom(f"{page}&user=web-a")
    assert 'data-state="done"' in dom, dom[-3000:]
    rendered = re.findall(r'<li data-item="([^"]+)"', dom)
    assert rendered == [item for item, _ in ITEMS[:3]]
    assert 'data-accepted="3"' in dom and "3 accepted, 0 rejected, 0 failed" in dom
    request_id = re.search(r'data-request-id="([0-9a-f]{32})"', dom)
    assert request_id is not None

    shot = screenshot(f"{page}&user=web-b", "sdk-example-page.png")
    beacon = dump_dom(f"{page}&user=web-c&send=beacon")  # text/plain, the key in the URL, no answer read
    assert "3 events handed to the beacon: accepted by the browser" in beacon, beacon[-2000:]
    events = _events(settings, {"web-a", "web-b", "web-c"}, want=9)
    by_user = {user: [e for e in events if e.user_id == user] for user in ("web-a", "web-b", "web-c")}
    print(f"\nexample page: rendered {rendered}, events on Kafka {len(events)}, screenshot {shot}")
    assert sorted(e.item_id or "" for e in by_user["web-a"]) == sorted(item for item, _ in ITEMS[:3])
    assert {e.type.value for e in events} == {"view"}
    assert {e.context.get("request_id") for e in by_user["web-a"]} == {request_id.group(1)}
    assert len(by_user["web-b"]) == 3  # the screenshot's page load sent its events too
    assert sorted(e.item_id or "" for e in by_user["web-c"]) == sorted(item for item, _ in ITEMS[:3])
    assert all(e.context.get("request_id") for e in by_user["web-c"])


def test_a_page_on_another_origin_needs_the_shim_to_list_it(shim: str, shop: str, settings: Settings) -> None:
    query = f"key={PUBLISHABLE}&readKey={READ}&k=2"
    allowed = dump_dom(f"{shop}/example.html?endpoint={shim}&user=web-d&{query}")
    assert 'data-state="done"' in allowed and 'data-accepted="2"' in allowed, allowed[-2000:]
    assert re.findall(r'<li data-item="([^"]+)"', allowed) == [item for item, _ in ITEMS[:2]]
    # The same page reached as another origin (localhost is not 127.0.0.1): the browser refuses the answers.
    other = dump_dom(f"{shop.replace('127.0.0.1', 'localhost')}/example.html?endpoint={shim}&user=web-e&{query}")
    assert 'data-state="error"' in other, other[-2000:]
    events = _events(settings, {"web-d"}, want=2)
    assert sorted(e.item_id or "" for e in events) == sorted(item for item, _ in ITEMS[:2])
