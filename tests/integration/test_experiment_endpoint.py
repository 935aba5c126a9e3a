"""``GET /v1/experiments/{name}``: the report of ``pulse experiments report`` from the running shim (real Redis)."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from config import Settings
from config.experiments import Experiment, Variant
from flink_jobs.redis_writer import RedisWriter
from schemas.redis_keys import RedisKeys
from tests.integration.test_serving import serve  # noqa: F401 -- the fixture: a running shim per settings update

HOME = Experiment(name="home-recs", surface="recommendations",
                  variants=[Variant(name="A", policy="mf", share=0.5), Variant(name="B", policy="popularity",
                                                                              share=0.5)])


def test_the_report_of_a_planted_lift_and_the_404s(serve: Callable[..., httpx.Client],  # noqa: F811
                                                   settings: Settings, redis_url: str) -> None:
    shim = serve(experiments=(HOME,))
    missing = shim.get("/v1/experiments/home-recs")
    assert missing.status_code == 404 and "no results for 'home-recs' yet" in missing.json()["detail"]
    keys = RedisKeys(settings.redis_prefix)
    payload = {"experiment": "home-recs", "window_ms": 1_800_000, "variants": {
        "A": {"exposures": 25_000, "clicked": 2_500, "clicks": 2_900, "carted": 300, "purchased": 200,
              "purchases": 210},
        "B": {"exposures": 25_000, "clicked": 3_250, "clicks": 3_700, "carted": 330, "purchased": 260,
              "purchases": 270},
    }}
    with RedisWriter(keys, "mf-v1", url=redis_url) as writer:
        writer.write_batch([(keys.experiment("home-recs"), 1_700_000_000_000, payload)])

    report = shim.get("/v1/experiments/home-recs")
    assert report.status_code == 200, report.text
    body = report.json()
    b = next(v for v in body["variants"] if v["variant"] == "B")
    assert body["control"] == "A" and b["exposures"] == 25_000 and b["vs_control"]["excludes_zero"] is True
    assert abs(b["vs_control"]["lift"] - 0.3) < 1e-12 and body["verdicts"] == [b["vs_control"]["verdict"]]
    assert shim.get("/v1/experiments/home-recs", params={"control": "B"}).json()["control"] == "B"
    assert shim.get("/v1/experiments/home-recs", params={"control": "C"}).status_code == 404
    assert shim.get("/v1/experiments/no-such").status_code == 404
    assert shim.get("/v1/experiments/home-recs", params={"outcome": "views"}).status_code == 400
    print(f"\n{body['verdicts'][0]}")
