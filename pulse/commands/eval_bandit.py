"""``pulse eval bandit``: off-policy evaluation of a bandit on a logged-bandit dataset.

Reads the log as the events the job would see (``producers.sources.obd``), joins clicks to
impressions (``online_models.off_policy.logged_rows``), replays them through the chosen
policy and prints the logged policy's CTR and the policy's IPW / SNIPS / DR estimates with
95 % intervals (method in ``online_models/off_policy.py``).
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from tqdm import tqdm

from online_models.bandits import BanditScope, make_bandit
from online_models.off_policy import Estimate, OffPolicyReport, evaluate_policy, logged_rows
from producers.sources import ReplayOrder
from producers.sources.obd import read_obd
from producers.sources.ordering import ordered
from pulse.app import eval_app, fail, print_json

POLICY_NAMES = {
    "ts": "Thompson sampling (Beta-Bernoulli)",
    "ucb": "UCB1",
    "egreedy": "epsilon-greedy",
    "linucb": "LinUCB (disjoint)",
}
DEFAULT_LINUCB_FEATURES = "user_feature_0,user_feature_1,user_feature_2,user_feature_3,position"


class PolicyName(StrEnum):
    """``--policy`` choices."""

    TS = "ts"
    UCB = "ucb"
    EGREEDY = "egreedy"
    LINUCB = "linucb"


def _hyperparameters(policy: PolicyName, **options: Any) -> dict[str, Any]:
    if policy is PolicyName.TS:
        keys = ("prior_alpha", "prior_beta", "n_draws")
    elif policy is PolicyName.UCB:
        keys = ("c",)
    elif policy is PolicyName.EGREEDY:
        keys = ("epsilon", "decay")
    else:
        keys = ("alpha", "ridge", "n_features", "features")
    return {key: options[key] for key in keys}


def _data_path(data: str) -> Path:
    scheme, sep, path = data.partition(":")
    if not sep or scheme != "obd" or not path:
        raise ValueError(f"--data must look like obd:PATH (an Open Bandit Dataset CSV), got {data!r}")
    return Path(path)


def _percent(value: float) -> str:
    return f"{value:.3%}"


def _estimate_line(name: str, estimate: Estimate) -> str:
    return (
        f"  {name:<6}{_percent(estimate.value):>9}   95% CI [{_percent(estimate.low)}, {_percent(estimate.high)}]"
        f"   (se {_percent(estimate.stderr)})"
    )


@eval_app.command("bandit")
def bandit(
    data: Annotated[str, typer.Option(help="Logged data, obd:PATH to an Open Bandit Dataset CSV")],
    policy: Annotated[PolicyName, typer.Option(help="Policy to evaluate")] = PolicyName.TS,
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
) -> None:
    """Estimate a bandit's CTR off-policy (IPW, SNIPS, DR with 95% intervals) from a logged dataset."""
    hyper = _hyperparameters(
        policy,
        n_draws=n_draws,
        prior_alpha=prior_alpha,
        prior_beta=prior_beta,
        c=c,
        epsilon=epsilon,
        decay=decay,
        alpha=alpha,
        ridge=ridge,
        n_features=n_features,
        features=[f.strip() for f in features.split(",") if f.strip()],
    )
    try:
        path = _data_path(data)
        rows = logged_rows(ordered(read_obd(path), order))
        learner = make_bandit(policy.value, seed=seed, **hyper)
    except (ValueError, FileNotFoundError) as exc:
        raise fail(str(exc), code=2) from None
    if not rows:
        raise fail(f"{path} has no logged decisions", code=2)
    with tqdm(
        total=len(rows), unit="row", desc=f"replay {policy.value}", file=sys.stderr, disable=None if progress else True
    ) as bar:
        report = evaluate_policy(rows, learner, scope=scope, folds=folds, on_row=lambda: bar.update(1))
    n_arms = len({row.arm for row in rows})
    if json:
        print_json(_as_json(data, policy, scope, seed, hyper, n_arms, report))
        return
    logged_by = rows[0].impression.decision.policy if rows[0].impression.decision else "?"
    _print_report(data, logged_by, policy, scope, seed, hyper, n_arms, report)


def _print_report(
    data: str,
    logged_by: str,
    policy: PolicyName,
    scope: BanditScope,
    seed: int,
    hyper: dict[str, Any],
    n_arms: int,
    report: OffPolicyReport,
) -> None:
    """The text output: the log, the logged policy's CTR, the policy's estimates."""
    typer.echo(f"data: {data} ({report.n:,} decisions logged by {logged_by!r}, {n_arms} arms)")
    typer.echo(f"logged policy CTR: {report.logged_clicks:,.0f} clicks / {report.n:,} = {report.logged_ctr:.2%}")
    settings = ", ".join(f"{k}={v}" for k, v in hyper.items() if k != "features" or policy is PolicyName.LINUCB)
    typer.echo(
        f"{POLICY_NAMES[policy.value]} ({settings}; scope {scope.value}, seed {seed}; "
        f"{report.n_scopes} state(s)), estimated CTR:"
    )
    typer.echo(_estimate_line("IPW", report.ipw))
    typer.echo(_estimate_line("SNIPS", report.snips))
    typer.echo(_estimate_line("DR", report.dr))


def _as_json(
    data: str,
    policy: PolicyName,
    scope: BanditScope,
    seed: int,
    hyper: dict[str, Any],
    n_arms: int,
    report: OffPolicyReport,
) -> dict[str, Any]:
    def estimate(e: Estimate) -> dict[str, float]:
        return {"value": e.value, "stderr": e.stderr, "low": e.low, "high": e.high}

    return {
        "data": data,
        "arms": n_arms,
        "logged": {"clicks": report.logged_clicks, "impressions": report.n, "ctr": report.logged_ctr},
        "policy": {
            "name": policy.value,
            "scope": scope.value,
            "seed": seed,
            "hyperparameters": hyper,
            "states": report.n_scopes,
        },
        "interval": "95% normal approximation on per-row terms",
        "ipw": estimate(report.ipw),
        "snips": estimate(report.snips),
        "dr": estimate(report.dr),
    }
