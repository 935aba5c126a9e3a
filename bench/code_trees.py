"""The code trees an A/B bench compares (``serving_ab.py``, ``steps_ab.py``): trees given, or ``--baseline REV``.

``--baseline REV`` extracts ``git archive REV`` into a scratch folder and compares it first, against
the working tree (or the trees given). Each bench runs a tree's code with the tree as the working
directory, so it imports that tree's packages.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def add_tree_arguments(parser: argparse.ArgumentParser) -> None:
    """The positional trees and ``--baseline``."""
    parser.add_argument("trees", nargs="*", help="Code trees to compare (with --baseline: the working tree if none)")
    parser.add_argument("--baseline", default=None, help="A git revision, extracted and compared first")


def trees_to_compare(args: argparse.Namespace, parser: argparse.ArgumentParser, scratch: Path,
                     holds: str) -> list[Path]:
    """The trees, the baseline's extracted first; each must hold ``holds`` (a path inside it), else a usage error."""
    trees = [Path(t).resolve() for t in args.trees]
    if args.baseline:
        base = scratch / "baseline"
        base.mkdir()
        archive = subprocess.run(["git", "archive", args.baseline], capture_output=True, check=True, cwd=REPO).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        trees = [base, *(trees or [REPO])]
    if len(trees) < 2:
        parser.error("give two trees, or --baseline REV (against the working tree, or the trees given)")
    for tree in trees:
        if not (tree / holds).exists():
            parser.error(f"{tree} holds no {holds}")
    return trees


def print_medians(args: argparse.Namespace, trees: list[Path], runs: dict[Path, list[float]], unit: str,
                  extra: dict[Path, str] | None = None) -> None:
    """Each tree's median and runs, then each later tree's difference from the first."""
    medians = {tree: statistics.median(runs[tree]) for tree in trees}
    for tree in trees:
        label = f"{args.baseline} (baseline)" if args.baseline and tree == trees[0] else str(tree)
        print(f"  {label:40s} median {medians[tree]:6.1f} {unit}{(extra or {}).get(tree, '')}   runs: "
              + " ".join(f"{x:.1f}" for x in runs[tree]))
    first = medians[trees[0]]
    for tree in trees[1:]:
        change = (medians[tree] / first - 1) * 100
        print(f"  {tree}: {medians[tree] - first:+.1f} {unit} against the first ({change:+.1f} %)")
