"""A 5-row OBD-shaped CSV whose IPW value under epsilon-greedy is worked out by hand."""

from __future__ import annotations

from pathlib import Path

HEADER = (
    ",timestamp,item_id,position,click,propensity_score,user_feature_0,user_feature_1,user_feature_2,user_feature_3\n"
)
# (item_id, propensity_score, click)
ROWS = [(10, 0.5, 1), (20, 0.25, 1), (10, 0.5, 0), (20, 0.5, 1), (10, 0.8, 1)]

# Evaluated policy: EpsilonGreedy(epsilon=0.2) over arms {"10", "20"} (K = 2), replayed row by row
# (probability of the logged arm first, then update with the logged arm and click):
#   row 1: means 10: -, 20: -  -> tie (both 0)  pi(10) = 0.8/2 + 0.2/2 = 0.5; w = 0.5/0.5  = 1.0;  w*r = 1.0
#          update 10 <- 1: mean(10) = 1
#   row 2: greedy 10           pi(20) = 0 + 0.1 = 0.1;           w = 0.1/0.25 = 0.4;  w*r = 0.4
#          update 20 <- 1: mean(20) = 1
#   row 3: tie (1, 1)          pi(10) = 0.5;                     w = 0.5/0.5  = 1.0;  w*r = 0
#          update 10 <- 0: mean(10) = 0.5
#   row 4: greedy 20           pi(20) = 0.8 + 0.1 = 0.9;         w = 0.9/0.5  = 1.8;  w*r = 1.8
#          update 20 <- 1: mean(20) = 1
#   row 5: greedy 20           pi(10) = 0.1;                     w = 0.1/0.8  = 0.125; w*r = 0.125
# IPW   = (1.0 + 0.4 + 0 + 1.8 + 0.125) / 5 = 3.325 / 5 = 0.665
# SNIPS = 3.325 / (1.0 + 0.4 + 1.0 + 1.8 + 0.125) = 3.325 / 4.325 = 0.76878...
EXPECTED_IPW = 0.665
EXPECTED_SNIPS = 3.325 / 4.325
LOGGED_CLICKS = 4


def write_sample(folder: Path) -> Path:
    path = folder / "random" / "tiny" / "tiny.csv"
    path.parent.mkdir(parents=True)
    lines = [
        f"{i},2019-11-24 00:0{i}:00.000000+00:00,{item},{i % 3 + 1},{click},{p},u0,u1,u2,u{i % 2}\n"
        for i, (item, p, click) in enumerate(ROWS)
    ]
    path.write_text(HEADER + "".join(lines))
    return path
