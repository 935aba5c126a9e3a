r"""Read Open Bandit Dataset (OBD) logs as :class:`Event` streams.

The OBD (Saito et al., "Open Bandit Dataset and Pipeline", arXiv:2008.07146; Apache-2.0)
logs what two policies (``random``, ``bts`` = Bernoulli Thompson sampling) showed on
ZOZOTOWN, one CSV per campaign at ``.../<policy>/<campaign>/<campaign>.csv`` with columns
``index, timestamp, item_id, position, click, propensity_score, user_feature_0..3, ...``.

Each row becomes an ``impression`` event, and a clicked row also a ``click`` event:

* ``user_id = "obd-" + blake2b(user_feature_0..3)[:12 hex]`` (the log has no user id; the
  four hashed features stand in for one);
* the impression carries ``Decision(request_id=f"obd-{campaign}-{policy}-{index}",
  policy, arm=str(item_id), propensity=propensity_score)`` and the context ``position``,
  ``campaign``, ``segment`` (= campaign) and ``user_feature_0..3``;
* the click comes 1 ms later, with ``value=1.0`` and context ``request_id``, ``position``;
* event ids are ``f"{request_id}-imp"`` and ``f"{request_id}-click"``.

Policy and campaign come from the path; when the path does not have that shape the
campaign is the file's stem and the policy ``"logged"`` (or pass them explicitly).
``online_models.off_policy.logged_rows`` joins the events back into logged rows.

>>> import tempfile, os
>>> folder = os.path.join(tempfile.mkdtemp(), "random", "men")
>>> os.makedirs(folder)
>>> path = os.path.join(folder, "men.csv")
>>> _ = open(path, "w").write(
...     ",timestamp,item_id,position,click,propensity_score,"
...     "user_feature_0,user_feature_1,user_feature_2,user_feature_3\n"
...     "7,2019-11-24 00:03:13.442536+00:00,14,3,1,0.0294,a,b,c,d\n")
>>> imp, click = read_obd(path)
>>> imp.type.value, imp.item_id, imp.event_time_ms
('impression', '14', 1574553793442)
>>> imp.decision
Decision(request_id='obd-men-random-7', policy='random', arm='14', propensity=0.0294)
>>> click.type.value, click.event_id, click.user_id == imp.user_id, click.event_time_ms, click.context
('click', 'obd-men-random-7-click', True, 1574553793443, {'request_id': 'obd-men-random-7', 'position': '3'})
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from producers.sources._files import existing_file, open_text
from schemas.events import Decision, Event, EventType

__all__ = ["obd_user_id", "read_obd"]

POLICIES = frozenset({"random", "bts"})
USER_FEATURES = ("user_feature_0", "user_feature_1", "user_feature_2", "user_feature_3")
_REQUIRED = ("timestamp", "item_id", "position", "click", "propensity_score", *USER_FEATURES)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def obd_user_id(features: tuple[str, ...]) -> str:
    """A stable user id for the four hashed user features of an OBD row.

    >>> obd_user_id(("a", "b", "c", "d"))
    'obd-0ec8af2988bc'
    """
    digest = hashlib.blake2b("\x1f".join(features).encode(), digest_size=6).hexdigest()
    return "obd-" + digest


def policy_and_campaign(path: Path) -> tuple[str, str]:
    """``(policy, campaign)`` from ``.../<policy>/<campaign>/<file>.csv``, else ``("logged", stem)``.

    >>> policy_and_campaign(Path("/data/obd/bts/women/women.csv"))
    ('bts', 'women')
    >>> policy_and_campaign(Path("/tmp/sample.csv"))
    ('logged', 'sample')
    """
    if path.parent.parent.name in POLICIES:
        return path.parent.parent.name, path.parent.name
    return "logged", path.name.removesuffix(".gz").removesuffix(".csv")


def _event_time_ms(text: str) -> int:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:  # the OBD writes +00:00; a naive stamp is taken as UTC
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MS


def read_obd(path: str | Path, *, policy: str | None = None, campaign: str | None = None) -> Iterator[Event]:
    """Yield the impression (and click) events of an OBD CSV, in file order.

    Raises :class:`FileNotFoundError` at once for a missing file, and :class:`ValueError`
    naming the file and line for a malformed row (while iterating).
    """
    p = existing_file(path)
    found_policy, found_campaign = policy_and_campaign(p)
    return _read(p, policy or found_policy, campaign or found_campaign)


def _read(path: Path, policy: str, campaign: str) -> Iterator[Event]:
    with open_text(path) as lines:
        reader = csv.DictReader(lines)
        missing = [c for c in _REQUIRED if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path}: not an OBD log, missing columns {missing}")
        for row_no, row in enumerate(reader):
            line_no = row_no + 2
            try:
                yield from _events(row, row_no, policy, campaign)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{path}:{line_no}: {exc}") from None


def _events(row: dict[str, str], row_no: int, policy: str, campaign: str) -> Iterator[Event]:
    index = (row.get("") or row.get("index") or str(row_no)).strip()
    request_id = f"obd-{campaign}-{policy}-{index}"
    features = tuple(row[name] for name in USER_FEATURES)
    user_id = obd_user_id(features)
    item_id = str(int(row["item_id"]))
    position = str(int(row["position"]))
    propensity = float(row["propensity_score"])
    if not 0.0 < propensity <= 1.0:
        raise ValueError(f"propensity_score {propensity} is not in (0, 1]")
    click = int(row["click"])
    if click not in (0, 1):
        raise ValueError(f"click is {click}, not 0 or 1")
    time_ms = _event_time_ms(row["timestamp"])
    context = {"position": position, "campaign": campaign, "segment": campaign}
    context.update(zip(USER_FEATURES, features, strict=True))
    yield Event(
        event_id=f"{request_id}-imp",
        type=EventType.IMPRESSION,
        user_id=user_id,
        item_id=item_id,
        event_time_ms=time_ms,
        context=context,
        decision=Decision(request_id=request_id, policy=policy, arm=item_id, propensity=propensity),
    )
    if click:
        yield Event(
            event_id=f"{request_id}-click",
            type=EventType.CLICK,
            user_id=user_id,
            item_id=item_id,
            event_time_ms=time_ms + 1,
            value=1.0,
            context={"request_id": request_id, "position": position},
        )
