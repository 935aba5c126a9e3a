"""One typed settings object for every Pulse command, built from environment and flags.

Every field reads ``PULSE_<FIELD>`` from the environment (e.g. ``PULSE_KAFKA_BOOTSTRAP``);
CLI flags override the environment; code receives a :class:`Settings`, never the environment.

>>> s = Settings(kafka_bootstrap="127.0.0.1:19092", redis_password="hunter2")
>>> s.topic_events, s.partitions
('events', 4)
>>> "hunter2" in repr(s)
False
>>> Settings(bandit_scopes="global, user").bandit_scopes
('global', 'user')

A password in ``PULSE_REDIS_URL`` moves to ``redis_password`` (a secret): URLs printed, logged, passed never carry it:

>>> s = Settings(redis_url="redis://:hunter2@redis:6379/0")
>>> s.redis_url, s.redis_password, s.redis_password.get_secret_value()
('redis://redis:6379/0', SecretStr('**********'), 'hunter2')
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from config.archive import ArchiveSettings
from config.connections import ConnectionSecurity
from config.experiments import Experiment, ExperimentConfigError, parse_experiments

REPO_ROOT = Path(__file__).resolve().parent.parent
#: The broker's log.retention.check.interval.ms default: how often expired segments are deleted.
KAFKA_RETENTION_CHECK_MS = 5 * 60 * 1000

#: Where every Kafka client's own (librdkafka) log lines go, instead of straight to stderr: a
#: client of a stopped broker logs each failed reconnect, and those lines belong in logging.
KAFKA_CLIENT_LOG = logging.getLogger("pulse.kafka")

#: Where a bandit keeps separate arm statistics (``online_models.bandits.BanditScope`` has the same values).
BanditScopeName = Literal["global", "segment", "user"]


class ConflictingPasswordsError(RuntimeError):
    """``PULSE_REDIS_URL`` embeds a password that differs from ``PULSE_REDIS_PASSWORD``."""


class Settings(ConnectionSecurity, ArchiveSettings):
    """Addresses, topic names, ports, limits (env prefix ``PULSE_``); TLS/SASL from :class:`ConnectionSecurity`."""

    model_config = SettingsConfigDict(env_prefix="PULSE_", extra="forbid", frozen=True)

    # Where things are. Defaults are the local services `pulse up` starts.
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL (without password)")
    redis_password: SecretStr | None = Field(None, description="Redis password (AUTH)")
    schema_registry_url: str | None = Field(None, description="Schema Registry; unset = schemas/registry.json")

    # Topics.
    topic_events: str = "events"
    topic_items: str = "items"
    topic_dlq: str = "events.dlq"
    topic_sessions: str = "sessions"
    topic_item_params: str = Field("items.params", description="Item-parameter snapshots the job shares with itself")
    topic_served: str = Field("served", description="Every recommendation list serving answered (served.avsc)")
    partitions: int = Field(4, ge=1, description="Partitions of topics Pulse creates")
    # What erasure cannot reach: Kafka keeps an erased user's events until retention deletes them
    # (producers/topics.py, README "Erasure"). Three days bound that at about 73 h with hourly segments.
    topic_retention_ms: int = Field(
        3 * 24 * 3600 * 1000, ge=60_000, description="Retention of the events, sessions and DLQ topics Pulse creates"
    )
    topic_segment_ms: int = Field(
        3600 * 1000, ge=60_000, description="Segment roll time of those topics (retention deletes whole segments)"
    )

    # Redis keys.
    redis_prefix: str = Field("pulse", description="Prefix of every Redis key Pulse writes")

    # Local services started by `pulse up` (infra/local/).
    home: Path = Field(REPO_ROOT / ".local", description="Jars, data and logs of local services")
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    redis_port: int = 6379
    kafka_heap: str = "512m"
    start_timeout_s: float = Field(90.0, gt=0, description="How long `pulse up` waits for health")

    # The Flink job (flink_jobs/). Defaults: docs/adr/0002-flink-execution-mode.md.
    job_name: str = "pulse-personalization"
    job_parallelism: int = Field(1, ge=1, description="Parallelism of the job's operators")
    job_group_id: str = Field("pulse-job", description="Consumer group the job commits offsets under")
    checkpoint_interval_ms: int = Field(5000, ge=100, description="Exactly-once checkpoint interval")
    checkpoint_dir: Path | None = Field(None, description="Checkpoints, per job name; default <home>/checkpoints")
    checkpoint_runs_kept: int = Field(2, ge=0, description="Earlier runs whose checkpoints a new run keeps; 0: all")
    state_backend: Literal["hashmap", "rocksdb"] = "hashmap"
    python_execution_mode: Literal["process", "thread"] = Field(
        "thread", description="The job needs thread mode (batched stages, ADR 0007); process: bench/flink_runtime.py")
    bundle_size: int = Field(1000, ge=1, description="Python bundle size (process mode)")
    bundle_time_ms: int = Field(50, ge=1, description="Python bundle time; bounds latency in process mode")
    restart_attempts: int = Field(10, ge=0)
    job_batch_max_events: int = Field(1000, ge=1, description="Events per Python call at most (docs/adr/0007)")
    job_batch_max_ms: int = Field(10, ge=1, description="How long the job buffers events for one Python call at most")
    job_decode_in_jvm: bool = Field(True, description="Read in the JVM the events the codec would accept (ADR 0007)")
    job_events_buffer_timeout_ms: int = Field(5, ge=0, description="How long decoded events wait in a network "
                                              "buffer on the way to the user stage (Flink's buffer timeout)")
    job_gc_every_ms: int = Field(5000, ge=0, description="The job's Python collects cyclic garbage this often, "
                                 "between batches, instead of CPython's automatic collector (0: CPython's)")
    job_write_back_per_batch: int = Field(
        64, ge=0, description="Quiet keys (users, items, bandit scopes) a stage writes back to keyed state per batch "
        "between checkpoints, so the batch before a barrier is small (0: all at the barrier; docs/adr/0007)")
    job_write_back_quiet_ms: int = Field(
        1000, ge=0, description="A key is written back between checkpoints only after this long without a change")
    job_flink_conf: dict[str, str] = Field(default_factory=dict, description="Extra Flink options for the job, "
                                           "as JSON ({\"key\": \"value\"}); they win over Pulse's own")
    job_class_archive: bool = Field(True, description="The local job's JVM maps its classes from an archive "
                                    "recorded by an earlier start (<home>/jars/cds; ~1.3 s off each start)")
    savepoint_dir: Path | None = Field(None, description="Savepoints; default <home>/savepoints")
    job_rest_port: int | None = Field(None, ge=1, le=65535, description="`pulse job run`: serve Flink's REST API "
                                      "and web UI on this port (checkpoint statistics); off when unset")

    # The local standalone cluster of `pulse up --flink` (infra/local/flink.py).
    flink_rest_port: int = Field(8081, ge=1, le=65535, description="JobManager REST port (`--jobmanager`)")
    flink_rpc_port: int = Field(6123, ge=1, le=65535, description="JobManager RPC port")
    flink_taskmanagers: int = Field(2, ge=1, description="TaskManagers `pulse up --flink` starts")
    flink_task_slots: int = Field(2, ge=1, description="Slots per TaskManager")
    watermark_out_of_orderness_ms: int = Field(5000, ge=0)
    source_idleness_ms: int = Field(10_000, ge=0, description="A partition idle this long stops holding watermarks")
    session_gap_ms: int = Field(30 * 60 * 1000, gt=0, description="Inactivity (event time) that closes a session")
    impression_ttl_ms: int = Field(30 * 60 * 1000, gt=0, description="How long an impression waits for its reward")
    top_k: int = Field(50, ge=1, le=1000, description="Recommendations kept per user")
    score_refresh_ms: int = Field(25, ge=1, description="A busy user's value is rewritten at most about this often")
    shared_refresh_ms: int = Field(
        1000, ge=1, description="Item parameters, bandits, popularity: written and shared at most this often"
    )
    popularity_refresh_ms: int = Field(
        5000, ge=1, description="A segment's popular items are ranked and written at most this often"
    )
    redis_flush_ms: int = Field(10, ge=1, description="Pending Redis writes are flushed this often")
    redis_value_format: Literal["compact", "legacy"] = Field(
        "compact", description="How the job writes users and items: compact (format 2, one string each) "
        "or legacy (format 1 hashes, for serving older than format 2 during an upgrade)")
    redis_user_ttl_s: int = Field(
        0, ge=0, description="Expire a user's compact Redis value this long after its last write (0: never); "
        "serving falls back to popularity")
    model_version: str = "mf-v1"
    drift_reaction: Literal["off", "alert", "boost"] = Field(
        "alert", description="When a drift detector alarms (online_models/drift.py): off (no detectors), alert "
        "(count it: metric drift_alarms, last_drift_ms in the model key) or boost (also raise the MF learning rates)")
    drift_boost_factor: float = Field(3.0, gt=1, description="boost: the MF learning rates are multiplied by this")
    drift_boost_events: int = Field(2000, ge=1, description="boost: for this many learned events a subtask")
    mf_factors: int = Field(10, ge=1)
    # River's documented BiasedMF example: 2.7 % lower RMSE than 0.01/0.01 on MovieLens 100K (ADR 0008).
    mf_bias_lr: float = Field(0.025, gt=0, description="SGD learning rate of the MF biases (job and pulse eval mf)")
    mf_latent_lr: float = Field(0.05, gt=0, description="SGD learning rate of the MF factors (job and pulse eval mf)")
    mf_learning_rate: float | None = Field(None, gt=0, description="Both MF rates at once (overrides the two)")
    mf_l2: float = Field(0.0, ge=0)
    mf_seed: int = 0
    # Implicit-feedback learner (online_models/implicit.py; ADR docs/adr/0008-implicit-learner.md).
    mf_learner: Literal["explicit", "bpr", "wmf"] = Field(
        "explicit", description="Learner of the MF stage: explicit (squared loss on pseudo-ratings), "
        "bpr (implicit, sampled negatives) or wmf (implicit, impressions as negatives)")
    implicit_factors: int = Field(16, ge=1, description="Latent factors of the implicit learner")
    implicit_lr: float = Field(0.1, gt=0, description="SGD learning rate of the implicit learner's factors")
    implicit_bias_lr: float = Field(0.05, ge=0, description="SGD learning rate of the implicit learner's item biases")
    implicit_l2: float = Field(0.001, ge=0, description="L2 penalty of the implicit learner")
    implicit_negatives: int = Field(8, ge=1, description="Sampled negatives per positive (bpr)")
    ranking_k: int = Field(10, ge=1, description="Implicit learner: k of the job's running HitRate@k")
    weight_view: float = Field(1.0, ge=0, description="Weight of a view as an implicit positive")
    weight_click: float = Field(1.0, ge=0, description="Weight of a click as an implicit positive")
    weight_add_to_cart: float = Field(2.0, ge=0, description="Weight of an add-to-cart as an implicit positive")
    weight_purchase: float = Field(3.0, ge=0, description="Weight of a purchase as an implicit positive")
    weight_impression: float = Field(0.03, ge=0, description="Weight of an impression as a negative (wmf)")
    bandit_policy: Literal["ts", "ucb", "egreedy", "linucb"] = "ts"
    bandit_features: Annotated[tuple[str, ...], NoDecode] = Field(
        ("segment", "decision_point"), description="linucb: the context keys it reads (env: comma-separated)")
    bandit_alpha: float = Field(1.0, ge=0, description="linucb: width of the confidence bonus")
    bandit_scopes: Annotated[tuple[BanditScopeName, ...], NoDecode] = Field(
        ("global", "segment", "user"), description="Bandit scopes the job learns (env: comma-separated)"
    )

    # ---------------------------------------------------------------------------------------
    # Serving (serving/, `pulse serve`). ADR: docs/adr/0004-serving.md.
    # ---------------------------------------------------------------------------------------
    serving_host: str = Field("127.0.0.1", description="Address the HTTP shim binds")
    serving_port: int = Field(8080, ge=0, le=65535, description="Port the HTTP shim binds (0 = any free port)")
    serving_workers: int | None = Field(
        None, ge=1, description="uvicorn worker processes sharing the port; unset = one per CPU core"
    )
    serving_pin_workers: bool | None = Field(None, description="Pin worker i to usable CPU i; unset: if workers = CPUs")
    serving_http: Literal["httptools", "h11", "auto"] = Field(
        "httptools", description="uvicorn HTTP parser (httptools: one write per response, see serving/server.py)"
    )
    serving_loop: Literal["uvloop", "asyncio", "auto"] = Field("uvloop", description="uvicorn event loop")
    serving_api_keys: SecretStr | None = Field(
        None, description="Comma-separated bearer API keys, each `KEY` (admin: every route), `read:KEY` "
        "(recommendations, sessions, decisions, console) or `publishable:KEY` (events only); unset = no authentication",
    )
    serving_cors_origins: str = Field(
        "", description="Comma-separated origins web pages may call /v1 from (browsers' CORS); empty = none"
    )
    serving_batch_max_events: int = Field(
        500, ge=1, le=10_000, description="Events one POST /v1/events:batch may carry"
    )
    serving_batch_max_bytes: int = Field(1024 * 1024, ge=1024, description="Larger /v1/events:batch bodies get 413")
    serving_max_body_bytes: int = Field(64 * 1024, ge=1024, description="Larger request bodies get 413")
    serving_experiment_name: str = Field("bandit-v1", description="Experiment logged with every decision")
    serving_experiment_salt: str = Field("pulse", description="Salt of the user-id hash that assigns variants")
    serving_control_share: float = Field(
        0.1, ge=0.0, le=1.0, description="Share of users whose decisions come from the uniform-random control"
    )
    serving_bandit_scope: Literal["global", "segment", "user"] = Field(
        "global", description="Preferred bandit scope; falls back to less specific scopes without data"
    )
    serving_bandit_table_max_age_s: float = Field(
        0.1, ge=0.0, le=60.0, description="Decisions reuse an arm table read from Redis this long (the job writes "
        "them at most every flush interval); 0 = read on every decision"
    )
    serving_ts_draws: int = Field(1000, ge=1, le=100_000, description="Thompson-sampling Monte-Carlo draws")
    serving_popularity_cache_ttl_s: float = Field(
        0.0, ge=0.0, description="Serve in-process cached popularity this long when Redis is down; 0 = off"
    )
    serving_redis_timeout_s: float = Field(0.5, gt=0, description="Socket timeout of the shim's Redis reads")
    serving_alias_refresh_s: float = Field(
        0.5, gt=0, description="How often each serving worker checks which prefix is live (pulse model promote)"
    )
    serving_catalogue_refresh_s: float = Field(
        0.5, gt=0, description="How often each serving worker checks the catalogue (unavailable items) for changes"
    )
    serving_similar_refresh_s: float = Field(
        10.0, gt=0, description="How often each serving worker re-reads every item's factors (SCAN) for "
        "GET /v1/items/{item_id}/similar; a new item is found from the next read on")
    serving_max_blocks: int = Field(
        1000, ge=1, description="Most items and categories one user may block, together (POST /v1/users/{id}/blocks "
        "beyond it answers 422)")
    serving_session_boost: float = Field(
        0.0, ge=0.0, le=100.0, allow_inf_nan=False,
        description="Session re-rank: added to the score of an item whose category the user's open session "
        "visited, times that category's share of the session (the query's session_boost overrides it); 0 = off")
    serving_new_item_slots: int = Field(2, ge=0, le=100, description="Places in a model list (at most half) for new "
                                        "items of the user's categories, no factors yet (serving/new_items.py); 0 off")
    serving_redis_max_connections: int = Field(64, ge=1, description="Redis connection pool size")
    serving_legacy_reads: bool = Field(
        True, description="When a user or item has no format-2 value, read its format-1 keys (one more round "
        "trip); turn off once every key has been rewritten")
    serving_kafka_timeout_s: float = Field(10.0, gt=0, description="How long a collected event may wait for its ack")
    # Experiments (config/experiments.py; README "Running an experiment", docs/adr/0009-experiments.md).
    experiments: Annotated[tuple[Experiment, ...], NoDecode] = Field(
        (), description="Experiments as a JSON list of {name, surface, variants: [{name, policy, share}], salt}; "
        "at most one per surface (recommendations, decisions)")
    serving_log_served: bool = Field(
        True, description="Log every served recommendation list to topic_served (batched, off the request path)")
    job_attribution: Literal["auto", "on", "off"] = Field(
        "auto", description="The job credits clicks, carts and purchases to the experiment variant whose list "
        "(topic_served) or decision led to them (auto: on when PULSE_EXPERIMENTS defines an experiment)")
    attribution_window_ms: int = Field(
        30 * 60 * 1000, gt=0, description="An outcome without a request id goes to the user's list that showed "
        "the item at most this long before")

    # ---------------------------------------------------------------------------------------
    # Operations (`pulse lag`, `pulse exporter`, the job's Prometheus reporter). README "Operating Pulse".
    # ---------------------------------------------------------------------------------------
    metrics_port: int = Field(
        9249, ge=0, le=65535, description="Port of the job's Flink Prometheus reporter (/metrics); 0 = no reporter"
    )
    exporter_host: str = Field("127.0.0.1", description="Address `pulse exporter` binds")
    exporter_port: int = Field(9250, ge=0, le=65535, description="Port `pulse exporter` serves /metrics on")
    freshness_sample: int = Field(200, ge=1, description="Per-user score keys sampled for score freshness")
    dlq_window_s: float = Field(60.0, gt=0, description="Window of the recent dead-letter count")

    @model_validator(mode="before")
    @classmethod
    def _password_out_of_url(cls, data: Any) -> Any:
        """Move a password embedded in ``redis_url`` (``redis://[user]:pw@host``) into ``redis_password``."""
        if not isinstance(data, dict) or not isinstance(data.get("redis_url"), str):
            return data
        url, password = split_redis_password(data["redis_url"])
        if password is None:
            return data
        given = data.get("redis_password")
        given_text = given.get_secret_value() if isinstance(given, SecretStr) else given
        if given_text and given_text != password:
            # Not a ValueError: pydantic would quote the input (with both passwords) in its message.
            raise ConflictingPasswordsError("redis_url carries a password other than redis_password; give one")
        return {**data, "redis_url": url, "redis_password": password}

    @field_validator("bandit_scopes", "bandit_features", mode="before")
    @classmethod
    def _scopes_from_text(cls, value: Any) -> Any:
        """``PULSE_BANDIT_SCOPES=global,segment`` (and features) and the flag's text read as a tuple."""
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("experiments", mode="before")
    @classmethod
    def _experiments_from_text(cls, value: Any) -> Any:
        """``PULSE_EXPERIMENTS`` (JSON) read and checked; a bad definition is one line (ExperimentConfigError)."""
        return value if isinstance(value, tuple) and all(isinstance(v, Experiment) for v in value) \
            else parse_experiments(value)

    @property
    def attribution_on(self) -> bool:
        """Whether the job credits outcomes to experiment variants (``job_attribution``; auto: any experiment)."""
        return bool(self.experiments) if self.job_attribution == "auto" else self.job_attribution == "on"

    @property
    def attribution_reads_served(self) -> bool:
        """Whether the job reads the served topic: attribution on and a recommendations experiment (or on)."""
        return self.attribution_on and (self.job_attribution == "on" or any(
            experiment.surface == "recommendations" for experiment in self.experiments))

    @model_validator(mode="after")
    def _decision_variants_learned(self) -> Settings:
        """A decision variant's bandit policy must be the one the job learns (its arm tables)."""
        for experiment in self.experiments:
            for variant in experiment.variants:
                if experiment.surface == "decisions" and variant.policy not in ("uniform", self.bandit_policy):
                    raise ExperimentConfigError(
                        f"PULSE_EXPERIMENTS: experiment {experiment.name!r}: variant {variant.name!r}: policy "
                        f"{variant.policy!r} has no arm tables (the job learns PULSE_BANDIT_POLICY="
                        f"{self.bandit_policy})")
        return self

    def to_env(self) -> dict[str, str]:
        """The ``PULSE_*`` environment that rebuilds these settings in another process."""
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif name == "experiments":
                value = json.dumps(value)
            elif isinstance(value, tuple):
                value = ",".join(value)
            env[f"PULSE_{name.upper()}"] = str(value)
        return env

    def erasure_bound_ms(self) -> int:
        """Longest an event stays in the events, sessions and DLQ topics after it was written.

        Kafka cannot delete one user's records: retention deletes a segment once its newest record
        is ``topic_retention_ms`` old, a segment takes records for at most ``topic_segment_ms``, and
        the broker looks every ``log.retention.check.interval.ms`` (default 5 minutes).

        >>> Settings().erasure_bound_ms() / 3_600_000  # the defaults: 72 h + 1 h + 5 min
        73.08333333333333
        """
        return self.topic_retention_ms + self.topic_segment_ms + KAFKA_RETENTION_CHECK_MS

    def checkpoint_path(self) -> Path:
        """Where this job's checkpoints go: a folder per job name, so `--restore latest` finds its own only."""
        return (self.checkpoint_dir or self.home / "checkpoints") / self.job_name

    def savepoint_path(self) -> Path:
        """Where savepoints go."""
        return self.savepoint_dir or self.home / "savepoints"

    def redis_client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``redis.Redis.from_url(settings.redis_url, **kwargs)``."""
        password = self.redis_password.get_secret_value() if self.redis_password else None
        return {**({"password": password} if password else {}), **self.redis_tls_kwargs(self.redis_url)}

    def kafka_config(self, **extra: Any) -> dict[str, Any]:
        """A confluent-kafka client config for this cluster (with its TLS/SASL); the client logs to ``pulse.kafka``.

        >>> config = Settings().kafka_config(**{"group.id": "g"})
        >>> config["bootstrap.servers"], config["group.id"], config["logger"].name
        ('127.0.0.1:9092', 'g', 'pulse.kafka')
        """
        return {
            "bootstrap.servers": self.kafka_bootstrap, "logger": KAFKA_CLIENT_LOG,
            **self.kafka_security_config(), **extra,
        }


def split_redis_password(url: str) -> tuple[str, str | None]:
    """``url`` without its password, and the password (``None`` when there is none).

    >>> split_redis_password("rediss://app:p%40ss@cache:6380/1")
    ('rediss://app@cache:6380/1', 'p@ss')
    >>> split_redis_password("redis://127.0.0.1:6379/0")
    ('redis://127.0.0.1:6379/0', None)
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url, None
    netloc = parts.hostname or ""
    if ":" in netloc:  # IPv6 literal
        netloc = f"[{netloc}]"
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    return urlunsplit(parts._replace(netloc=netloc)), unquote(parts.password)
