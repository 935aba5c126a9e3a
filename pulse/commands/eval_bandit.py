"""``pulse eval bandit``: off-policy evaluation of a bandit on a logged-bandit dataset.

Reads the log as the events the job would see: an Open Bandit Dataset file
(``producers.sources.obd``) or Pulse's own events topic (``kafka:TOPIC``, read from its beginning
to its end offsets at the start, :mod:`pulse.commands.topic_reader`), where serving logged every
``/v1/decisions`` answer as an impression with its propensity. Joins reward events to
impressions by request id (``online_models.off_policy.join_decisions``), replays them through the
chosen policy (``logged``: the logging policy itself) and prints the logged policy's CTR and the
policy's IPW / SNIPS / DR estimates with 95 % intervals (method in ``online_models/off_policy.py``).

``--decide FILE`` (``linucb``, global scope) then prints what the replayed policy decides for each
line of a JSON-lines file, ``{"request_id": HEX or "seed": N, "context": {...}, "arms": [...]}``:
the arm and propensity serving would answer from the same state for that request id (seed
``int(request_id, 16) mod 2**64``; arms default to the learned ones sorted, as serving's), so the
job + serving path can be checked against the evaluation (``serving/linucb_decisions.py``).
"""

from __future__ import annotations

import json as json_lib
import sys
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from tqdm import tqdm

from online_models.bandits import Bandit, BanditScope, LinUCB, make_bandit
from online_models.off_policy import (
    DecisionLog,
    Estimate,
    OffPolicyReport,
    evaluate_logging_policy,
    evaluate_policy,
    join_decisions,
)
from producers.sources import ReplayOrder
from producers.sources.obd import read_obd
from producers.sources.ordering import ordered
from pulse.app import eval_app, fail, print_json, settings_of
from pulse.commands.topic_reader import TopicReader, TopicReadError
from pulse.reach import require
from schemas.events import Event, EventType

POLICY_NAMES = {
    "ts": "Thompson sampling (Beta-Bernoulli)",
    "ucb": "UCB1",
    "egreedy": "epsilon-greedy",
    "linucb": "LinUCB (disjoint)",
    "logged": "The logging policy itself (w = 1; DR's direct term at the logged arm)",
}
#: Event types ``--reward`` may name: a decision named by one of them earned reward 1.
REWARD_TYPES = (EventType.CLICK, EventType.ADD_TO_CART, EventType.PURCHASE)
DEFAULT_LINUCB_FEATURES = "user_feature_0,user_feature_1,user_feature_2,user_feature_3,position"


class PolicyName(StrEnum):
    """``--policy`` choices."""

    TS = "ts"
    UCB = "ucb"
    EGREEDY = "egreedy"
    LINUCB = "linucb"
    LOGGED = "logged"


def _hyperparameters(policy: PolicyName, **options: Any) -> dict[str, Any]:
    if policy is PolicyName.LOGGED:
        return {}
    if policy is PolicyName.TS:
        keys = ("prior_alpha", "prior_beta", "n_draws")
    elif policy is PolicyName.UCB:
        keys = ("c",)
    elif policy is PolicyName.EGREEDY:
        keys = ("epsilon", "decay")
    else:
        keys = ("alpha", "ridge", "n_features", "features")
    return {key: options[key] for key in keys}


def _source(data: str) -> tuple[str, str]:
    """``(scheme, rest)`` of ``--data``."""
    scheme, sep, rest = data.partition(":")
    if not sep or scheme not in ("obd", "kafka") or not rest:
        raise ValueError(
            f"--data must look like obd:PATH (an Open Bandit Dataset CSV) or kafka:TOPIC (Pulse's events), got {data!r}"
        )
    return scheme, rest


def _reward_types(reward: str) -> frozenset[EventType]:
    names = [name.strip() for name in reward.split(",") if name.strip()]
    known = {t.value: t for t in REWARD_TYPES}
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ValueError(f"--reward takes event types among {', '.join(known)}, got {reward!r}")
    return frozenset(known[name] for name in names)


def _load(ctx: typer.Context, data: str, rewards: frozenset[EventType], order: ReplayOrder,
          progress: bool) -> tuple[str, DecisionLog, int]:
    """The path or topic of ``--data``, its decisions joined with their rewards, and its undecodable records."""
    scheme, where = _source(data)
    if scheme == "kafka":
        return (where, *_read_topic(ctx, where, rewards, order, progress))
    return where, join_decisions(ordered(read_obd(Path(where)), order), rewards), 0


def _read_topic(ctx: typer.Context, topic: str, rewards: frozenset[EventType], order: ReplayOrder,
                progress: bool) -> tuple[DecisionLog, int]:
    """The decisions logged on ``topic`` joined with their rewards, and how many records did not decode."""
    settings = settings_of(ctx)
    require(settings, kafka=True, code=2)
    try:
        with TopicReader(settings, topic) as reader, tqdm(
            total=reader.total, unit="record", desc=f"read {topic}", file=sys.stderr,
            disable=None if progress else True,
        ) as bar:
            kept = (e for e in reader.events(lambda: bar.update(1)) if _joined(e, rewards))
            return join_decisions(ordered(kept, order), rewards), reader.undecodable
    except TopicReadError as exc:
        raise fail(f"cannot read kafka:{topic} at {settings.kafka_bootstrap}: {exc}", code=2) from None


def _joined(event: Event, rewards: frozenset[EventType]) -> bool:
    """Only impressions and reward events are kept (and sorted) for the join."""
    return event.type is EventType.IMPRESSION or event.type in rewards


def _percent(value: float) -> str:
    return f"{value:.3%}"


def _estimate_line(name: str, estimate: Estimate) -> str:
    return (
        f"  {name:<6}{_percent(estimate.value):>9}   95% CI [{_percent(estimate.low)}, {_percent(estimate.high)}]"
        f"   (se {_percent(estimate.stderr)})"
    )


@eval_app.command("bandit")
def bandit(
    ctx: typer.Context,
    data: Annotated[str, typer.Option(help="Logged data: obd:PATH (Open Bandit Dataset CSV) or kafka:TOPIC")],
    policy: Annotated[PolicyName, typer.Option(help="Policy to evaluate (logged: the logging policy)")] = PolicyName.TS,
    scope: Annotated[BanditScope, typer.Option(help="One bandit state for all, per segment or per user")] = (
        BanditScope.GLOBAL
    ),
    seed: Annotated[int, typer.Option(help="Seed of the policy's randomness")] = 0,
    json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout")] = False,
    n_draws: Annotated[int, typer.Option(help="ts: Monte-Carlo draws per propensity")] = 1000,
    prior_alpha: Annotated[float, typer.Option(help="ts: Beta prior alpha")] = 1.0,
    prior_beta: Annotated[float, typer.Option(help="ts: Beta prior beta")] = 1.0,
    c: Annotated[float, typer.Option(help="ucb: width of the confidence bonus (1 = UCB1)")] = 1.0,
    epsilon: Annotated[float, typer.Option(help="egreedy: exploration probability")] = 0.1,
    decay: Annotated[float, typer.Option(help="egreedy: epsilon *= exp(-decay * updates)")] = 0.0,
    alpha: Annotated[float, typer.Option(help="linucb: width of the confidence bonus")] = 1.0,
    ridge: Annotated[float, typer.Option(help="linucb: ridge (prior precision)")] = 1.0,
    n_features: Annotated[int, typer.Option(help="linucb: hashed feature dimension (with bias)")] = 32,
    features: Annotated[str, typer.Option(help="linucb: comma-separated context keys")] = DEFAULT_LINUCB_FEATURES,
    folds: Annotated[int, typer.Option(help="DR: cross-fitting folds of the reward model (1 = none)")] = 2,
    progress: Annotated[bool, typer.Option(help="Progress bar on stderr (when it is a terminal)")] = True,
    order: Annotated[ReplayOrder, typer.Option(help="Replay by event time (as `pulse produce`) or file order")] = (
        ReplayOrder.TIME
    ),
    reward: Annotated[str, typer.Option(help="Event types that reward the decision they name by request id, "
                                        "comma-separated (click, add_to_cart, purchase)")] = "click",
    decide: Annotated[Path | None, typer.Option(help="linucb: JSON lines of {request_id or seed, context, arms}: "
                                                "print the replayed policy's decision for each")] = None,
) -> None:
    """Estimate a bandit's CTR off-policy (IPW, SNIPS, DR with 95% intervals) from a logged dataset."""
    hyper = _hyperparameters(
        policy, n_draws=n_draws, prior_alpha=prior_alpha, prior_beta=prior_beta, c=c, epsilon=epsilon, decay=decay,
        alpha=alpha, ridge=ridge, n_features=n_features, features=[f.strip() for f in features.split(",") if f.strip()],
    )
    try:
        rewards = _reward_types(reward)
        if decide is not None and (policy is not PolicyName.LINUCB or scope is not BanditScope.GLOBAL):
            raise ValueError("--decide needs --policy linucb and --scope global")
        learner = make_bandit(policy.value, seed=seed, **hyper) if policy is not PolicyName.LOGGED else None
        where, log, undecodable = _load(ctx, data, rewards, order, progress)
    except (ValueError, FileNotFoundError) as exc:
        raise fail(str(exc), code=2) from None
    rows = log.rows
    if not rows:
        raise fail(f"{where} has no logged decisions", code=2)
    if learner is None:
        report = evaluate_logging_policy(rows)
    else:
        with tqdm(total=len(rows), unit="row", desc=f"replay {policy.value}", file=sys.stderr,
                  disable=None if progress else True) as bar:
            report = evaluate_policy(rows, learner, scope=scope, folds=folds, on_row=lambda: bar.update(1))
    run = _Run(data, policy, scope, seed, hyper, len({row.arm for row in rows}), sorted(rewards), log, undecodable)
    _emit(run, report, _decisions(learner, decide), json)


def _emit(run: _Run, report: OffPolicyReport, decisions: list[dict[str, Any]] | None, json: bool) -> None:
    if json:
        print_json({**_as_json(run, report), **({"decisions": decisions} if decisions is not None else {})})
        return
    _print_report(run, report)
    for decision in decisions or ():
        typer.echo(f"  decision {decision['request_id'] or decision['seed']}: arm {decision['arm']} "
                   f"(propensity {decision['propensity']:g})")


def _decisions(learner: Bandit | None, path: Path | None) -> list[dict[str, Any]] | None:
    """The replayed LinUCB's decision for each request of the ``--decide`` file (see the module docstring)."""
    if path is None or not isinstance(learner, LinUCB):
        return None
    try:
        return _decide_each(learner, path)
    except (ValueError, OSError) as exc:
        raise fail(f"--decide {path}: {exc}", code=2) from None


def _decide_each(learner: LinUCB, path: Path) -> list[dict[str, Any]]:
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            request = json_lib.loads(line)
            request_id = request.get("request_id")
            seed = int(request_id, 16) % 2**64 if request_id is not None else int(request["seed"])
            arms = list(request.get("arms") or sorted(learner.known_arms()))
            decision = learner.decide(arms, request.get("context") or {}, seed)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"line {number}: {exc!r}") from None
        out.append({"request_id": request_id, "seed": seed, "arm": decision.arm, "propensity": decision.propensity})
    return out


@dataclass(frozen=True, slots=True)
class _Run:
    """What was evaluated, on which log (for the outputs)."""

    data: str
    policy: PolicyName
    scope: BanditScope
    seed: int
    hyper: dict[str, Any]
    n_arms: int
    rewards: list[str]
    log: DecisionLog
    undecodable: int

    def logged_by(self) -> dict[str, int]:
        """Decisions per logging policy (Pulse logs its bandit's and the uniform control's)."""
        return dict(Counter(row.impression.decision.policy for row in self.log.rows if row.impression.decision))


def _print_report(run: _Run, report: OffPolicyReport) -> None:
    """The text output: the log, the join, the logged policy's CTR, the policy's estimates."""
    logged_by = run.logged_by()
    by = ", ".join(f"{name!r} ({n:,})" if len(logged_by) > 1 else repr(name) for name, n in logged_by.items())
    typer.echo(f"data: {run.data} ({report.n:,} decisions logged by {by}, {run.n_arms} arms)")
    counts = run.log.counts
    if run.data.startswith("kafka:"):
        typer.echo(
            f"join by request id ({'/'.join(run.rewards)} = reward 1): {run.log.rewarded:,} decisions rewarded by "
            f"{counts.reward_events:,} events; ignored: {counts.unknown_decision:,} naming no logged decision, "
            f"{counts.no_request_id:,} naming none, {counts.duplicate_impressions:,} repeated impressions, "
            f"{run.undecodable:,} undecodable records"
        )
    noun = "clicks" if run.rewards == ["click"] else "rewarded"
    typer.echo(f"logged policy CTR: {report.logged_clicks:,.0f} {noun} / {report.n:,} = {report.logged_ctr:.2%}")
    policy = run.policy
    if policy is PolicyName.LOGGED:
        typer.echo(f"{POLICY_NAMES[policy.value]}, estimated CTR:")
    else:
        settings = ", ".join(f"{k}={v}" for k, v in run.hyper.items() if k != "features" or policy is PolicyName.LINUCB)
        typer.echo(
            f"{POLICY_NAMES[policy.value]} ({settings}; scope {run.scope.value}, seed {run.seed}; "
            f"{report.n_scopes} state(s)), estimated CTR:"
        )
    typer.echo(_estimate_line("IPW", report.ipw))
    typer.echo(_estimate_line("SNIPS", report.snips))
    typer.echo(_estimate_line("DR", report.dr))


def _as_json(run: _Run, report: OffPolicyReport) -> dict[str, Any]:
    def estimate(e: Estimate) -> dict[str, float]:
        return {"value": e.value, "stderr": e.stderr, "low": e.low, "high": e.high}

    counts = run.log.counts
    return {
        "data": run.data,
        "arms": run.n_arms,
        "logged": {"clicks": report.logged_clicks, "impressions": report.n, "ctr": report.logged_ctr},
        "logged_by": run.logged_by(),
        "join": {
            "reward_types": run.rewards,
            "rewarded": run.log.rewarded,
            "reward_events": counts.reward_events,
            "unknown_decision": counts.unknown_decision,
            "no_request_id": counts.no_request_id,
            "duplicate_impressions": counts.duplicate_impressions,
            "undecodable": run.undecodable,
        },
        "policy": {
            "name": run.policy.value,
            "scope": run.scope.value,
            "seed": run.seed,
            "hyperparameters": run.hyper,
            "states": report.n_scopes,
        },
        "interval": "95% normal approximation on per-row terms",
        "ipw": estimate(report.ipw),
        "snips": estimate(report.snips),
        "dr": estimate(report.dr),
    }
