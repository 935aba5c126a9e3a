"""``pulse eval mf``: prequential RMSE/MAE of the owner-split MF, side by side with River's BiasedMF.

The models see the same ratings in the same order through the same loop: by event time
(stable), the order ``pulse produce`` replays the file in, unless ``--order file``
(``online_models.evaluation``): Pulse's :class:`~online_models.mf.OwnerSplitMF` with its
per-key initialiser, and a plain ``river.reco.BiasedMF`` with River's own initialiser and the
same hyperparameters; and (unless ``--no-kalman``) :class:`~online_models.kalman_mf.KalmanMF`,
the better explicit learner, with its own defaults and the same seed. Costs are wall time per
event of the predict+learn loop and of a learn-only loop, so "within 0.5% of River's errors,
within 1.2x of River's cost" reads off one run.
"""

from __future__ import annotations

import json as jsonlib
import sys
from collections.abc import Callable
from dataclasses import asdict, replace
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer
from tqdm import tqdm

from config import Settings
from online_models.evaluation import (
    PrequentialResult,
    Rating,
    learning_seconds,
    progressive_validation,
)
from online_models.kalman_mf import KalmanMF
from online_models.kalman_mf_params import KalmanConfig
from online_models.mf import MFConfig, OwnerSplitMF
from online_models.mf_params import mf_config
from producers.sources import ReplayOrder, open_source
from pulse.app import eval_app
from schemas.events import EventType

Learn = Callable[[str, str, float], None]
Predict = Callable[[str, str], float]


def _ratings(data: str, order: ReplayOrder) -> list[Rating]:
    """The file's ratings in the order ``pulse produce`` replays them (same source, same ordering)."""
    scheme, sep, path = data.partition(":")
    if not sep or scheme != "movielens" or not path:
        raise typer.BadParameter(f"must look like movielens:PATH, got {data!r}", param_hint="--data")
    try:
        return [
            (e.user_id, e.item_id, e.value)
            for e in open_source(data, order=order)
            if e.type is EventType.RATING and e.item_id is not None and e.value is not None
        ]
    except (FileNotFoundError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--data") from None


def _river_model(cfg: MFConfig) -> tuple[Predict, Learn]:
    from river import optim, reco

    model = reco.BiasedMF(
        n_factors=cfg.n_factors,
        bias_optimizer=optim.SGD(cfg.bias_lr),
        latent_optimizer=optim.SGD(cfg.latent_lr),
        l2_bias=cfg.l2_bias,
        l2_latent=cfg.l2_latent,
        latent_initializer=optim.initializers.Normal(mu=cfg.init_mu, sigma=cfg.init_sigma, seed=cfg.seed),
        clip_gradient=cfg.clip_gradient,
        seed=cfg.seed,
    )
    return model.predict_one, model.learn_one


def _pulse_model(cfg: MFConfig) -> tuple[Predict, Learn]:
    model = OwnerSplitMF.from_config(cfg)
    return model.predict_one, model.learn_one


def _kalman_model(cfg: MFConfig) -> tuple[Predict, Learn]:
    model = KalmanMF(KalmanConfig(seed=cfg.seed, targets=cfg.targets))
    return model.predict_one, model.learn_one


def _prequential(
    name: str, build: Callable[[], tuple[Predict, Learn]], ratings: list[Rating], progress: bool
) -> dict[str, Any]:
    predict, learn = build()
    with tqdm(total=len(ratings), unit="ev", desc=name, file=sys.stderr, disable=None if progress else True) as bar:
        result: PrequentialResult = progressive_validation(ratings, predict, learn, on_progress=bar.update)
    return {
        "rmse": result.rmse,
        "mae": result.mae,
        "events_per_s": result.events_per_s,
        "us_per_event": result.us_per_event,
    }


def _learn_only_us(
    builds: dict[str, Callable[[], tuple[Predict, Learn]]], ratings: list[Rating], repeats: int
) -> dict[str, float]:
    """Best-of-``repeats`` µs/event of a plain learn loop, models interleaved so load hits both alike."""
    best = dict.fromkeys(builds, float("inf"))
    for _ in range(repeats):
        for name, build in builds.items():
            best[name] = min(best[name], 1e6 * learning_seconds(ratings, build()[1]) / len(ratings))
    return best


class Metric(StrEnum):
    """What ``pulse eval mf`` measures."""

    RMSE = "rmse"
    RANKING = "ranking"


def _ranking(data: list[str], settings: Settings, cfg: MFConfig, k: int, limit: int, shared: Path,
             json: bool, progress: bool) -> None:  # fmt: skip
    from pulse.commands import eval_ranking

    builds = eval_ranking.rankers(settings, cfg)
    out: dict[str, Any] = {}
    for name in data or eval_ranking.DATA_SETS:
        events = eval_ranking.load(name, shared, limit, cfg.seed)
        results = eval_ranking.run(events, builds, k, progress, name)
        if json:
            out[name] = eval_ranking.as_json(results)
        else:
            typer.echo("\n".join([*eval_ranking.table(name, events, results), ""]))
    if json:
        typer.echo(jsonlib.dumps(out, indent=2))


def _ratio_row(name: str, model: dict[str, Any], river: dict[str, Any]) -> str:
    return (
        f"{name:<16}{model['rmse'] / river['rmse'] - 1:>+8.2%}{model['mae'] / river['mae'] - 1:>+8.2%}"
        f"{model['us_per_event'] / river['us_per_event']:>9.2f}x"
        f"{model['learn_only_us_per_event'] / river['learn_only_us_per_event']:>12.2f}x"
    )


def _print_rmse(data: str, ratings: list[Rating], params: dict[str, Any], results: dict[str, dict[str, Any]]) -> None:
    n_users, n_items = len({r[0] for r in ratings}), len({r[1] for r in ratings})
    typer.echo(f"data: {data} ({len(ratings):,} ratings, {n_users:,} users, {n_items:,} items; prequential)")
    typer.echo("params: " + ", ".join(f"{k}={v}" for k, v in params.items()))
    if "kalman" in results:
        typer.echo("kalman: KalmanMF with its own defaults (online_models/kalman_mf_params.py), same seed")
    typer.echo(f"{'':<16}{'RMSE':>8}{'MAE':>8}{'µs/event':>10}{'learn µs/ev':>13}")
    for key, name in _ROWS.items():
        if (r := results.get(key)) is not None:
            typer.echo(
                f"{name:<16}{r['rmse']:>8.4f}{r['mae']:>8.4f}{r['us_per_event']:>10.2f}"
                f"{r['learn_only_us_per_event']:>13.2f}"
            )
    if (river := results.get("river")) is not None:
        typer.echo(_ratio_row("pulse vs river", results["pulse"], river))
        if "kalman" in results:
            typer.echo(_ratio_row("kalman vs river", results["kalman"], river))


_ROWS = {"pulse": "pulse MF", "river": "river BiasedMF", "kalman": "pulse KalmanMF"}
_BUILDERS = {"pulse": _pulse_model, "river": _river_model, "kalman": _kalman_model}


def _config(settings: Settings, **given: float | int | None) -> MFConfig:
    """The job's MF hyperparameters (:func:`online_models.mf_params.mf_config`), with each flag given instead."""
    return replace(mf_config(settings), **{name: value for name, value in given.items() if value is not None})


@eval_app.command("mf")
def mf(
    ctx: typer.Context,
    data: Annotated[list[str] | None, typer.Option(
        help="rmse: movielens:PATH (u.data, ratings.dat or ratings.csv); ranking: planted, synthetic, obd, "
        "otto or a source such as jsonl:PATH, repeatable (default: the four data sets)")] = None,
    metric: Annotated[Metric, typer.Option(help="rmse: rating errors vs River's BiasedMF; ranking: "
                                           "HitRate/NDCG/recall@k of every learner and baseline")] = Metric.RMSE,
    k: Annotated[int, typer.Option("--k", min=1, help="Ranking: length of the top-k list")] = 10,
    limit: Annotated[int, typer.Option(min=100, help="Ranking: events of the generated streams")] = 200_000,
    shared_data: Annotated[Path, typer.Option(help="Ranking: folder holding obd/ and otto/")] = Path(
        "../shared/data"),
    factors: Annotated[int | None, typer.Option(help="Latent factors per user and item "
                                                "[default: PULSE_MF_FACTORS, 10]")] = None,
    bias_lr: Annotated[float | None, typer.Option(help="SGD learning rate of the biases [default: the job's, "
                                                  "PULSE_MF_BIAS_LR, 0.025]")] = None,
    latent_lr: Annotated[float | None, typer.Option(help="SGD learning rate of the factors [default: the job's, "
                                                    "PULSE_MF_LATENT_LR, 0.05]")] = None,
    l2_bias: Annotated[float | None, typer.Option(help="L2 penalty of the biases [default: PULSE_MF_L2, 0]")] = None,
    l2_latent: Annotated[float | None, typer.Option(help="L2 penalty of the factors [default: PULSE_MF_L2, 0]")] = None,
    init_mu: Annotated[float, typer.Option(help="Mean of the initial factors")] = 0.0,
    init_sigma: Annotated[float, typer.Option(help="Standard deviation of the initial factors")] = 0.1,
    clip_gradient: Annotated[float, typer.Option(help="Clamp of the loss gradient")] = 1e12,
    seed: Annotated[int | None, typer.Option(help="Seed of the initial factors (ranking: also of the generated "
                                             "streams) [default: PULSE_MF_SEED, 0]")] = None,
    compare: Annotated[bool, typer.Option("--compare/--no-compare", help="Also run River's BiasedMF")] = True,
    kalman: Annotated[bool, typer.Option("--kalman/--no-kalman", help="Also run KalmanMF, the better explicit "
                                         "learner (its own defaults, the same seed)")] = True,
    json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout")] = False,
    repeats: Annotated[int, typer.Option(min=1, help="Learn-only timing: best of this many loops")] = 3,
    progress: Annotated[bool, typer.Option(help="Progress bar on stderr (when it is a terminal)")] = True,
    order: Annotated[ReplayOrder, typer.Option(help="Rating order: by event time (as replayed) or file order")] = (
        ReplayOrder.TIME
    ),
) -> None:
    """Prequential RMSE/MAE of Pulse's MF vs River's BiasedMF, or (--metric ranking) HitRate/NDCG/recall@k."""
    settings = ctx.obj if isinstance(ctx.obj, Settings) else Settings()
    cfg = _config(settings, n_factors=factors, bias_lr=bias_lr, latent_lr=latent_lr, l2_bias=l2_bias,
                  l2_latent=l2_latent, seed=seed, init_mu=init_mu, init_sigma=init_sigma, clip_gradient=clip_gradient)
    if metric is Metric.RANKING:
        _ranking(data or [], settings, cfg, k, limit, shared_data, json, progress)
        return
    if not data or len(data) != 1:
        raise typer.BadParameter("rmse needs exactly one movielens:PATH", param_hint="--data")
    ratings = _ratings(data[0], order)
    if not ratings:
        raise typer.BadParameter(f"{data[0]} has no ratings", param_hint="--data")
    keys = [key for key, on in (("pulse", True), ("river", compare), ("kalman", kalman)) if on]
    builds: dict[str, Callable[[], tuple[Predict, Learn]]] = {key: partial(_BUILDERS[key], cfg) for key in keys}
    results = {key: _prequential(_ROWS[key], builds[key], ratings, progress) for key in keys}
    for key, us in _learn_only_us(builds, ratings, repeats).items():
        results[key]["learn_only_us_per_event"] = us
    params = {k: v for k, v in asdict(cfg).items() if k != "targets"}
    if json:
        typer.echo(jsonlib.dumps(_as_json(data[0], len(ratings), params, results), indent=2))
        return
    _print_rmse(data[0], ratings, params, results)


def _as_json(data: str, n: int, params: dict[str, Any], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    pulse, river, kalman = results["pulse"], results.get("river"), results.get("kalman")

    def ratio(model: dict[str, Any] | None) -> dict[str, float] | None:
        return None if river is None or model is None else {k: model[k] / river[k] for k in model if river[k]}

    return {"data": data, "n": n, "params": params, "pulse": pulse, "river": river, "ratio": ratio(pulse),
            "kalman": kalman, "kalman_ratio": ratio(kalman)}  # fmt: skip
