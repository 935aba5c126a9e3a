"""Serialised state size per bandit: ``python bench/bandit_state_sizes.py [n_arms]``."""

from __future__ import annotations

import sys

from online_models.bandits import bandit_state_sizes


def main(n_arms: int) -> None:
    print(f"state bytes with {n_arms} arms, every arm updated (ids '0'..'{n_arms - 1}'):")
    for name, size in bandit_state_sizes(n_arms=n_arms, n_features=(8, 16, 32, 64)).items():
        print(f"  {name:<14}{size:>9,d} B")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 34)
