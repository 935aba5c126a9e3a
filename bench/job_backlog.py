"""The job over a backlog: events/s while it drains N events, and where its Python time goes.

    .venv/bin/python bench/job_backlog.py                     # 30,000 events, MiniCluster (`pulse job run --bounded`)
    .venv/bin/python bench/job_backlog.py --profile           # + py-spy profile of the job's embedded Python
    .venv/bin/python bench/job_backlog.py --threads           # + per JVM thread: on a core / waiting for one / asleep
    .venv/bin/python bench/job_backlog.py --cluster 2         # local standalone cluster: 2 TaskManagers, parallelism 2
    .venv/bin/python bench/job_backlog.py --cluster 1 --busy --profile --gil   # which task waits, and on what

N synthetic events are produced into fresh topics first; then the job starts and drains them.
Throughput = N / (last - first write time over the users' ``counts`` keys), so JVM start-up is
left out; every user's count is checked against the input (a wrong count fails the run). The
baseline printed beside it is the same backlog through ``bench/loop_baseline.py`` (the
hand-written loop of ``bench/pipeline.py``), measured the same way in the same run.

``--profile`` samples the job's JVM with py-spy (``--nonblocking``: it does not pause the job)
and sorts the innermost Python frame of each sample into PyFlink's state calls, PyFlink's
plumbing, Pulse's operators, the learners and the Redis client (the table in bench/README.md);
with ``--gil`` only the samples of the thread holding the interpreter lock count, so the share
of samples kept is how busy the lock is. ``--busy`` prints Flink's busy / back-pressured / idle
time per task: the bottleneck task is the one near 1000 ms/s busy.
Uses PULSE_KAFKA_BOOTSTRAP / PULSE_REDIS_URL when set, else ``pulse up``'s local services.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import redis
from confluent_kafka.admin import AdminClient

from config import REPO_ROOT, Settings
from infra.local.flink import ClusterShape, FlinkCluster
from infra.local.process import free_port
from producers.producer import EventProducer
from producers.sources import open_source
from producers.topics import ensure_topics, pulse_topics
from schemas.redis_keys import RedisKeys
from serving.sync_reads import user_part

#: Innermost-frame categories of a py-spy sample, first match wins.
CATEGORIES = (
    ("PyFlink keyed state (JNI + pickle)", ("state_impl.py",)),
    ("PyFlink plumbing (conversion, timers, metrics, context)", ("pyflink/",)),
    ("Redis client", ("redis/", "hiredis", "tenacity/")),
    ("learners (online_models/, numpy)", ("online_models/", "numpy/")),
    ("Pulse operators (flink_jobs/, schemas/)", ("flink_jobs/", "schemas/")),
)


def fresh_settings(base: Settings, tag: str, parallelism: int) -> Settings:
    topics = {f: f"backlog-{tag}-{f.removeprefix('topic_')}" for f, info in Settings.model_fields.items()
              if f.startswith("topic_") and info.annotation is str}  # names, not retention settings
    return base.model_copy(update={
        **topics, "redis_prefix": f"backlog-{tag}", "job_group_id": f"backlog-{tag}", "job_name": f"backlog-{tag}",
        "checkpoint_dir": Path(tempfile.gettempdir()) / f"backlog-{tag}", "restart_attempts": 0,
        "job_parallelism": parallelism,
    })


def drained(settings: Settings, want: Counter[str], timeout_s: float) -> tuple[float, int]:
    """Wait until every user's count is in Redis; (write-time span in s, users with a wrong count)."""
    client, keys = redis.Redis.from_url(settings.redis_url, **settings.redis_client_kwargs()), RedisKeys(
        settings.redis_prefix)
    users = list(want)
    deadline = time.monotonic() + timeout_s
    while True:
        envelopes = [user_part(client, keys, u, "counts") for u in users]
        wrong = sum(1 for u, e in zip(users, envelopes, strict=True) if e is None or e.payload["events"] != want[u])
        if wrong == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    times = sorted(e.write_time_ms for e in envelopes if e is not None)
    return (times[-1] - times[0]) / 1000 if len(times) > 1 else float("nan"), wrong


def forget(settings: Settings) -> None:
    """Remove a run's Redis keys (its prefix) and its topics."""
    client = redis.Redis.from_url(settings.redis_url, **settings.redis_client_kwargs())
    for key in client.scan_iter(f"{settings.redis_prefix}:*", count=5000):
        client.unlink(key)
    AdminClient(settings.kafka_config()).delete_topics(list(pulse_topics(settings)))


def java_pid(pgids: list[int]) -> int:
    """The first JVM among the process groups that runs the job's Python (a JobManager does not)."""
    for pgid in pgids:
        for pid in subprocess.run(["pgrep", "-g", str(pgid), "java"], capture_output=True, text=True).stdout.split():
            if "libpython" in Path(f"/proc/{pid}/maps").read_text():
                return int(pid)
    raise RuntimeError("no JVM running the job's Python found")


@dataclass(frozen=True)
class ThreadTimes:
    """Cumulative scheduler figures of one thread (``/proc/PID/task/TID/{schedstat,status}``)."""

    name: str
    on_cpu_s: float
    runqueue_s: float  # runnable, waiting for a core
    voluntary_switches: int  # went to sleep: blocked on a lock, a condition or I/O


def thread_times(pid: int) -> dict[str, ThreadTimes]:
    out: dict[str, ThreadTimes] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        task = Path(f"/proc/{pid}/task/{tid}")
        try:
            on_cpu_ns, runqueue_ns, _ = (int(x) for x in (task / "schedstat").read_text().split())
            status = (task / "status").read_text()
            name = (task / "comm").read_text().strip()
        except (FileNotFoundError, ProcessLookupError):
            continue
        switches = int(status.split("voluntary_ctxt_switches:")[1].split()[0])
        out[tid] = ThreadTimes(name, on_cpu_ns / 1e9, runqueue_ns / 1e9, switches)
    return out


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def print_threads(before: dict[str, ThreadTimes], after: dict[str, ThreadTimes],
                  machine: tuple[float, float], seconds: float) -> None:
    """Per busiest JVM thread: share of wall time on a core, waiting for a core, and sleeps per second.

    A thread that is neither on a core nor waiting for one is asleep; for a Python task thread
    that is mostly waiting for the interpreter lock (many voluntary switches per second).
    """
    rows = sorted(((a.on_cpu_s - before[t].on_cpu_s, a.runqueue_s - before[t].runqueue_s,
                    a.voluntary_switches - before[t].voluntary_switches, a.name)
                   for t, a in after.items() if t in before), reverse=True)
    busy, total = machine_busy()
    print(f"machine: {100 * (busy - machine[0]) / (total - machine[1]):.0f} % of all cores busy")
    print(f"{'JVM thread':<28} {'on cpu':>7} {'runq':>6} {'asleep':>7} {'sleeps/s':>9}")
    for on_cpu, runqueue, switches, name in rows[:8]:
        asleep = max(0.0, seconds - on_cpu - runqueue)
        print(f"{name:<28} {100 * on_cpu / seconds:>6.0f}% {100 * runqueue / seconds:>5.0f}% "
              f"{100 * asleep / seconds:>6.0f}% {switches / seconds:>9,.0f}")


def observe(pid: int, args: argparse.Namespace, out_dir: Path) -> None:
    """Profile and/or thread CPU of the running job for ``--sample-s`` seconds."""
    before = thread_times(pid) if args.threads else {}
    machine, started = machine_busy(), time.monotonic()
    if args.profile:
        raw = out_dir / "job.pyspy"
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
        subprocess.run([spy, "record", "--pid", str(pid), "--nonblocking", "--rate", "50", "--duration",
                        str(int(args.sample_s)), "--format", "raw", "-o", str(raw), *(["--gil"] if args.gil else [])],
                       capture_output=True, check=True)
        print_profile(raw)
    else:
        time.sleep(args.sample_s)
    if args.threads:
        print_threads(before, thread_times(pid), machine, time.monotonic() - started)


def print_busy(rest_address: str) -> None:
    """Per task: ms/s busy, back-pressured and idle, from the JobManager's REST API.

    A task near 1000 ms/s busy is the bottleneck; in thread mode "busy" includes the time its
    thread waits for the interpreter lock, which the thread's CPU (``--threads``) does not.
    """

    def get(path: str) -> Any:
        with urllib.request.urlopen(f"http://{rest_address}{path}", timeout=10) as response:
            return json.load(response)

    running = [job["id"] for job in get("/jobs")["jobs"] if job["status"] == "RUNNING"]
    if not running:
        print("busy: no running job")
        return
    names = ("busyTimeMsPerSecond", "backPressuredTimeMsPerSecond", "idleTimeMsPerSecond")
    vertices = get(f"/jobs/{running[0]}")["vertices"]

    def metrics(vertex: dict[str, Any]) -> dict[str, float]:
        wanted = ",".join(f"{i}.{name}" for i in range(vertex["parallelism"]) for name in names)
        found = get(f"/jobs/{running[0]}/vertices/{vertex['id']}/metrics?get={wanted}")
        return {m["id"]: float(m["value"]) for m in found if m.get("value") not in (None, "NaN")}

    # The JobManager fetches task metrics when asked and answers from its cache: ask once, then read.
    for vertex in vertices:
        metrics(vertex)
    time.sleep(3)
    print(f"{'task':<44} {'busy':>6} {'backpr':>6} {'idle':>6}   (ms/s, mean over subtasks)")
    for vertex in vertices:
        values = metrics(vertex)
        means = [sum(v for k, v in values.items() if k.endswith("." + name)) / vertex["parallelism"] for name in names]
        print(f"{vertex['name'][:44]:<44} {means[0]:>6,.0f} {means[1]:>6,.0f} {means[2]:>6,.0f}")


def print_profile(raw: Path) -> None:
    by_category: Counter[str] = Counter()
    by_frame: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = [f for f in stack.split(";") if "(" in f]
        if not frames:
            continue
        inner = frames[-1]
        where = next((name for name, marks in CATEGORIES if any(m in inner for m in marks)), "other")
        by_category[where] += int(n)
        by_frame[inner.split(" (")[0]] += int(n)
    total = sum(by_category.values())
    print(f"py-spy: {total:,} samples with Python frames, by innermost frame")
    for name, n in by_category.most_common():
        print(f"  {100 * n / total:5.1f} %  {name}")
    print("  top frames: " + ", ".join(f"{f} {100 * n / total:.1f}%" for f, n in by_frame.most_common(8)))


def run_job(settings: Settings, args: argparse.Namespace, out_dir: Path) -> subprocess.Popen[bytes] | None:
    """Start the job; returns the `pulse job run --bounded` process (None on a cluster: the job runs there)."""
    env = {**os.environ, **settings.to_env()}
    log = (out_dir / "job.log").open("ab")
    if not args.cluster:
        return subprocess.Popen([sys.executable, "-m", "pulse", "job", "run", "--bounded", "--restore", "none"],
                                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    subprocess.run([sys.executable, "-m", "pulse", "job", "submit", "--restore", "none", "--jobmanager",
                    args.cluster_address, "--parallelism", str(args.cluster)],
                   cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    return None


def measure(mode: str, base: Settings, args: argparse.Namespace, cluster: FlinkCluster | None) -> float:
    tag = uuid.uuid4().hex[:6]
    settings = fresh_settings(base, tag, args.cluster or 1)
    ensure_topics(settings)
    events = list(open_source("synthetic", seed=args.seed, limit=args.events))
    want = Counter(e.user_id for e in events)
    out_dir = Path(tempfile.mkdtemp(prefix=f"backlog-{mode}-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        with EventProducer(settings) as producer:
            for _ in producer.send_all(iter(events)):
                pass
        if mode == "loop":
            proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "bench" / "loop_baseline.py")], cwd=REPO_ROOT,
                                    env={**os.environ, **settings.to_env()}, stdout=(out_dir / "loop.log").open("ab"),
                                    stderr=subprocess.STDOUT, start_new_session=True)
        else:
            proc = run_job(settings, args, out_dir)
            if args.profile or args.threads or args.busy:
                time.sleep(args.observe_after_s)
            if args.profile or args.threads:
                pgids = [p.pid() or 0 for p in cluster.processes()] if cluster else [proc.pid] if proc else []
                observe(java_pid(pgids), args, out_dir)
            if args.busy and cluster:
                print_busy(cluster.address)
        span, wrong = drained(settings, want, args.timeout_s)
        rate = args.events / span
        print(f"{mode:<5} {args.events:,} events, {len(want):,} users: {rate:>7,.0f} ev/s "
              f"(write span {span:.1f} s){'' if wrong == 0 else f'  WRONG COUNTS for {wrong} users'}", flush=True)
        if wrong:
            raise SystemExit(f"{wrong} users have wrong counts; logs in {out_dir}")
        return rate
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, 15)
            proc.wait(30)
        forget(settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="py-spy profile of the job's Python")
    parser.add_argument("--gil", action="store_true",
                        help="with --profile: only samples of the thread holding the interpreter lock "
                             "(the serial Python work; leaves out threads blocked in socket reads)")
    parser.add_argument("--threads", action="store_true",
                        help="per JVM thread: time on a core, waiting for a core, asleep; machine CPU")
    parser.add_argument("--busy", action="store_true",
                        help="with --cluster: busy / back-pressured / idle ms/s per task (Flink REST metrics)")
    parser.add_argument("--sample-s", type=float, default=15, help="length of the profile / thread sample")
    parser.add_argument("--observe-after-s", type=float, default=15, help="JVM start-up to skip before sampling")
    parser.add_argument("--cluster", type=int, default=0, metavar="N",
                        help="run on a local standalone cluster of N TaskManagers x 1 slot at parallelism N")
    parser.add_argument("--no-baseline", action="store_true", help="skip the loop baseline")
    parser.add_argument("--timeout-s", type=float, default=600)
    args = parser.parse_args()
    if args.busy and not args.cluster:
        parser.error("--busy reads the JobManager's REST API: use it with --cluster N")

    base = Settings()
    if base.kafka_bootstrap == Settings.model_fields["kafka_bootstrap"].default:
        from infra.local.services import LocalServices

        LocalServices(base).up()
    cluster = None
    if args.cluster:
        home = Path(tempfile.mkdtemp(prefix="backlog-cluster-"))
        cluster = FlinkCluster(home, ClusterShape(rest_port=free_port(), rpc_port=free_port(), metrics_port=free_port(),
                                                  taskmanagers=args.cluster, slots_per_taskmanager=1))
        cluster.start(timeout_s=180)
        args.cluster_address = cluster.address
    try:
        job = measure("cluster" if cluster else "job", base, args, cluster)
        if not args.no_baseline:
            loop = measure("loop", base, args, None)
            print(f"job/loop: {job / loop:.2f}x")
    finally:
        if cluster:
            cluster.stop()


if __name__ == "__main__":
    main()
