"""Pipeline benchmark: sustained events/s and produce->Redis latency of the Flink job vs a plain loop.

    .venv/bin/python bench/pipeline.py                      # 1000, 2500, 5000 ev/s + max rate, ~4-5 min
    .venv/bin/python bench/pipeline.py --quick              # ~2 min smoke
    .venv/bin/python bench/pipeline.py --repeats 3          # medians of 3 (all runs printed)
    .venv/bin/python bench/pipeline.py --only job --job-env PULSE_PYTHON_EXECUTION_MODE=thread

Two systems under test, each started as a black-box subprocess (own process group) with the
same ``PULSE_*`` environment (fresh topics, Redis prefix, consumer group, job name and a tmp
checkpoint dir per phase, uuid-named; restart attempts 0 so a failure ends the phase):

* ``job``  -- ``python -m pulse job run --restore none`` (whatever execution mode / bundle /
  refresh / flush the settings say; ``--job-env K=V`` overrides them);
* ``cluster`` -- the same job on a local standalone cluster (``infra/local/flink.py``, what
  ``pulse up --flink`` starts) of ``--cluster-taskmanagers`` TaskManagers (default 2), submitted
  with ``pulse job submit --parallelism`` ``--cluster-parallelism`` (default 2). In thread mode
  every Python operator of a JVM shares that JVM's one Python interpreter lock, so one JVM
  (``job``) uses about one core for Python; two TaskManagers are two JVMs and can use both;
* ``loop`` -- ``bench/loop_baseline.py``: one confluent-kafka consumer + the same learners and
  the same per-user Redis value (format 2) through ``RedisWriter.write_batch``, one batch per poll.

Design -- one long-running process per phase, rate points produced one after another into its
one topic, each point with its own users: every user id of a point is prefixed with the point's
tag (``r1000-u42``), so a point's Redis keys are its own and "done" is well defined per point.
Starting one job per point would cost ~20-40 s of JVM/MiniCluster start-up per point and
measure a cold job; instead start-up is measured once per phase (launch -> the Redis value of one
probe event is in Redis), then a short unreported warm-up point runs at the lowest rate, then
the points run in order (the model and item table carry over, for both systems alike). The
phases run one after the other (job, cluster, then loop, per repeat), never at the same time: they
would share the same 2 cores.

Per point: N synthetic events are generated up front, then sent with ``EventProducer.send``
(framed Avro, the producer's own config: idempotent, linger.ms 20) with ``event_time_ms``
rewritten to the wall clock just before each send, paced in steps of 5 ms (``send_all``'s pacer
works in steps of 1,000 events, i.e. one 1,000-event burst per second at 1,000 ev/s, which is
not a steady rate). The max-rate point sends as fast as the producer can (tens of thousands/s).
When the producer has flushed, Redis is polled until every user's counts (in its Redis value) show
that user's event count. Then, from the final envelopes:

* latency of a user = ``wt - et`` of its Redis value = write time of the snapshot holding the
  user's latest event minus that event's produce time (same host clock). One sample per user
  (~1-2k users per point), so p50/p99 are over users' *latest* events: the freshness of what
  Redis shows when a user's stream stops -- it includes producer linger, Kafka, the system's
  batching/coalescing (job: score_refresh_ms timer + redis_flush_ms; loop: its poll) and the
  Redis round trip;
* sustained events/s = N / (max ``wt`` over the point's users - first send), i.e. until the
  last event is visible in Redis (no poll granularity). At a paced rate it is ~the rate when the
  system keeps up and less when it falls behind; at max rate it is the throughput.

CPU: utime+stime of the subprocess's whole process group over each point (ms per 1,000 events
and % of one core), the busiest threads over the max-rate point (Linux thread names, i.e. the
Flink task names, truncated to 15 characters), and the peak RSS (sum of VmHWM over the group).
Uses ``PULSE_KAFKA_BOOTSTRAP`` / ``PULSE_REDIS_URL`` when set, else ``pulse up``'s local services.
Topics and Redis keys it created are deleted at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import orjson
import redis
from confluent_kafka.admin import AdminClient

from config import REPO_ROOT, Settings
from infra.local.flink import ClusterShape, FlinkCluster
from infra.local.process import free_port
from producers.producer import EventProducer
from producers.sources import open_source
from producers.topics import ensure_topics, pulse_topics
from schemas import Event, EventType
from schemas.redis_keys import RedisKeys
from schemas.redis_values import decode_user_value

TICK = os.sysconf("SC_CLK_TCK")


def batched(items, n):  # itertools.batched is 3.12+
    it = iter(items)
    while chunk := list(itertools.islice(it, n)):
        yield chunk
MODES = ("job", "cluster", "loop")


@dataclass
class System:
    """A system under test: the process groups it runs in (CPU, RSS) and whether it still runs."""

    groups: Callable[[], list[int]]
    exit_code: Callable[[], int | None]  # None while it runs
    stop: Callable[[], None]
    rest: str | None = None  # host:port of Flink's REST API (checkpoint statistics); None for the loop


def popen_system(proc: subprocess.Popen[bytes], rest: str | None = None) -> System:
    """One subprocess in its own process group."""
    return System(lambda: [proc.pid], proc.poll, lambda: stop_group(proc), rest)


def cluster_system(cluster: FlinkCluster) -> System:
    """The local standalone cluster: JobManager and TaskManagers, each in a process group of its own."""
    def exit_code() -> int | None:
        return None if all(p.pid() for p in cluster.processes()) else 1

    return System(lambda: [pid for p in cluster.processes() if (pid := p.pid())], exit_code, lambda: cluster.stop(),
                  cluster.address)


def checkpoint_durations_ms(rest: str, since_ms: int) -> list[float]:
    """End-to-end durations of the running job's completed checkpoints triggered at or after ``since_ms``.

    Flink keeps the last 10 in its history (``web.checkpoints.history``): enough for one point.
    """
    return [float(c["end_to_end_duration"]) for c in completed_checkpoints(rest, since_ms)]


def completed_checkpoints(rest: str, since_ms: int) -> list[dict[str, Any]]:
    """The running job's completed checkpoints triggered at or after ``since_ms`` (Flink's REST history)."""
    def get(path: str) -> Any:
        with urllib.request.urlopen(f"http://{rest}{path}", timeout=10) as response:
            return json.load(response)

    try:
        running = [j["id"] for j in get("/jobs")["jobs"] if j["status"] == "RUNNING"]
        history = get(f"/jobs/{running[0]}/checkpoints")["history"] if running else []
    except OSError:
        return []
    return [c for c in history if c.get("status") == "COMPLETED" and c.get("trigger_timestamp", 0) >= since_ms]


def checkpoint_breakdown(rest: str, since_ms: int) -> list[str]:
    """Where the slowest completed checkpoint since ``since_ms`` spent its time, per task (max over subtasks).

    ``delay``: the barrier's way to the task (queued batches ahead of it); ``align``: waiting for the
    barrier on every input; ``sync``: the snapshot before the barrier goes on (with a Python stage,
    its pre-barrier batch); ``async``: writing the state; ``e2e``: trigger to the task's last ack.
    """
    def get(path: str) -> Any:
        with urllib.request.urlopen(f"http://{rest}{path}", timeout=10) as response:
            return json.load(response)

    try:
        job = next(j["id"] for j in get("/jobs")["jobs"] if j["status"] == "RUNNING")
        done = [c for c in get(f"/jobs/{job}/checkpoints")["history"]
                if c.get("status") == "COMPLETED" and c.get("trigger_timestamp", 0) >= since_ms]
        if not done:
            return []
        slowest = max(done, key=lambda c: c["end_to_end_duration"])
        names = {v["id"]: v["name"] for v in get(f"/jobs/{job}")["vertices"]}
        lines = [f"slowest checkpoint {slowest['id']}: {slowest['end_to_end_duration']:,} ms"]
        for vertex in get(f"/jobs/{job}/checkpoints/details/{slowest['id']}")["tasks"]:
            summary = get(f"/jobs/{job}/checkpoints/details/{slowest['id']}/subtasks/{vertex}")["summary"]
            figure = {"delay": summary["start_delay"]["max"], "align": summary["alignment"]["duration"]["max"],
                      "sync": summary["checkpoint_duration"]["sync"]["max"],
                      "async": summary["checkpoint_duration"]["async"]["max"],
                      "e2e": summary["end_to_end_duration"]["max"]}
            lines.append(f"  {names.get(vertex, vertex)[:60]:<60} "
                         + "  ".join(f"{k} {v:>6,} ms" for k, v in figure.items()))
        return lines
    except (OSError, KeyError, StopIteration) as error:
        return [f"checkpoint breakdown unavailable: {error!r}"]


def systems_cpu_s(system: System) -> float:
    return sum(group_cpu_s(g) for g in system.groups())


def systems_thread_cpu(system: System) -> dict[tuple[int, int], tuple[str, str, float]]:
    return {k: v for g in system.groups() for k, v in thread_cpu(g).items()}


# -- processes: start, stop, CPU, RSS -------------------------------------------------------------


def group_pids(pgid: int) -> list[int]:
    """Live processes of one process group (the subprocess was started in its own session)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    pids.append(int(entry))
            except (ProcessLookupError, PermissionError):
                continue
    return pids


def _stat_cpu(path: str) -> tuple[str, float]:
    with open(path) as f:
        text = f.read()
    name = text[text.index("(") + 1: text.rindex(")")]
    fields = text[text.rindex(")") + 2:].split()
    return name, (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def group_cpu_s(pgid: int) -> float:
    total = 0.0
    for pid in group_pids(pgid):
        try:
            total += _stat_cpu(f"/proc/{pid}/stat")[1]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def thread_cpu(pgid: int) -> dict[tuple[int, int], tuple[str, str, float]]:
    """(pid, tid) -> (process name, thread name, cpu s) for every thread of the group."""
    out = {}
    for pid in group_pids(pgid):
        try:
            proc_name = _stat_cpu(f"/proc/{pid}/stat")[0]
            for tid in os.listdir(f"/proc/{pid}/task"):
                name, cpu = _stat_cpu(f"/proc/{pid}/task/{tid}/stat")
                out[(pid, int(tid))] = (proc_name, name, cpu)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def group_peak_rss_mb(pgid: int) -> float:
    total_kb = 0
    for pid in group_pids(pgid):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total_kb += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total_kb / 1024


def stop_group(proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """TERM the subprocess's own process group (by its id), then KILL it if it lingers."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout_s)
        except ProcessLookupError:
            pass
    for _ in range(50):  # children (the JVM) may outlive the leader briefly
        if not group_pids(proc.pid):
            break
        time.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# -- measurement --------------------------------------------------------------------------------


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Point:
    mode: str
    label: str  # "1000", "2500", "max", "warmup"
    rate: float | None
    events: int
    users: int = 0
    sustained: float = 0.0
    p50: float = float("nan")
    p99: float = float("nan")
    send_rate: float = 0.0
    cpu_ms_per_1k: float = 0.0
    cpu_pct: float = 0.0
    complete: bool = True
    repeat: int = 0
    checkpoint_p99_ms: float = float("nan")  # checkpoints triggered during the point (Flink REST API)
    checkpoints: int = 0


@dataclass
class Phase:
    mode: str
    repeat: int
    startup_s: float = float("nan")
    peak_rss_mb: float = float("nan")
    points: list[Point] = field(default_factory=list)
    top_threads: list[str] = field(default_factory=list)
    failed: str | None = None


def make_events(tag: str, n: int, seed: int) -> list[Event]:
    """``n`` synthetic events whose user ids carry ``tag`` (the point's own users)."""
    return [dataclasses.replace(e, user_id=f"{tag}-{e.user_id}")
            for e in itertools.islice(open_source("synthetic", seed=seed), n)
            if e.type is not EventType.ERASE]


def send_paced(producer: EventProducer, events: list[Event], rate: float | None) -> float:
    """Send with wall-clock event times, ``rate`` per second in 5 ms steps (None: flat out); returns ev/s."""
    step = max(1, int(rate / 200)) if rate else 1_000_000
    started = time.monotonic()
    for i, event in enumerate(events):
        if rate and i % step == 0:
            ahead = i / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        producer.send(dataclasses.replace(event, event_time_ms=now_ms()))
    producer.flush(120)
    return len(events) / (time.monotonic() - started)


def read_counts(r: redis.Redis, keys: RedisKeys, users: list[str]) -> list[tuple[int, int, int] | None]:
    """(events, et, wt) of each user's counts (format 2, or format 1 for an older ``--job-repo``), None when missing."""
    out: list[tuple[int, int, int] | None] = []
    for chunk in batched(users, 2000):
        pipe = r.pipeline(transaction=False)
        for user in chunk:
            pipe.get(keys.user_record(user))
            pipe.hmget(keys.counts(user), "v", "et", "wt")
        replies = pipe.execute()
        for compact, (v, et, wt) in zip(replies[::2], replies[1::2], strict=True):
            if compact is not None:
                value = decode_user_value(compact)
                out.append((value.payload("counts")["events"], value.event_time_ms, value.write_time_ms))
            else:
                out.append(None if v is None else (orjson.loads(v)["events"], int(et), int(wt)))
    return out


def visible_events(ctx: Runner) -> int:
    """Events of this phase (every point so far) that Redis shows in users' values."""
    users = list(ctx.expected)
    return sum(min(g[0], ctx.expected[u]) for u, g in zip(users, read_counts(ctx.redis, ctx.keys, users), strict=True)
               if g is not None)


def measure_point(
    ctx: Runner, system: System, producer: EventProducer, label: str, rate: float | None, n: int,
) -> Point:
    """Send one point, wait until Redis shows all of it (or the drain window closes), read the envelopes.

    Paced points wait up to ``--drain-timeout-s`` after the last send; the max-rate point stops
    measuring ``--max-window-s`` after its first send. A point that did not complete in time reports
    throughput as the growth of *all* of the phase's visible events over the point (a backlog of an
    earlier point counts as work done) and no latency (it would only say how long we waited).
    """
    tag = f"{label}{ctx.repeat}"
    events = make_events(tag, n, seed=zlib.crc32(tag.encode()) & 0xFFFF)
    expected = Counter(e.user_id for e in events)
    users = list(expected)
    point = Point(ctx.mode, label, rate, len(events), len(users), repeat=ctx.repeat)
    visible0 = visible_events(ctx)
    ctx.expected.update(expected)
    cpu0 = systems_cpu_s(system)
    threads0 = systems_thread_cpu(system) if label == "max" else {}
    first_send = now_ms()
    t0 = time.monotonic()
    point.send_rate = send_paced(producer, events, rate)
    deadline = t0 + ctx.args.max_window_s if rate is None else time.monotonic() + ctx.args.drain_timeout_s
    pending = users
    while pending:
        if (code := system.exit_code()) is not None:
            raise RuntimeError(f"{ctx.mode} exited with {code}")
        got = read_counts(ctx.redis, ctx.keys, pending)
        pending = [u for u, g in zip(pending, got, strict=True) if g is None or g[0] < expected[u]]
        if not pending:
            break
        if time.monotonic() > deadline:
            point.complete = False
            break
        time.sleep(0.2)
    wall = time.monotonic() - t0
    cpu = systems_cpu_s(system) - cpu0
    if threads0:
        threads1 = systems_thread_cpu(system)
        busy = sorted(((c - threads0.get(k, (0, 0, 0.0))[2], p, t) for k, (p, t, c) in threads1.items()),
                      reverse=True)[:8]
        ctx.phase.top_threads = [f"{p}/{t}: {100 * c / wall:.0f}%" for c, p, t in busy if c > 0.01 * wall]
    point.cpu_ms_per_1k = 1e6 * cpu / max(1, len(events))
    point.cpu_pct = 100 * cpu / wall
    if system.rest is not None:
        durations = sorted(checkpoint_durations_ms(system.rest, first_send))
        point.checkpoints = len(durations)
        if durations:
            point.checkpoint_p99_ms = durations[min(len(durations) - 1, int(0.99 * len(durations)))]
        if ctx.args.checkpoint_breakdown:
            for line in checkpoint_breakdown(system.rest, first_send):
                print(f"   {ctx.mode} {label}: {line}", flush=True)
    if not point.complete:
        point.sustained = (visible_events(ctx) - visible0) / wall
        point.cpu_ms_per_1k = 1e6 * cpu / max(1, visible_events(ctx) - visible0)
        return point
    final = [g for g in read_counts(ctx.redis, ctx.keys, users) if g is not None]
    if ctx.args.latency_dump:
        print(f"   {ctx.mode} {label}: " + dump_latencies(
            ctx.args.latency_dump / f"{ctx.mode}-{ctx.repeat}-{label}", final,
            completed_checkpoints(system.rest, first_send) if system.rest else []), flush=True)
    lat = sorted(wt - et for _, et, wt in final)
    point.p50 = statistics.median(lat)
    point.p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    point.sustained = len(events) / max(1e-3, (max(wt for _, _, wt in final) - first_send) / 1000)
    return point


def dump_latencies(stem: Path, final: list[tuple[int, int, int]], checkpoints: list[dict[str, Any]]) -> str:
    """``--latency-dump``: each user's latest event (``et``, ``wt``, ms) and the point's checkpoints, as CSV.

    Returns a line saying how many of the slowest 1 % of users were waiting (between ``et`` and ``wt``)
    while a checkpoint ran (trigger to last acknowledgement), against how many of all users were.
    """
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".users.csv").write_text("et,wt\n" + "".join(f"{et},{wt}\n" for _, et, wt in final))
    windows = [(int(c["trigger_timestamp"]), int(c["latest_ack_timestamp"])) for c in checkpoints]
    stem.with_suffix(".checkpoints.csv").write_text("trigger,ack\n" + "".join(f"{t},{a}\n" for t, a in windows))
    waiting = [(wt - et, any(et < ack and wt > trigger for trigger, ack in windows)) for _, et, wt in final]
    if not waiting:
        return f"no user's value read (files {stem}.*.csv)"
    slowest = sorted(waiting, reverse=True)[: max(1, len(waiting) // 100)]
    return (f"slowest 1 % of users ({len(slowest)}, latency >= {slowest[-1][0]:,} ms): "
            f"{sum(hit for _, hit in slowest)} waited through a checkpoint; of all {len(waiting)}: "
            f"{sum(hit for _, hit in waiting)} ({len(windows)} checkpoints, files {stem}.*.csv)")


# -- phases -------------------------------------------------------------------------------------


@dataclass
class Runner:
    args: argparse.Namespace
    base: Settings
    run_id: str
    mode: str = ""
    repeat: int = 0
    phase: Phase = field(default_factory=lambda: Phase("", 0))
    redis: redis.Redis = field(init=False)
    keys: RedisKeys = field(init=False)
    expected: Counter[str] = field(default_factory=Counter)  # user -> events sent, this phase

    def __post_init__(self) -> None:
        self.redis = redis.Redis.from_url(self.base.redis_url, **self.base.redis_client_kwargs())

    def run_phase(self, mode: str, repeat: int) -> Phase:
        self.mode, self.repeat = mode, repeat
        self.phase = phase = Phase(mode, repeat)
        self.expected = Counter()
        name = f"bench-pipeline-{self.run_id}-{mode}{repeat}"
        tmp = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        topics = {f: f"{name}-{f.removeprefix('topic_')}" for f, info in Settings.model_fields.items()
                  if f.startswith("topic_") and info.annotation is str}  # names, not retention settings
        settings = self.base.model_copy(update={
            **topics, "redis_prefix": name, "job_group_id": name, "job_name": name,
            "checkpoint_dir": tmp / "checkpoints", "restart_attempts": 0,
        })
        self.keys = RedisKeys(settings.redis_prefix)
        ensure_topics(settings)
        overrides = {f"PULSE_{k.upper()}": str(getattr(settings, k)) for k in (
            *topics, "redis_prefix", "job_group_id", "job_name", "checkpoint_dir", "restart_attempts", "home")}
        env = {**os.environ, **overrides}  # everything else: the system's own defaults / the caller's PULSE_*
        if mode == "job":
            env.update(self.args.job_env)
            cmd = [sys.executable, "-m", "pulse", "job", "run", "--restore", "none"]
            cwd = self.args.job_repo
        elif mode == "cluster":
            env.update(self.args.job_env)
            env["PULSE_JOB_PARALLELISM"] = str(self.args.cluster_parallelism)
            cmd = [sys.executable, "-m", "pulse", "job", "submit", "--restore", "none", "--jobmanager"]
            cwd = self.args.job_repo
        else:
            cmd = [sys.executable, str(REPO_ROOT / "bench" / "loop_baseline.py"), *self.args.loop_args]
            cwd = REPO_ROOT
        log = tmp / f"{mode}.log"
        where = f" in {cwd}" if cwd != REPO_ROOT else ""
        print(f"\n== {mode} (repeat {repeat + 1}): {' '.join(cmd[1:])}{where}", flush=True)
        if mode != "loop":
            print(f"   {effective_settings(cwd, env)}", flush=True)
        started = time.monotonic()
        try:
            system = self._launch(mode, cmd, cwd, env, tmp, log)
        except Exception as exc:  # noqa: BLE001 -- report, keep the other phases
            phase.failed = f"{type(exc).__name__}: {exc}"
            print(f"   FAILED to start: {phase.failed}", flush=True)
            return phase
        try:
            with EventProducer(settings) as producer:
                self._startup(system, producer, started)
                print(f"   start-up {phase.startup_s:5.1f} s (launch -> first probe key in Redis)", flush=True)
                rates = [(str(int(r)), r, int(r * self.args.seconds)) for r in self.args.rates]
                todo = [("warmup", rates[0][1], int(rates[0][1] * self.args.warmup_s)), *rates,
                        ("max", None, self.args.max_events)]
                behind = None
                for label, rate, n in todo:
                    if behind is not None and rate is not None:
                        print(f"   {mode:<4} {label:>6}: skipped -- already fell behind at {behind}", flush=True)
                        phase.points.append(Point(mode, label, rate, 0, complete=False, repeat=repeat))
                        continue
                    point = measure_point(self, system, producer, label, rate, n)
                    print(_point_line(point), flush=True)
                    if label != "warmup":
                        phase.points.append(point)
                    if label != "warmup" and rate and (not point.complete or point.sustained < 0.9 * rate):
                        behind = f"{label} ev/s"
                    time.sleep(1.0)
            phase.peak_rss_mb = sum(group_peak_rss_mb(g) for g in system.groups())
            print(f"   peak RSS {phase.peak_rss_mb:,.0f} MiB (sum over processes); busiest threads at max rate: "
                  + ", ".join(phase.top_threads), flush=True)
        except Exception as exc:  # noqa: BLE001 -- report, keep the other phases
            phase.failed = f"{type(exc).__name__}: {exc}"
            print(f"   FAILED: {phase.failed}\n--- {log} ---\n{tail(log)}", flush=True)
        finally:
            system.stop()
            self._cleanup(settings)
            if phase.failed is None and not self.args.keep_logs:
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                print(f"   logs kept in {tmp}")
        return phase

    def _launch(self, mode: str, cmd: list[str], cwd: Path, env: dict[str, str], tmp: Path, log: Path) -> System:
        """Start the system; for ``cluster``, a local standalone cluster first, then submit the job to it."""
        if mode != "cluster":
            rest = None
            if mode == "job":  # the MiniCluster's REST API, for checkpoint statistics
                env = {**env, "PULSE_JOB_REST_PORT": str(free_port())}
                rest = f"127.0.0.1:{env['PULSE_JOB_REST_PORT']}"
            with log.open("ab") as out:
                proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)
            return popen_system(proc, rest)
        shape = ClusterShape(rest_port=free_port(), rpc_port=free_port(), metrics_port=free_port(),
                             taskmanagers=self.args.cluster_taskmanagers,
                             slots_per_taskmanager=-(-self.args.cluster_parallelism // self.args.cluster_taskmanagers))
        cluster = FlinkCluster(tmp / "cluster", shape)
        system = cluster_system(cluster)
        try:
            cluster.start(timeout_s=self.args.startup_timeout_s)
            with log.open("ab") as out:
                subprocess.run([*cmd, cluster.address], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                               check=True, timeout=self.args.startup_timeout_s)
        except BaseException:
            system.stop()
            raise
        print(f"   cluster: {shape.taskmanagers} TaskManagers x {shape.slots_per_taskmanager} slots, "
              f"parallelism {self.args.cluster_parallelism}, REST {cluster.address}", flush=True)
        return system

    def _startup(self, system: System, producer: EventProducer, started: float) -> None:
        probe = next(iter(make_events(f"probe{self.repeat}", 1, seed=1)))
        producer.send(dataclasses.replace(probe, event_time_ms=now_ms()))
        producer.flush(30)
        deadline = started + self.args.startup_timeout_s
        while not self.redis.exists(self.keys.user_record(probe.user_id), self.keys.counts(probe.user_id)):
            if (code := system.exit_code()) is not None:
                raise RuntimeError(f"{self.mode} exited with {code} during start-up")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no probe key after {self.args.startup_timeout_s:.0f} s")
            time.sleep(0.1)
        self.phase.startup_s = time.monotonic() - started

    def _cleanup(self, settings: Settings) -> None:
        try:
            for chunk in batched(self.redis.scan_iter(match=self.keys.pattern(), count=5000), 5000):
                self.redis.unlink(*chunk)
            admin = AdminClient(settings.kafka_config())
            for future in admin.delete_topics(list(pulse_topics(settings)), operation_timeout=30).values():
                with contextlib.suppress(Exception):  # best effort
                    future.result(timeout=30)
        except Exception as exc:  # noqa: BLE001
            print(f"   cleanup: {exc}")


JOB_KNOBS = ("python_execution_mode", "bundle_size", "bundle_time_ms", "score_refresh_ms", "redis_flush_ms",
             "checkpoint_interval_ms", "job_parallelism", "state_backend")


def effective_settings(cwd: Path, env: dict[str, str]) -> str:
    """The job's latency/throughput knobs as its own Settings resolve them in ``env``."""
    code = ("import json; from config import Settings; s = Settings(); "
            f"print(json.dumps({{k: getattr(s, k, None) for k in {JOB_KNOBS!r}}}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    return done.stdout.strip() or done.stderr.strip().splitlines()[-1]


# -- report -------------------------------------------------------------------------------------


def _fmt(x: float, spec: str = ",.0f") -> str:
    return "-" if x != x else format(x, spec)


def _point_line(p: Point) -> str:
    flag = "" if p.complete else "  BEHIND: not drained in time (throughput = growth of visible events)"
    target = f"{p.rate:,.0f}/s" if p.rate else "max"
    return (f"   {p.mode:<4} {p.label:>6} ({target:>8}, {p.events:>7,} ev, {p.users:>5,} users, sent at "
            f"{p.send_rate:>7,.0f}/s): sustained {p.sustained:>7,.0f} ev/s  p50 {_fmt(p.p50):>6} ms  "
            f"p99 {_fmt(p.p99):>6} ms  cpu {p.cpu_ms_per_1k:>5,.0f} ms/1k ev ({p.cpu_pct:>3.0f}% of a core)"
            + (f"  checkpoints {p.checkpoints}, p99 {_fmt(p.checkpoint_p99_ms)} ms" if p.checkpoints else "") + flag)


def report(phases: list[Phase], args: argparse.Namespace) -> None:
    labels = [str(int(r)) for r in args.rates] + ["max"]
    med: dict[tuple[str, str], dict[str, float]] = {}
    print(f"\n== summary: medians over {args.repeats} repeat(s); latency = produce -> user value in Redis "
          f"(wt - et of each user's latest event)")
    print(f"{'mode':<5} {'rate':>6} {'sustained ev/s':>15} {'p50 ms':>8} {'p99 ms':>8} {'cpu ms/1k':>10} "
          f"{'start-up s':>11} {'peak RSS MiB':>13}")
    for mode in MODES:
        ok = [ph for ph in phases if ph.mode == mode and ph.failed is None]
        if not ok:
            if any(ph.mode == mode for ph in phases):
                print(f"{mode:<5} failed in every repeat")
            continue
        for label in labels:
            pts = [p for ph in ok for p in ph.points if p.label == label and p.events]
            first = label == labels[0]
            startup = statistics.median(ph.startup_s for ph in ok) if first else float("nan")
            rss = statistics.median(ph.peak_rss_mb for ph in ok) if first else float("nan")
            if not pts:
                print(f"{mode:<5} {label:>6} {'not sustained':>15}   (skipped: fell behind at a lower rate)")
                continue
            m = {k: statistics.median(getattr(p, k) for p in pts)
                 for k in ("sustained", "p50", "p99", "cpu_ms_per_1k", "checkpoint_p99_ms")}
            med[(mode, label)] = m
            note = ""
            if not all(p.complete for p in pts):
                note = " (fell behind: backlog not drained; no latency)"
            elif label != "max" and m["sustained"] < 0.9 * float(label):
                note = " (fell behind during the point, drained after)"
            print(f"{mode:<5} {label:>6} {m['sustained']:>15,.0f} {_fmt(m['p50']):>8} {_fmt(m['p99']):>8} "
                  f"{m['cpu_ms_per_1k']:>10,.0f} {_fmt(startup, '.1f'):>11} {_fmt(rss):>13}{note}")
    verdicts(phases, args, med)
    load = os.getloadavg()
    print(f"host: {os.cpu_count()} cores, load average now {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
          "(other work on the machine inflates both systems' figures)")


def verdicts(phases: list[Phase], args: argparse.Namespace, med: dict[tuple[str, str], dict[str, float]]) -> None:
    """The throughput issue's targets, each with its figure and met / NOT met (medians over repeats)."""
    top, mid = str(int(max(args.rates))), "2500"
    loop_max, loop_top = med.get(("loop", "max")), med.get(("loop", top))

    def line(what: str, figure: str, ok: bool | None) -> None:
        print(f"  {what:<58} {figure:<34} {'met' if ok else 'NOT met' if ok is not None else 'not measured'}")

    print("\n== targets (issue: the job at the speed of a hand-written loop)")
    for mode, want in (("job", 1.0), ("cluster", 1.3)):
        if not any(ph.mode == mode and ph.failed is None for ph in phases):
            continue
        m_max, m_top, m_mid = med.get((mode, "max")), med.get((mode, top)), med.get((mode, mid))
        ratio = m_max["sustained"] / loop_max["sustained"] if m_max and loop_max else float("nan")
        line(f"{mode}: throughput at max rate >= {want}x the loop", f"{_fmt(ratio, '.2f')}x", ratio >= want
             if ratio == ratio else None)
        sustained = m_top is not None and m_top["sustained"] >= 0.95 * float(top)
        p99_ok = sustained and loop_top is not None and m_top is not None and m_top["p99"] <= loop_top["p99"]
        line(f"{mode}: sustains {top} ev/s, p99 <= the loop's p99 there",
             "not sustained" if not sustained or m_top is None else
             f"p99 {_fmt(m_top['p99'])} ms (loop {_fmt(loop_top['p99']) if loop_top else '-'} ms)", p99_ok)
        line(f"{mode}: p99 <= 100 ms at {mid} ev/s", "not measured" if m_mid is None else
             f"p99 {_fmt(m_mid['p99'])} ms", None if m_mid is None else m_mid["p99"] <= 100
             and m_mid["sustained"] >= 0.95 * float(mid))
        cpu_ok = sustained and m_top is not None and loop_top is not None and \
            m_top["cpu_ms_per_1k"] <= 2 * loop_top["cpu_ms_per_1k"]
        line(f"{mode}: cpu per 1k events at {top} ev/s <= 2x the loop's",
             "not sustained" if not sustained or m_top is None else
             f"{_fmt(m_top['cpu_ms_per_1k'])} ms (loop {_fmt(loop_top['cpu_ms_per_1k']) if loop_top else '-'})", cpu_ok)
        checkpoint = m_top["checkpoint_p99_ms"] if m_top else float("nan")
        line(f"{mode}: checkpoint duration p99 <= 1 s at {top} ev/s", f"{_fmt(checkpoint)} ms",
             None if checkpoint != checkpoint else checkpoint <= 1000 and sustained)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=float, nargs="+", default=[1000, 2500, 5000], help="paced input rates, ev/s")
    parser.add_argument("--seconds", type=float, default=20, help="length of each paced point")
    parser.add_argument("--max-events", type=int, default=60_000, help="events of the max-rate point")
    parser.add_argument("--warmup-s", type=float, default=5, help="unreported warm-up point at the lowest rate")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--only", choices=MODES, help="run one system only")
    parser.add_argument("--quick", action="store_true", help="~2 min smoke: 6 s points, 15k max-rate events")
    parser.add_argument("--job-env", action="append", default=[], metavar="K=V",
                        help="extra env for the job only, e.g. PULSE_PYTHON_EXECUTION_MODE=thread (repeatable)")
    parser.add_argument("--job-repo", type=Path, default=REPO_ROOT,
                        help="run the job from this checkout (e.g. `git archive HEAD | tar -x -C DIR`) while the "
                             "working tree is mid-change; jars still come from PULSE_HOME")
    parser.add_argument("--loop-args", default="", help="extra arguments for loop_baseline.py, e.g. '--profile x'")
    parser.add_argument("--drain-timeout-s", type=float, default=30,
                        help="how long a paced point may take to drain after its last send")
    parser.add_argument("--max-window-s", type=float, default=40, help="measuring window of the max-rate point")
    parser.add_argument("--startup-timeout-s", type=float, default=180)
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--latency-dump", type=Path, default=None,
                        help="write each point's users' (et, wt) and its checkpoints as CSV under this folder")
    parser.add_argument("--checkpoint-breakdown", action="store_true",
                        help="per point, where the slowest checkpoint spent its time, task by task (Flink REST)")
    parser.add_argument("--cluster-taskmanagers", type=int, default=2,
                        help="cluster mode: TaskManagers (each its own JVM, so its own Python interpreter)")
    parser.add_argument("--cluster-parallelism", type=int, default=2, help="cluster mode: job parallelism")
    args = parser.parse_args()
    if args.quick:
        quick = {"seconds": 6, "max_events": 15_000, "warmup_s": 2, "drain_timeout_s": 15, "max_window_s": 20}
        for name, value in quick.items():  # flags given explicitly win
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    args.job_env = dict(kv.split("=", 1) for kv in args.job_env)
    args.loop_args = args.loop_args.split()

    base = Settings()
    if base.kafka_bootstrap == Settings.model_fields["kafka_bootstrap"].default:
        from infra.local.services import LocalServices

        LocalServices(base).up()  # idempotent: reuses running services
    runner = Runner(args, base, uuid.uuid4().hex[:8])
    modes = [args.only] if args.only else list(MODES)
    started = time.monotonic()
    phases = [runner.run_phase(mode, repeat) for repeat in range(args.repeats) for mode in modes]
    report(phases, args)
    print(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
