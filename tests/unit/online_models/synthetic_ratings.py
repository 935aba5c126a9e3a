"""Seeded synthetic ratings in MovieLens ``u.data`` form (low-rank truth + noise, 1-5 stars).

Write a file: ``python -m tests.unit.online_models.synthetic_ratings /tmp/ml/u.data [rows]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

Rating = tuple[str, str, float, int]  # user, item, stars, unix seconds


def synthetic_ratings(
    n: int = 100_000, seed: int = 0, n_users: int = 943, n_items: int = 1682, rank: int = 5
) -> list[Rating]:
    """``n`` ratings with MovieLens-100k's shape, in timestamp order with some ties."""
    rng = np.random.default_rng(seed)
    user_f = rng.normal(0.0, 0.6, (n_users, rank))
    item_f = rng.normal(0.0, 0.6, (n_items, rank))
    user_b, item_b = rng.normal(0, 0.4, n_users), rng.normal(0, 0.6, n_items)
    users = rng.integers(0, n_users, n)
    items = np.minimum((rng.pareto(1.2, n) * 60).astype(int), n_items - 1)
    truth = 3.5 + user_b[users] + item_b[items] + np.einsum("ij,ij->i", user_f[users], item_f[items])
    stars = np.clip(np.rint(truth + rng.normal(0, 0.5, n)), 1, 5)
    seconds = 874_724_710 + np.sort(rng.integers(0, 200 * 86_400, n))
    return [(str(u + 1), str(i + 1), float(s), int(t)) for u, i, s, t in zip(users, items, stars, seconds, strict=True)]


def write_udata(path: Path, n: int = 100_000, seed: int = 0) -> Path:
    """Write ``user\\titem\\trating\\ttimestamp`` lines like MovieLens ``u.data``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for user, item, stars, ts in synthetic_ratings(n, seed):
            f.write(f"{user}\t{item}\t{int(stars)}\t{ts}\n")
    return path


def read_ratings(path: Path, limit: int | None = None) -> list[Rating]:
    """Read ``u.data`` (tab), ``ratings.dat`` (``::``) or ``ratings.csv`` (header skipped)."""
    rows: list[Rating] = []
    with path.open() as f:
        for line in f:
            sep = "\t" if "\t" in line else "::" if "::" in line else ","
            parts = line.strip().split(sep)
            if len(parts) < 4 or not parts[2].replace(".", "", 1).isdigit():
                continue
            rows.append((parts[0], parts[1], float(parts[2]), int(float(parts[3]))))
            if limit is not None and len(rows) >= limit:
                break
    return rows


if __name__ == "__main__":
    out = write_udata(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 100_000)
    print(out)
