"""Benchmark of Pulse's PyFlink runtime settings: execution mode, parallelism, bundle size/time.

Prints figures; asserts nothing about speed. Two parts, each configuration in a fresh process
(its own JVM and MiniCluster):

* ``throughput`` — N synthetic events are produced once to a fresh topic (4 partitions); then the
  keyed decode+count job (bench/count_job.py) reads them with a *bounded* KafkaSource into a
  discarding sink. records/s = N / the job's net runtime (JobExecutionResult; includes task
  deployment and Python worker start, ~1-3 s) and N / wall time of ``execute()``.
* ``latency`` — an unbounded job (execute_async) in process mode with a given bundle size/time;
  a separate producer process sends events stamped with wall-clock ``event_time_ms`` at a fixed
  rate, the job writes ``user,count,event_time_ms`` to an output topic (at-least-once,
  linger.ms=0), a separate consumer process reports end-to-end latency percentiles.

    .venv/bin/python bench/flink_runtime.py throughput [--events 100000] [--parallelism 1 2]
    .venv/bin/python bench/flink_runtime.py latency [--rate 500] [--seconds 20]

Uses PULSE_KAFKA_BOOTSTRAP (default 127.0.0.1:9092, the broker `pulse up` starts).
Set FLINK_LOG_DIR to keep the gateway log out of the venv (default here: a temp dir).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

SCRIPT = str(Path(__file__).resolve())  # the child processes run this same file
sys.path.insert(0, str(Path(SCRIPT).parent.parent))  # run as a script from anywhere

BOOTSTRAP = os.environ.get("PULSE_KAFKA_BOOTSTRAP", "127.0.0.1:9092")


def _settings(topic: str) -> Any:
    from config import Settings

    return Settings(kafka_bootstrap=BOOTSTRAP, topic_events=topic)


def _jars() -> tuple[Any, ...]:
    """The Kafka connector (and the job's own jar), resolved where `pulse job run` finds them."""
    from config import Settings
    from infra.local.jars import ensure_jars

    return tuple(ensure_jars(Settings().home, "flink"))


def _create_topics(*names: str) -> None:
    from producers.topics import ensure_topics

    ensure_topics(_settings(names[0]), list(names))


def _produce(topic: str, n: int) -> None:
    from producers.producer import EventProducer
    from producers.sources import open_source

    with EventProducer(_settings(topic)) as producer:
        for _ in producer.send_all(open_source("synthetic", seed=1, limit=n)):
            pass
    assert producer.report.produced == n and producer.report.ok, producer.report


def _sub(*args: str, capture: bool = True) -> dict[str, Any]:
    env = {**os.environ, "FLINK_LOG_DIR": os.environ.get("FLINK_LOG_DIR", tempfile.mkdtemp(prefix="flink-log-"))}
    result = subprocess.run(
        [sys.executable, SCRIPT, *args],
        capture_output=capture,
        text=True,
        env=env,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    last = [line for line in result.stdout.splitlines() if line.startswith("{")][-1]
    return dict(json.loads(last))


# --- throughput -------------------------------------------------------------------------------


def run_throughput_once(topic: str, n: int, mode: str, parallelism: int, bundle_size: int, bundle_time_ms: int) -> None:
    """One bounded run of the count job into a discarding sink; prints a JSON line of figures."""
    from pyflink.datastream.connectors.base import Sink

    from bench import count_job
    from flink_jobs.runtime import RuntimeOptions, kafka_source, make_environment

    env = make_environment(RuntimeOptions(
        jars=_jars(),
        parallelism=parallelism,
        execution_mode=mode,  # type: ignore[arg-type]
        checkpoint_interval_ms=None,
        bundle_size=bundle_size,
        bundle_time_ms=bundle_time_ms,
        restart_attempts=0,
    ))
    source = kafka_source(BOOTSTRAP, topic, f"bench-{uuid.uuid4().hex[:8]}", bounded=True)
    count_job.build(env, source).sink_to(Sink("org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink"))
    started = time.perf_counter()
    result = env.execute(f"bench-{mode}-p{parallelism}")
    wall = time.perf_counter() - started
    net = result.get_net_runtime() / 1000
    print(
        json.dumps(
            {"mode": mode, "p": parallelism, "net_s": net, "wall_s": wall, "rps_net": n / net, "rps_wall": n / wall}
        )
    )


def throughput(args: argparse.Namespace) -> None:
    """Produce N events once, then time each mode / parallelism in a fresh process."""
    topic = f"bench-flink-{uuid.uuid4().hex[:8]}"
    _create_topics(topic)
    t0 = time.perf_counter()
    _produce(topic, args.events)
    print(f"produced {args.events} events to {topic} in {time.perf_counter() - t0:.1f}s")
    print(f"{'mode':8} {'worker':9} {'p':>2} {'run':>3} {'net s':>7} {'rec/s (net)':>12} {'rec/s (wall)':>12}  load1")
    for parallelism in args.parallelism:
        for mode in args.modes:
            for worker in ["loopback", "process"] if mode == "process" and args.separate_worker else ["loopback"]:
                for run in range(args.runs):
                    extra_env = {"_python_worker_execution_mode": "process"} if worker == "process" else {}
                    os.environ.update(extra_env)
                    try:
                        r = _sub(
                            "_throughput_once",
                            topic,
                            str(args.events),
                            mode,
                            str(parallelism),
                            str(args.bundle_size),
                            str(args.bundle_time_ms),
                        )
                    finally:
                        for key in extra_env:
                            os.environ.pop(key, None)
                    label = worker if mode == "process" else "embedded"
                    print(
                        f"{mode:8} {label:9} {parallelism:>2} {run + 1:>3} {r['net_s']:7.1f} "
                        f"{r['rps_net']:12,.0f} {r['rps_wall']:12,.0f}  {os.getloadavg()[0]:.1f}",
                        flush=True,
                    )


# --- latency ----------------------------------------------------------------------------------


def paced_producer(topic: str, rate: float, seconds: float) -> None:
    """Events stamped with the wall clock at send time, ``rate`` per second (separate process)."""
    import dataclasses

    from producers.producer import EventProducer
    from producers.sources import open_source

    n = int(rate * seconds)
    with EventProducer(_settings(topic), **{"linger.ms": 0}) as producer:
        started = time.monotonic()
        for i, event in enumerate(open_source("synthetic", seed=2, limit=n)):
            ahead = i / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
            producer.send(dataclasses.replace(event, event_time_ms=time.time_ns() // 1_000_000))
    print(json.dumps({"produced": producer.report.produced}))


def latency_consumer(topic: str, want: int, warmup: int, timeout_s: float) -> None:
    """Receive time - event time of each output row, skipping the first ``warmup`` rows."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": f"lat-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 5,
        }
    )
    consumer.subscribe([topic])
    lat: list[int] = []
    got = 0
    deadline = time.monotonic() + timeout_s
    while got < want and time.monotonic() < deadline:
        for m in consumer.consume(500, 0.1):
            if m.error():
                continue
            now = time.time_ns() // 1_000_000
            got += 1
            if got > warmup:
                lat.append(now - int(m.value().split(b",")[2]))
    consumer.close()
    lat.sort()

    def pct(p: float) -> int:
        return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else -1

    print(
        json.dumps(
            {
                "rows": got,
                "p50": pct(0.5),
                "p95": pct(0.95),
                "p99": pct(0.99),
                "max": lat[-1] if lat else -1,
                "mean": statistics.fmean(lat) if lat else -1,
            }
        )
    )


def latency_once(mode: str, bundle_size: int, bundle_time_ms: int, rate: float, seconds: float) -> None:
    """One unbounded job (execute_async) + paced producer + latency consumer; prints a JSON line."""
    from pyflink.common import Types

    from bench import count_job
    from flink_jobs.runtime import RuntimeOptions, kafka_sink, kafka_source, make_environment

    suffix = uuid.uuid4().hex[:8]
    topic_in, topic_out = f"lat-in-{suffix}", f"lat-out-{suffix}"
    _create_topics(topic_in, topic_out)
    env = make_environment(RuntimeOptions(
        jars=_jars(),
        parallelism=1,
        execution_mode=mode,  # type: ignore[arg-type]
        checkpoint_interval_ms=None,
        bundle_size=bundle_size,
        bundle_time_ms=bundle_time_ms,
        restart_attempts=0,
    ))
    counts = count_job.build(env, kafka_source(BOOTSTRAP, topic_in, f"lat-{suffix}", starting_offsets="earliest"))
    counts.map(lambda r: f"{r[0]},{r[1]},{r[2]}".encode(), output_type=Types.PRIMITIVE_ARRAY(Types.BYTE())).sink_to(
        kafka_sink(BOOTSTRAP, topic_out, exactly_once=False, properties={"linger.ms": "0"})
    )
    client = env.execute_async(f"latency-{mode}-{bundle_size}-{bundle_time_ms}")
    n = int(rate * seconds)
    consumer = subprocess.Popen(
        [
            sys.executable,
            SCRIPT,
            "_consume",
            topic_out,
            str(n),
            str(int(rate * 3)),
            str(seconds + 60),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)  # let the job's tasks start before events flow
    producer = subprocess.run(
        [sys.executable, SCRIPT, "_produce_paced", topic_in, str(rate), str(seconds)],
        capture_output=True,
        text=True,
        check=True,
    )
    out, _ = consumer.communicate(timeout=seconds + 90)
    client.cancel().result()
    stats = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    stats.update(json.loads(producer.stdout.strip().splitlines()[-1]))
    stats.update({"mode": mode, "bundle_size": bundle_size, "bundle_time_ms": bundle_time_ms, "rate": rate})
    print(json.dumps(stats))


def latency(args: argparse.Namespace) -> None:
    """End-to-end latency per mode and bundle setting."""
    configs = [("process", 1000, 1000), ("process", 100, 10), ("process", 1000, 100), ("thread", 1000, 1000)]
    print(
        f"{'mode':8} {'bundle':>6} {'ms':>5} {'rows':>6} {'p50':>6} {'p95':>6} {'p99':>6} {'max':>6}"
        f"  (ms, at {args.rate}/s)"
    )
    for mode, size, ms in configs:
        r = _sub("_latency_once", mode, str(size), str(ms), str(args.rate), str(args.seconds))
        print(
            f"{mode:8} {size:>6} {ms:>5} {r['rows']:>6} {r['p50']:>6} {r['p95']:>6} {r['p99']:>6} {r['max']:>6}",
            flush=True,
        )


def main() -> None:
    """Command line (see the module docstring); ``_``-prefixed commands are the child processes."""
    argv = sys.argv[1:]
    if argv and argv[0] == "_throughput_once":
        topic, n, mode, p, size, ms = argv[1:7]
        run_throughput_once(topic, int(n), mode, int(p), int(size), int(ms))
        return
    if argv and argv[0] == "_latency_once":
        mode, size, ms, rate, seconds = argv[1:6]
        latency_once(mode, int(size), int(ms), float(rate), float(seconds))
        return
    if argv and argv[0] == "_produce_paced":
        paced_producer(argv[1], float(argv[2]), float(argv[3]))
        return
    if argv and argv[0] == "_consume":
        latency_consumer(argv[1], int(argv[2]), int(argv[3]), float(argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--events", type=int, default=100_000)
    t.add_argument("--parallelism", type=int, nargs="+", default=[1])
    t.add_argument("--modes", nargs="+", default=["thread", "process"])
    t.add_argument("--runs", type=int, default=1)
    t.add_argument("--bundle-size", type=int, default=1000)
    t.add_argument("--bundle-time-ms", type=int, default=1000)
    t.add_argument(
        "--separate-worker",
        action="store_true",
        help="process mode also with _python_worker_execution_mode=process (worker in its own process)",
    )
    lat = sub.add_parser("latency")
    lat.add_argument("--rate", type=float, default=500)
    lat.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args(argv)
    {"throughput": throughput, "latency": latency}[args.command](args)


if __name__ == "__main__":
    main()
