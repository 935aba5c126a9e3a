"""The live web console: ``GET /console`` (the page) and ``GET /v1/console/state`` (what it draws, read key).

The state is read from Redis only, in one pipeline besides the recommendations read: a user's
live top-k with explanations, their session and counts, the model's metadata (events learned,
RMSE, the event time its last write reflected), the dead-letter counts by reason when the job
writes them (``<prefix>:model:dlq``, payload ``{"by_reason": {reason: count}}``), and the arm table
of the serving policy's global bandit. Rates (learned events/s, dead letters/s) are differences
between polls, computed by the page; every time here is milliseconds.

>>> _arms({"arms": {"a": [3.0, 1.0]}, "stat_names": ["successes", "failures"]})
[{'arm': 'a', 'stats': {'successes': 3.0, 'failures': 1.0}, 'mean': 0.75}]
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse

from schemas.redis_keys import Envelope, UserKind
from serving.models import ID_PATTERN, MAX_ID_LENGTH
from serving.recommendations import now_ms
from serving.routes import Services
from serving.security import KeyScope, require

__all__ = ["STATIC_DIR", "console", "console_state"]

#: The browser SDK (pulse.js), its example page and the console's files, served at /static.
STATIC_DIR = Path(__file__).resolve().parent / "static"
console = APIRouter(include_in_schema=False)
_PAGE = "console.html"


def _envelope(envelope: Envelope | None, now: int) -> dict[str, Any] | None:
    if envelope is None:
        return None
    return {"payload": envelope.payload, "event_time_ms": envelope.event_time_ms,
            "write_time_ms": envelope.write_time_ms, "model_version": envelope.model_version,
            "event_age_ms": now - envelope.event_time_ms, "write_age_ms": now - envelope.write_time_ms}


def _arms(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Each arm's statistics by name, and its mean reward where the statistics give one."""
    names = list(payload.get("stat_names") or [])
    rows = []
    for arm, values in sorted((payload.get("arms") or {}).items()):
        stats = dict(zip(names, values, strict=False)) if names else {str(i): v for i, v in enumerate(values)}
        mean = None
        if {"successes", "failures"} <= set(stats) and stats["successes"] + stats["failures"] > 0:
            mean = stats["successes"] / (stats["successes"] + stats["failures"])
        elif {"n", "sum"} <= set(stats) and stats["n"] > 0:
            mean = stats["sum"] / stats["n"]
        rows.append({"arm": arm, "stats": stats, "mean": mean})
    return rows


async def console_state(svc: Services, user_id: str, k: int) -> dict[str, Any]:
    """Everything the console shows for ``user_id`` (see the module docstring)."""
    store, settings = svc.store, svc.settings
    keys = store.keys
    recs = await svc.recommender.recommend(user_id, k, explain=True)
    session, counts = await store.user_parts(user_id, (UserKind.SESSION, UserKind.COUNTS))
    model, dead, bandit = await store.read([
        keys.model("mf"), keys.model("dlq"), keys.bandit(settings.bandit_policy, "global"),
    ])
    now = now_ms()
    arms = _envelope(bandit, now)
    if arms is not None:
        arms.update(policy=settings.bandit_policy, scope="global", arms=_arms(arms["payload"]))
    return {
        "now_ms": now, "user_id": user_id, "recommendations": recs,
        "session": _envelope(session, now), "counts": _envelope(counts, now), "model": _envelope(model, now),
        "dead_letters": _envelope(dead, now), "bandit": arms,
    }


@console.get("/console")
async def page() -> FileResponse:
    """The console page (no data in it: the page reads /v1/console/state with the key it is given)."""
    return FileResponse(STATIC_DIR / _PAGE, media_type="text/html")


@console.get("/v1/console/state", dependencies=[Depends(require(KeyScope.READ))])
async def state(
    request: Request,
    user_id: Annotated[str, Query(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)],
    k: Annotated[int, Query(ge=1, le=50)] = 10,
) -> Response:
    """The console's data for one user (read or admin key)."""
    body = await console_state(request.app.state.services, user_id, k)
    return Response(orjson.dumps(body), media_type="application/json", headers={"Cache-Control": "no-store"})
