"""Co-visitation served: `pulse covisit --write` on the OTTO sample, then similar items with ``method=covisit``.

Real Redis and the running shim; the OTTO sample from ../shared/data (skipped with the reason when
the folder is absent; CI has it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
from typer.testing import CliRunner

from config import Settings
from flink_jobs.redis_writer import RedisWriter
from pulse.cli import app
from schemas.redis_keys import RedisKeys
from schemas.redis_values import CatalogueValue
from tests.integration.test_serving import serve  # noqa: F401 -- the fixture: a running shim per settings update


def test_covisit_lists_written_by_the_cli_are_served_with_the_filters(
    serve: Any, settings: Settings, redis_url: str, shared_data: Path, tmp_path: Path,  # noqa: F811
) -> None:
    otto = shared_data / "otto" / "sample.jsonl"
    env = {"PULSE_HOME": str(tmp_path), "PULSE_REDIS_URL": redis_url, "PULSE_REDIS_PREFIX": settings.redis_prefix}
    result = CliRunner().invoke(app, ["covisit", f"jsonl:{otto}", "--write", "--json", "--k", "50"], env=env)
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.stdout)
    assert report["written"] >= 400 and report["pairs"] > 1_000 and len(report["lists"]) == 3
    client = serve(redis_prefix=settings.redis_prefix)
    for item, stored in report["lists"].items():
        body = client.get(f"/v1/items/{item}/similar", params={"method": "covisit", "k": 5}).json()
        print(f"item {item} also visited: " + ", ".join(f"{e['item_id']} ({e['similarity']:.2f})"
                                                      for e in body["items"]))
        assert body["method"] == "covisit" and body["model_version"] == "covisit-v1"
        assert [[e["item_id"], e["similarity"]] for e in body["items"]] == stored[:5]
        assert body["items"][0]["similarity"] > 0

    # The filters hold, as for factor-based similar items: exclusions, and an item marked unavailable.
    item, stored = next(iter(report["lists"].items()))
    first, second = stored[0][0], stored[1][0]
    excluded = client.get(f"/v1/items/{item}/similar", params={"method": "covisit", "k": 5, "exclude": first}).json()
    assert [e["item_id"] for e in excluded["items"]] == [o for o, _ in stored[1:6]]
    keys = RedisKeys(settings.redis_prefix)
    with RedisWriter(keys, "catalogue", url=redis_url) as writer:
        writer.write_batch([(keys.catalogue_item(second), 1, CatalogueValue(second, "c", False))])
    deadline = time.monotonic() + 5.0
    while second in [e["item_id"] for e in client.get(f"/v1/items/{item}/similar",
                                                      params={"method": "covisit", "k": 5}).json()["items"]]:
        assert time.monotonic() < deadline, "the unavailable item stayed in the list"
        time.sleep(0.1)

    missing = client.get("/v1/items/no-such-item/similar", params={"method": "covisit"})
    assert missing.status_code == 404 and "co-visitation" in missing.json()["detail"]
    assert client.get(f"/v1/items/{item}/similar").status_code == 404  # method=factors: the model has no factors
