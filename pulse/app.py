"""The Typer app every command registers on, the global flags, and helpers the commands share.

Global flags build one :class:`Settings`; commands receive it. Nothing here imports a command:
``pulse/cli.py`` imports the commands, and each command imports this module.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from config import Settings
from config.experiments import ExperimentConfigError
from config.settings import ConflictingPasswordsError

app = typer.Typer(
    help="Pulse: real-time personalization. Kafka events -> PyFlink + River learners -> live scores in Redis.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
eval_app = typer.Typer(help="Offline evaluation of the learners (no services needed).", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


def _env_help(field: str) -> str:
    info = Settings.model_fields[field]
    return f"{info.description or field.replace('_', ' ')}"


@app.callback()
def main(
    ctx: typer.Context,
    kafka_bootstrap: Annotated[
        str | None, typer.Option(envvar="PULSE_KAFKA_BOOTSTRAP", help=_env_help("kafka_bootstrap"))
    ] = None,
    redis_url: Annotated[str | None, typer.Option(envvar="PULSE_REDIS_URL", help=_env_help("redis_url"))] = None,
    home: Annotated[Path | None, typer.Option(envvar="PULSE_HOME", help=_env_help("home"))] = None,
    kafka_port: Annotated[int | None, typer.Option(envvar="PULSE_KAFKA_PORT", help="Port of the local broker")] = None,
    redis_port: Annotated[int | None, typer.Option(envvar="PULSE_REDIS_PORT", help="Port of the local Redis")] = None,
    partitions: Annotated[
        int | None, typer.Option(envvar="PULSE_PARTITIONS", help=_env_help("partitions"))
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging")] = False,
) -> None:
    """Other settings come from PULSE_* environment variables (see config/settings.py)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:  # one line per HTTP request (REST polling, readiness checks) is noise
        logging.getLogger("httpx").setLevel(logging.WARNING)
        # PyFlink imports Beam, which logs what it cannot do (BigQuery, type hints) at INFO on every job start.
        logging.getLogger("apache_beam").setLevel(logging.WARNING)
        root = logging.getLogger()
        if not any(isinstance(f, InterruptedCallFilter) for f in root.filters):
            root.addFilter(InterruptedCallFilter())
        # A Kafka client retries an unreachable broker every second or so, logging each attempt.
        kafka_log = logging.getLogger("pulse.kafka")
        if not any(isinstance(f, RepeatFilter) for f in kafka_log.filters):
            kafka_log.addFilter(StartingBrokerFilter())
            kafka_log.addFilter(RepeatFilter())
    overrides: dict[str, Any] = {
        "kafka_bootstrap": kafka_bootstrap,
        "redis_url": redis_url,
        "home": home,
        "kafka_port": kafka_port,
        "redis_port": redis_port,
        "partitions": partitions,
    }
    try:
        ctx.obj = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except (ExperimentConfigError, ConflictingPasswordsError) as exc:  # one line, not a traceback
        raise fail(str(exc), 2) from None


class RepeatFilter(logging.Filter):
    """Let a message through once per ``every_s`` seconds (its text up to any "(after N ms" timing suffix).

    >>> f, record = RepeatFilter(every_s=60), logging.makeLogRecord({"msg": "Connect failed (after 0ms in CONNECT)"})
    >>> f.filter(record), f.filter(logging.makeLogRecord({"msg": "Connect failed (after 5ms in CONNECT)"}))
    (True, False)
    """

    def __init__(self, every_s: float = 60.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """True when this message was not let through in the last ``every_s`` seconds."""
        key = record.getMessage().split(" (after ", 1)[0]
        now = time.monotonic()
        if now - self._last.get(key, -self.every_s) < self.every_s:
            return False
        if len(self._last) > 1000:
            self._last.clear()
        self._last[key] = now
        return True


class StartingBrokerFilter(logging.Filter):
    """Drop a Kafka client's warnings about a broker still starting, which the client retries by itself.

    ``make demo`` starts the broker and produces seconds later: the transaction coordinator is still
    loading and partition leaders are not yet in the client's cache. Delivery failures still show
    (in the producer's report); ``-v`` shows these lines too.

    >>> f = StartingBrokerFilter()
    >>> f.filter(logging.makeLogRecord({"msg": "GETPID [rdkafka#producer-7] [thrd:main]: Failed to acquire "
    ...     "idempotence PID from broker 127.0.0.1:9092/1: Broker: Coordinator load in progress: retrying"}))
    False
    >>> f.filter(logging.makeLogRecord({"msg": "METADATAUPDATE [rdkafka#producer-7] [thrd:main]: Partition "
    ...     "events(dh2h)[2]: new leader-1 not found in cache"})), f.filter(logging.makeLogRecord({"msg": "other"}))
    (False, True)
    """

    TRANSIENT = ("Coordinator load in progress", "not found in cache")

    def filter(self, record: logging.LogRecord) -> bool:
        """False for the lines of a broker still starting."""
        message = record.getMessage()
        return not any(text in message for text in self.TRANSIENT)


class InterruptedCallFilter(logging.Filter):
    """Drop Py4J's traceback of a Ctrl-C that came during a call into the JVM: the command says it stopped.

    Py4J logs it on the root logger, then raises ``KeyboardInterrupt`` to the command.

    >>> InterruptedCallFilter().filter(logging.makeLogRecord({"msg": "KeyboardInterrupt while sending command."}))
    False
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """False for Py4J's interrupted-call record only."""
        return record.getMessage() != "KeyboardInterrupt while sending command."


def settings_of(ctx: typer.Context) -> Settings:
    """The settings the callback built."""
    settings = ctx.obj
    if not isinstance(settings, Settings):  # pragma: no cover - typer always runs the callback
        raise RuntimeError("settings missing")
    return settings


def print_json(data: Any) -> None:
    """JSON on stdout, for ``--json`` outputs."""
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one clear line on stderr and return the Exit to raise."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


__all__ = ["app", "eval_app", "fail", "print_json", "settings_of"]
