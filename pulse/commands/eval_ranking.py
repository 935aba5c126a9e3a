"""``pulse eval mf --metric ranking``: prequential HitRate/NDCG/recall@k, coverage and µs/event.

Every learner and baseline sees the same events in the same order through
:func:`online_models.ranking.evaluate_ranking`; one table per data set:

* ``planted`` -- :func:`online_models.planted.planted_stream` (users click by planted taste);
* ``synthetic`` -- ``producers.sources.synthetic`` (visits drawn by popularity alone);
* ``obd`` -- every OBD CSV under ``<shared>/obd`` (clicks are the positives; item ids are
  prefixed with the campaign, whose item numbers are its own);
* ``otto`` -- ``<shared>/otto/sample.jsonl`` (clicks, carts and orders are positives);
* any event source, ``jsonl:PATH`` (or another ``SCHEME:PATH`` of ``pulse produce``), replayed by
  event time as the job would take it: views, clicks, carts and purchases are the positives.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from tqdm import tqdm

from config import Settings
from online_models.implicit import ImplicitMF
from online_models.implicit_params import SWEPT_WMF, implicit_config
from online_models.mf import MFConfig, OwnerSplitMF
from online_models.planted import PlantedConfig, planted_stream
from online_models.rankers import CooccurrenceRanker, FactorRanker, PopularityRanker
from online_models.ranking import DEFAULT_POSITIVES, Ranker, RankingResult, evaluate_ranking
from producers.sources import SyntheticConfig, open_source, synthetic_events
from schemas.events import Event, EventType

DATA_SETS = ("planted", "synthetic", "obd", "otto")
DataSet = tuple[list[Event], frozenset[EventType]]


def _obd(shared: Path) -> DataSet:
    files = sorted(p for p in (shared / "obd").glob("*/*/*.csv") if p.name != "item_context.csv")
    if not files:
        raise typer.BadParameter(f"no OBD CSV under {shared / 'obd'}", param_hint="--shared-data")
    events = []
    for path in files:
        campaign = path.parent.name
        events += [dataclasses.replace(e, item_id=f"{campaign}:{e.item_id}") for e in open_source(f"obd:{path}")]
    events.sort(key=lambda e: e.event_time_ms)
    return events, frozenset({EventType.CLICK})


def load(name: str, shared: Path, limit: int, seed: int) -> DataSet:
    """The events of data set ``name`` (at most ``limit`` for the generated ones) and its positives."""
    if name == "planted":
        return planted_stream(PlantedConfig(n_clicks=limit // 4, seed=seed)), DEFAULT_POSITIVES
    if name == "synthetic":
        config = SyntheticConfig(seed=seed, n_users=2_000, n_items=1_000)
        return list(synthetic_events(config, limit=limit)), DEFAULT_POSITIVES
    if name == "obd":
        return _obd(shared)
    if name == "otto":
        path = shared / "otto" / "sample.jsonl"
        if not path.exists():
            raise typer.BadParameter(f"{path} does not exist", param_hint="--shared-data")
        return list(open_source(f"jsonl:{path}")), DEFAULT_POSITIVES
    if ":" in name:  # a file the job could be fed, e.g. to compare with its running HitRate
        try:
            return list(open_source(name)), DEFAULT_POSITIVES
        except (ValueError, OSError) as exc:
            raise typer.BadParameter(str(exc), param_hint="--data") from exc
    raise typer.BadParameter(f"unknown data set {name!r}; one of {', '.join(DATA_SETS)} or SCHEME:PATH",
                             param_hint="--data")  # fmt: skip


def rankers(settings: Settings, mf: MFConfig) -> dict[str, Callable[[], Ranker]]:
    """Builders of the baselines and learners, in table order.

    MF and BPR take their hyperparameters from ``mf`` and ``settings`` (the job's); WMF, unless the
    settings choose it, runs at the best of its own sweep (the settings' defaults are BPR's).
    """
    wmf = implicit_config(settings) if settings.mf_learner == "wmf" else dataclasses.replace(SWEPT_WMF, seed=mf.seed)
    return {
        "popularity": PopularityRanker,
        "co-occurrence": CooccurrenceRanker,
        "MF (explicit)": lambda: FactorRanker(OwnerSplitMF.from_config(mf)),
        "implicit BPR": lambda: FactorRanker(ImplicitMF.from_config(implicit_config(settings, "bpr"))),
        "implicit WMF": lambda: FactorRanker(ImplicitMF.from_config(wmf)),
    }


def run(
    data: DataSet, builds: dict[str, Callable[[], Ranker]], k: int, progress: bool, desc: str
) -> dict[str, RankingResult]:
    """Evaluate fresh rankers on ``data`` with a progress bar on stderr."""
    events, positives = data
    with tqdm(total=len(events), unit="ev", desc=desc, file=sys.stderr, disable=None if progress else True) as bar:
        return evaluate_ranking(events, {n: b() for n, b in builds.items()}, k=k, positives=positives,
                                on_progress=bar.update)  # fmt: skip


def as_json(results: dict[str, RankingResult]) -> dict[str, Any]:
    """The figures of one table as plain data."""
    return {
        name: {"n": r.n, "hit_rate": r.hit_rate, "ndcg": r.ndcg, "recall": r.recall, "coverage": r.coverage,
               "us_per_event": r.us_per_event, "unknown": r.misses_unknown, "repeats": r.repeats}
        for name, r in results.items()
    }  # fmt: skip


def table(name: str, data: DataSet, results: dict[str, RankingResult]) -> list[str]:
    """One data set's table as lines of text."""
    events, positives = data
    first = next(iter(results.values()))
    k = first.k
    kinds = ",".join(sorted(p.value for p in positives))
    lines = [
        f"data: {name} ({len(events):,} events, {first.n:,} positives judged ({kinds}), "
        f"{first.repeats:,} repeats not judged, {first.catalogue:,} items; prequential, k={k})",
        f"{'':<16}{f'HR@{k}':>9}{f'NDCG@{k}':>9}{f'recall@{k}':>11}{'coverage':>10}{'µs/event':>10}{'unknown':>9}",
    ]
    for model, r in results.items():
        lines.append(f"{model:<16}{r.hit_rate:>9.4f}{r.ndcg:>9.4f}{r.recall:>11.4f}{r.coverage:>10.3f}"
                     f"{r.us_per_event:>10.1f}{r.misses_unknown:>9,}")  # fmt: skip
    return lines
