"""Schema ids: a checked-in registry file by default, a real Schema Registry when configured.

The wire frame carries a writer-schema id; decoding looks the writer schema up by that id and
reads it into the newest schema of the subject (Avro schema resolution), so a reader on v2
reads v1 records. Writers use the newest version unless told an older one (old producers).
Evolution rules: docs/adr/0010-event-schema-v2.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import fastavro

SCHEMA_DIR = Path(__file__).parent
DEFAULT_REGISTRY_FILE = SCHEMA_DIR / "registry.json"

EVENTS_SUBJECT = "events-value"
ITEMS_SUBJECT = "items-value"
DLQ_SUBJECT = "events.dlq-value"
SERVED_SUBJECT = "served-value"


def parse(schema_json: str | dict[str, Any]) -> Any:
    """Parse an Avro schema with its own named-type table (two versions may share names)."""
    raw = json.loads(schema_json) if isinstance(schema_json, str) else schema_json
    return fastavro.parse_schema(raw, named_schemas={})


class SchemaRegistry(Protocol):
    """Where schema ids come from."""

    def writer_schema(self, schema_id: int) -> Any | None:
        """The parsed schema with this id, or None when the id is unknown."""

    def latest(self, subject: str) -> tuple[int, Any]:
        """Id and parsed schema of the newest version of ``subject`` (the reader schema)."""

    def version(self, subject: str, version: int) -> tuple[int, Any]:
        """Id and parsed schema of one version of ``subject`` (a writer for old producers); KeyError if none."""


@dataclass(frozen=True)
class RegisteredSchema:
    """One entry of the registry file."""

    schema_id: int
    subject: str
    version: int
    parsed: Any


class LocalRegistry:
    """Registry backed by ``schemas/registry.json`` (or another file of the same shape).

    >>> reg = LocalRegistry.from_file()
    >>> reg.latest("events-value")[0], reg.version("events-value", 1)[0]
    (5, 1)
    >>> reg.writer_schema(999) is None
    True
    """

    def __init__(self, entries: list[RegisteredSchema]) -> None:
        self._by_id = {e.schema_id: e for e in entries}
        if len(self._by_id) != len(entries):
            raise ValueError("schema ids in the registry must be unique")
        self._latest: dict[str, RegisteredSchema] = {}
        for entry in entries:
            current = self._latest.get(entry.subject)
            if current is None or entry.version > current.version:
                self._latest[entry.subject] = entry

    @classmethod
    def from_file(cls, path: Path = DEFAULT_REGISTRY_FILE) -> LocalRegistry:
        """Load the registry file; schema files are resolved next to it."""
        doc = json.loads(path.read_text())
        entries = [
            RegisteredSchema(
                schema_id=int(item["id"]),
                subject=subject,
                version=int(item["version"]),
                parsed=parse((path.parent / item["file"]).read_text()),
            )
            for subject, versions in doc["subjects"].items()
            for item in versions
        ]
        return cls(entries)

    def with_schema(self, subject: str, schema_id: int, version: int, schema: str | dict[str, Any]) -> LocalRegistry:
        """A copy with one more schema version (used to test evolution)."""
        extra = RegisteredSchema(schema_id, subject, version, parse(schema))
        return LocalRegistry([*self._by_id.values(), extra])

    def writer_schema(self, schema_id: int) -> Any | None:
        """The parsed schema with this id, or None."""
        entry = self._by_id.get(schema_id)
        return None if entry is None else entry.parsed

    def versions(self, subject: str) -> list[RegisteredSchema]:
        """Every version of ``subject``, oldest first."""
        return sorted((e for e in self._by_id.values() if e.subject == subject), key=lambda e: e.version)

    def version(self, subject: str, version: int) -> tuple[int, Any]:
        """Id and parsed schema of ``version`` of ``subject``."""
        for entry in self.versions(subject):
            if entry.version == version:
                return entry.schema_id, entry.parsed
        known = [e.version for e in self.versions(subject)]
        raise KeyError(f"{subject!r} has no version {version} (versions: {known})")

    def latest(self, subject: str) -> tuple[int, Any]:
        """Id and parsed schema of the newest version of ``subject``."""
        entry = self._latest.get(subject)
        if entry is None:
            raise KeyError(f"no schema registered for subject {subject!r}")
        return entry.schema_id, entry.parsed


class ConfluentRegistry:
    """A real Schema Registry through ``confluent_kafka.schema_registry``.

    Registers the project's schemas under their subjects on first use, every version oldest
    first (idempotent on the registry side: a version already there keeps its id, and a new one
    passes the subject's compatibility check, BACKWARD by default), and caches lookups by id.
    """

    def __init__(self, url: str) -> None:
        from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

        self._client = SchemaRegistryClient({"url": url})
        self._schema_cls = Schema
        self._local = LocalRegistry.from_file()
        self._registered: dict[str, dict[int, tuple[int, Any]]] = {}  # subject -> version -> (id, parsed)

    def writer_schema(self, schema_id: int) -> Any | None:
        """The parsed schema with this id from the registry, or None when it has none."""
        return self._fetch(schema_id)

    @cache  # noqa: B019 - one registry per process; ids are immutable
    def _fetch(self, schema_id: int) -> Any | None:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            schema = self._client.get_schema(schema_id)
        except SchemaRegistryError:
            return None
        return None if schema.schema_str is None else parse(schema.schema_str)

    def latest(self, subject: str) -> tuple[int, Any]:
        """Register the project's versions of ``subject`` (no-op if present); the newest one's id and schema."""
        versions = self._register(subject)
        return versions[max(versions)]

    def version(self, subject: str, version: int) -> tuple[int, Any]:
        """The registry's id of one of the project's versions of ``subject`` (registered if missing)."""
        versions = self._register(subject)
        if version not in versions:
            raise KeyError(f"{subject!r} has no version {version} (versions: {sorted(versions)})")
        return versions[version]

    def _register(self, subject: str) -> dict[int, tuple[int, Any]]:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        if subject not in self._registered:
            ids: dict[int, tuple[int, Any]] = {}
            for entry in self._local.versions(subject):  # oldest first: each new one is checked against the last
                schema = self._schema_cls(schema_text(entry.parsed), "AVRO")
                try:
                    schema_id = self._client.register_schema(subject, schema)
                except SchemaRegistryError as exc:  # one line naming subject and version, not just "409"
                    raise RuntimeError(f"registering version {entry.version} of {subject!r} failed: {exc}") from None
                ids[entry.version] = (schema_id, entry.parsed)
            if not ids:
                raise KeyError(f"no schema registered for subject {subject!r}")
            self._registered[subject] = ids
        return self._registered[subject]


def schema_text(parsed: Any) -> str:
    """The JSON Pulse registers for a parsed schema: the same text in every process.

    Keys sorted: fastavro builds a parsed schema's keys from a set, so their order follows the
    process's hash seed, and a registry that compares text (Apicurio) would take the same schema
    from another process (the job) for a new version, or refuse it as incompatible.

    >>> schema_text(parse('{"type": "enum", "name": "T", "symbols": ["a"], "doc": "x"}'))
    '{"doc": "x", "name": "T", "symbols": ["a"], "type": "enum"}'
    """
    return json.dumps(_unparsed(parsed), sort_keys=True)


def _unparsed(parsed: Any) -> Any:
    """Fastavro keeps the parsed form JSON-compatible apart from its private keys."""
    if isinstance(parsed, dict):
        return {k: _unparsed(v) for k, v in parsed.items() if not k.startswith("__")}
    if isinstance(parsed, list):
        return [_unparsed(v) for v in parsed]
    return parsed


def load_registry(url: str | None = None) -> SchemaRegistry:
    """The Schema Registry at ``url`` when given, else the checked-in registry file."""
    return ConfluentRegistry(url) if url else _local_default()


@cache
def _local_default() -> LocalRegistry:
    return LocalRegistry.from_file()
