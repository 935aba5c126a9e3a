"""The Schema Registry path (issue 22.7) against a real registry: Apicurio Registry's Confluent API.

* Pulse's producer side registers its schema and frames records with the registry's id;
  confluent-kafka's own AvroDeserializer reads those bytes, and its AvroSerializer writes the
  same bytes Pulse's codec writes and reads (interop both ways).
* The job, given ``PULSE_SCHEMA_REGISTRY_URL``, decodes records by registry id, and a record
  whose schema id the registry does not know goes to the DLQ as ``unknown_schema``.
* Event schema version 2 (ADR 0010) is version 2 of ``events-value`` and passes the registry's
  BACKWARD check (set globally here); an old producer still writes version 1, both decode.

The registry is started by infra/local/registry.py (built from infra/registry/pom.xml once).
"""

from __future__ import annotations

import json
import shutil
import struct
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from config import REPO_ROOT, Settings
from infra.local.process import ServiceError, free_port
from infra.local.registry import SchemaRegistryServer
from producers.producer import EventProducer
from producers.sources import open_source
from producers.topics import ensure_topics
from schemas import DeadLetterCodec, Event, EventCodec, EventType
from schemas.codec import jvm_event_schema_ids
from schemas.redis_keys import RedisKeys
from schemas.registry import EVENTS_SUBJECT, SCHEMA_DIR, ConfluentRegistry
from serving.sync_reads import user_part
from tests.integration.jobs import run_bounded_job
from tests.integration.test_job import read_topic

pytestmark = pytest.mark.flink_job

EVENT = Event("e1", EventType.RATING, "u1", 1_700_000_000_000, item_id="i1", value=4.0, context={"segment": "s1"})
BLOCK = Event("e2", EventType.BLOCK, "u1", 1_700_000_000_000, category="shoes")
CONTEXT = SerializationContext("events", MessageField.VALUE)
N_EVENTS = 2_000
V1_SCHEMA, V2_SCHEMA = ((SCHEMA_DIR / name).read_text() for name in ("event.avsc", "event_v2.avsc"))


@pytest.fixture(scope="module")
def registry_url() -> Iterator[str]:
    home = Path(tempfile.mkdtemp(prefix="pulse-registry-"))
    server = None
    for _ in range(3):  # a port free a moment ago may be taken by the time the JVM binds it
        server = SchemaRegistryServer(home, free_port(), build_dir=REPO_ROOT / ".local" / "registry")
        try:
            server.start(timeout_s=240)
            break
        except ServiceError:
            server.process.stop()
            server = None
    assert server is not None, "the local Schema Registry did not start"
    try:
        client = SchemaRegistryClient({"url": server.url})
        client.set_compatibility(level="BACKWARD")  # every new version must read the data of the last
        # Another subject first, so Pulse's schema cannot get id 1 (schemas/registry.json's id) by chance.
        client.register_schema(
            "unrelated-value", Schema(json.dumps({"type": "record", "name": "X", "fields": []}), "AVRO"))
        yield server.url
    finally:
        server.process.stop()
        shutil.rmtree(home, ignore_errors=True)


def test_pulse_frames_with_the_registry_id_and_confluent_reads_them(registry_url: str) -> None:
    client = SchemaRegistryClient({"url": registry_url})
    payload = EventCodec(ConfluentRegistry(registry_url)).encode(EVENT)
    registered = client.get_latest_version(EVENTS_SUBJECT)
    assert registered.schema_id != 1
    assert payload[0] == 0 and struct.unpack(">I", payload[1:5])[0] == registered.schema_id
    assert AvroDeserializer(client)(payload, CONTEXT) == EVENT.to_avro()


def test_confluent_serializer_writes_what_pulse_reads(registry_url: str) -> None:
    client = SchemaRegistryClient({"url": registry_url})
    codec = EventCodec(ConfluentRegistry(registry_url))
    pulse_bytes = codec.encode(EVENT)
    serializer = AvroSerializer(client, conf={"auto.register.schemas": False, "use.latest.version": True})
    confluent_bytes = serializer(EVENT.to_avro(), CONTEXT)
    assert confluent_bytes == pulse_bytes
    assert codec.decode(confluent_bytes, now_ms=EVENT.event_time_ms) == EVENT


def frame_id(payload: bytes) -> int:
    return int(struct.unpack(">I", payload[1:5])[0])


def test_v2_is_version_2_of_the_subject_and_old_producers_keep_writing_v1(registry_url: str) -> None:
    client = SchemaRegistryClient({"url": registry_url})
    new = EventCodec(ConfluentRegistry(registry_url))
    old = EventCodec(ConfluentRegistry(registry_url), writer_version=1)
    assert client.get_compatibility() == "BACKWARD"
    assert client.get_versions(EVENTS_SUBJECT) == [1, 2]  # registered oldest first, each once
    v1, v2 = (client.get_version(EVENTS_SUBJECT, n) for n in (1, 2))
    assert '"block"' not in (v1.schema.schema_str or "") and '"block"' in (v2.schema.schema_str or "")
    assert frame_id(old.encode(EVENT)) == v1.schema_id != v2.schema_id == frame_id(new.encode(BLOCK))
    assert new.decode(old.encode(EVENT), now_ms=EVENT.event_time_ms) == EVENT  # v1 bytes, v2 reader
    assert new.decode(new.encode(BLOCK), now_ms=BLOCK.event_time_ms) == BLOCK
    assert AvroDeserializer(client)(old.encode(EVENT), CONTEXT) == {  # Confluent reads them with v1
        k: v for k, v in EVENT.to_avro().items() if k != "category"}
    with pytest.raises(ValueError, match="no event type 'block'"):
        old.encode(BLOCK)


def test_the_registry_holds_v2_to_backward_and_refuses_a_breaking_change(registry_url: str) -> None:
    client = SchemaRegistryClient({"url": registry_url})
    breaking = json.loads(V2_SCHEMA)
    breaking["fields"].append({"name": "session_id", "type": "string"})  # no default: v1 data lacks it
    subject = "events-evolution-value"
    client.register_schema(subject, Schema(V1_SCHEMA, "AVRO"))
    assert not client.test_compatibility(subject, Schema(json.dumps(breaking), "AVRO"))
    with pytest.raises(SchemaRegistryError):
        client.register_schema(subject, Schema(json.dumps(breaking), "AVRO"))
    assert client.test_compatibility(subject, Schema(V2_SCHEMA, "AVRO"))
    client.register_schema(subject, Schema(V2_SCHEMA, "AVRO"))
    assert client.get_versions(subject) == [1, 2]
    # FORWARD (old readers, new data) would refuse v2: a v1 reader has no symbol "block". Hence
    # the order of an upgrade: the job first, then producers of v2 (ADR 0010).
    forward = "events-forward-value"
    client.set_compatibility(forward, "FORWARD")
    client.register_schema(forward, Schema(V1_SCHEMA, "AVRO"))
    assert not client.test_compatibility(forward, Schema(V2_SCHEMA, "AVRO"))


def test_job_decodes_registry_ids_and_dead_letters_unknown_ones(
    settings: Settings, tmp_path: Path, registry_url: str
) -> None:
    settings = settings.model_copy(update={"schema_registry_url": registry_url, "checkpoint_dir": tmp_path / "chk"})
    ensure_topics(settings)
    events = list(open_source("synthetic:users=50,items=200", seed=5, limit=N_EVENTS))
    unknown_id = b"\x00" + struct.pack(">I", 987_654) + EventCodec().encode(EVENT)[5:]
    with EventProducer(settings) as producer:
        for event in events:
            producer.send(event)
        producer.send_raw(b"u1", unknown_id)
    assert producer.report.produced == N_EVENTS + 1
    assert struct.unpack(">I", producer.codec.encode(events[0])[1:5])[0] != 1  # framed with the registry's id

    run_bounded_job(settings, log=tmp_path / "job.log", timeout_s=240)

    client = redis_lib.Redis.from_url(settings.redis_url)
    keys = RedisKeys(settings.redis_prefix)
    want = Counter(e.user_id for e in events)
    stored = {user: user_part(client, keys, user, "counts") for user in want}
    wrong = [u for u, env in stored.items() if env is None or sum(env.payload["counts"].values()) != want[u]]
    assert not wrong, f"{len(wrong)} of {len(want)} users' counts differ, e.g. {wrong[:3]}"
    dead_letters = DeadLetterCodec(ConfluentRegistry(registry_url))  # the job registered the DLQ schema too
    dead = [dead_letters.decode(v) for v in read_topic(settings, settings.topic_dlq, 1)]
    assert [(d["reason"], d["original"]) for d in dead] == [("unknown_schema", unknown_id)]
    # The registry's ids for Pulse's two versions hold the project's schemas, so the job read those
    # records in the JVM (pipeline.decode_in_jvm), not only through the codec.
    registry = ConfluentRegistry(registry_url)
    assert jvm_event_schema_ids(registry) == {registry.version(EVENTS_SUBJECT, v)[0]: v for v in (1, 2)}
