"""bench/serving.py's idle-gap line: the three figures it prints and the ratio between two of them."""

from __future__ import annotations

import re

from bench.serving import idle_gap_cost


def test_the_idle_gap_line_gives_back_to_back_after_a_gap_and_their_ratio() -> None:
    line = idle_gap_cost(calls=3, rounds_of=3, gap_s=0.0002)
    found = re.search(r"(\d+) us of CPU back to back, (-?\d+) us after each 0.2 ms idle gap \(([\d.-]+)x\) "
                      r"plus (\d+) us for the wakeup itself.*medians of 3 rounds in turns", line)
    assert found, line
    back_to_back, after_gap, ratio, wakeup = (float(found.group(i)) for i in range(1, 5))
    assert back_to_back > 0 and wakeup >= 0
    # The printed ratio is of the printed (rounded) figures, to their rounding.
    assert abs(ratio - after_gap / back_to_back) <= 0.01 + 2 / back_to_back, line
