"""Coordinate sweep of the learners' defaults by prequential HitRate@10 (ADR 0008).

One hyperparameter at a time, in the order of the grid: every value is scored on the planted
stream (40,000 events, seed 0) and the OBD sample, the best by the sum of both is kept, then the
next hyperparameter. Prints every point; slow (tens of minutes per learner on 2 cores).

    .venv/bin/python bench/models_sweep.py bpr            # or wmf, mf
    .venv/bin/python bench/models_sweep.py bpr --shared-data ../shared/data
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from config import REPO_ROOT
from online_models.implicit import ImplicitMF
from online_models.implicit_params import ImplicitConfig
from online_models.mf import MFConfig, OwnerSplitMF
from online_models.rankers import FactorRanker
from online_models.ranking import evaluate_ranking
from pulse.commands.eval_ranking import load

MF_GRID = {"bias_lr": [0.01, 0.025, 0.05], "latent_lr": [0.01, 0.05, 0.1], "n_factors": [10, 32],
           "l2_latent": [0.0, 0.01]}


def implicit_grid(loss: str) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {
        "lr": [0.02, 0.05, 0.1, 0.2], "bias_lr": [0.0, 0.01, 0.05, 0.1], "l2": [0.0, 0.001, 0.01, 0.05],
        "n_factors": [8, 16, 32], "n_negatives": [1, 4, 8] if loss == "bpr" else [4], "init_sigma": [0.01, 0.1],
    }
    if loss == "wmf":
        grid["impression"] = [0.03, 0.1, 0.3, 1.0]
    return grid


def with_value(config: Any, key: str, value: Any) -> Any:
    if key == "impression":
        return dataclasses.replace(config, weights=dataclasses.replace(config.weights, impression=value))
    return dataclasses.replace(config, **{key: value})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("learner", choices=["bpr", "wmf", "mf"])
    parser.add_argument("--shared-data", type=Path, default=REPO_ROOT.parent / "shared" / "data",
                        help="folder holding obd/ (default: ../shared/data)")
    args = parser.parse_args()
    data = {"planted": load("planted", args.shared_data, 40_000, 0), "obd": load("obd", args.shared_data, 0, 0)}

    def hit_rates(build: Callable[[], FactorRanker]) -> dict[str, float]:
        return {name: round(evaluate_ranking(events, {"m": build()}, k=10, positives=positives)["m"].hit_rate, 4)
                for name, (events, positives) in data.items()}

    base: Any
    if args.learner == "mf":
        base, grid = MFConfig(), MF_GRID

        def make(config: Any) -> FactorRanker:
            return FactorRanker(OwnerSplitMF.from_config(config))
    else:
        base, grid = ImplicitConfig(loss=args.learner), implicit_grid(args.learner)

        def make(config: Any) -> FactorRanker:
            return FactorRanker(ImplicitMF.from_config(config))

    print(args.learner, "base", base, hit_rates(lambda: make(base)), flush=True)
    best = base
    for key, values in grid.items():
        scores = {}
        for value in values:
            config = with_value(best, key, value)
            scores[value] = hit_rates(lambda config=config: make(config))
            print(args.learner, key, value, scores[value], flush=True)
        pick = max(scores, key=lambda v: scores[v]["planted"] + scores[v]["obd"])
        best = with_value(best, key, pick)
        print(args.learner, "pick", key, pick, flush=True)
    print(args.learner, "best", best, hit_rates(lambda: make(best)), flush=True)


if __name__ == "__main__":
    main()
