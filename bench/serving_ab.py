"""Paced decisions' server CPU of two code trees, measured in interleaved slices (issue 19).

On this 2-core VM the same server's CPU per paced decision moves by 20-40 % between runs minutes
apart (bench/README.md), so two separate `serving.py` runs cannot show a change of 10 %. This
script starts one server per code tree (``python -m pulse serve`` with the tree as its working
directory, so it imports that tree's packages), warms both up, then sends the same paced load to
each in turn, ``--slices`` times, the order alternating; a drift of the machine lands on both.
It prints each tree's median CPU per decision, its slices, the median p99, and the difference.

    .venv/bin/python bench/serving_ab.py --baseline HEAD~2             # that commit against the working tree
    .venv/bin/python bench/serving_ab.py /tmp/a /tmp/b --workers 2     # two checked-out trees

``--baseline REV`` extracts ``git archive REV`` into a temporary folder. Redis is a private one
(or ``--redis-url``); Kafka at ``PULSE_KAFKA_BOOTSTRAP`` if it is up (impressions only queue if not:
start it with ``pulse up`` to include their delivery). One Go paced client (bench/pacedload).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.code_trees import add_tree_arguments, print_medians, trees_to_compare
from bench.serving import (
    _endpoints,
    cpu_seconds,
    go_paced_load,
    http_requests,
    redis_target,
    seed,
    server_process,
)
from config import Settings
from infra.local.process import free_port
from producers.topics import ensure_topics

USERS = 2000


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_tree_arguments(parser)
    parser.add_argument("--workers", type=int, default=1, help="Server workers (PULSE_SERVING_WORKERS)")
    parser.add_argument("--slices", type=int, default=8, help="Slices of paced load per tree")
    parser.add_argument("--requests", type=int, default=6000, help="Requests per slice")
    parser.add_argument("--rate", type=float, default=2000.0, help="Paced rate, requests per second")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--redis-url", default=None, help="Use this Redis (unique key prefix) instead of a private one")
    return parser


def main() -> None:
    parser = _parser()
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pulse-serving-ab-") as scratch_dir:
        scratch = Path(scratch_dir)
        trees = trees_to_compare(args, parser, scratch, holds="serving")
        prefix, topic = f"ab-{uuid.uuid4().hex[:8]}", f"events-ab-{uuid.uuid4().hex[:8]}"
        requests = http_requests("POST", ["/v1/decisions"] * 4096, _endpoints(USERS)[-1][3])
        load_before = os.getloadavg()[0]
        with redis_target(args.redis_url) as redis_url, contextlib.ExitStack() as servers:
            seed(redis_url, prefix, USERS, 200)
            with contextlib.suppress(Exception):  # impressions just queue if Kafka is not there
                ensure_topics(Settings().model_copy(update={"topic_events": topic}), [topic, f"{topic}-served"],
                              timeout_s=10)
            started = []
            for tree in trees:
                port = free_port()
                env = {**os.environ, "PULSE_REDIS_URL": redis_url, "PULSE_REDIS_PREFIX": prefix,
                       "PULSE_TOPIC_EVENTS": topic, "PULSE_TOPIC_SERVED": f"{topic}-served",
                       "PULSE_SERVING_PORT": str(port), "PULSE_SERVING_WORKERS": str(args.workers),
                       "PULSE_BANDIT_POLICY": "ts"}
                env.pop("PULSE_SERVING_API_KEYS", None)
                os.chdir(tree)  # the server imports the tree it starts in
                started.append((tree, port, servers.enter_context(server_process(env, port))))
            for _, port, _ in started:  # warm-up: arm tables read, connections open
                go_paced_load(port, requests, 4000, args.concurrency, args.rate, 10, scratch)
            cpu: dict[Path, list[float]] = {tree: [] for tree in trees}
            p99: dict[Path, list[float]] = {tree: [] for tree in trees}
            for n in range(args.slices):
                print(f"slice {n + 1}/{args.slices}", file=sys.stderr)
                for tree, port, proc in started if n % 2 == 0 else started[::-1]:
                    before = cpu_seconds(proc.pid)
                    _, latencies, errors, _ = go_paced_load(port, requests, args.requests, args.concurrency, args.rate,
                                                            args.requests / args.rate * 2 + 5, scratch)
                    after = cpu_seconds(proc.pid)
                    if errors or not latencies:
                        raise SystemExit(f"{tree}: {len(errors)} errors in a slice")
                    cpu[tree].append((after - before) / len(latencies) * 1e6)
                    latencies.sort()
                    p99[tree].append(latencies[int(len(latencies) * 0.99)] * 1e3)
    print(f"paced decisions @ {args.rate:,.0f} rps, {args.workers} worker(s), {args.slices} slices of "
          f"{args.requests:,} per tree in turns (load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after)")
    print_medians(args, trees, cpu, "us/decision (server CPU)",
                  {tree: f"   p99 median {statistics.median(p99[tree]):.2f} ms" for tree in trees})


if __name__ == "__main__":
    main()
