"""Producer throughput: synthetic events -> framed Avro -> local broker, with delivery reports.

Prints events/s for N synthetic events (median of R runs) for the full path Pulse's producer
takes (generate + encode + produce + count deliveries), and beside it a baseline measured in
the same run: the same payloads, pre-encoded, produced by a bare confluent-kafka loop.

    .venv/bin/python bench/produce.py [--events 200000] [--runs 3]

Uses PULSE_KAFKA_BOOTSTRAP when set; else starts (or reuses) `pulse up`'s local services.
"""

from __future__ import annotations

import argparse
import itertools
import resource
import statistics
import time
import uuid

from confluent_kafka import Producer

from config import Settings
from infra.local.services import LocalServices
from producers.producer import DEFAULT_PRODUCER_CONFIG, EventProducer
from producers.sources import open_source
from producers.topics import ensure_topics
from schemas import EventCodec


def full_path(settings: Settings, n: int, seed: int) -> float:
    """Events/s of generate + encode + produce + delivery accounting, up to the last ack."""
    started = time.perf_counter()
    with EventProducer(settings) as producer:
        for _ in producer.send_all(itertools.islice(open_source("synthetic", seed=seed), n)):
            pass
    elapsed = time.perf_counter() - started
    assert producer.report.produced == n and producer.report.failed == 0, producer.report
    return n / elapsed


def baseline(settings: Settings, payloads: list[tuple[bytes, bytes]]) -> float:
    """Events/s of a bare produce loop over pre-encoded payloads (no generator, no codec, no callback)."""
    producer = Producer(settings.kafka_config(**DEFAULT_PRODUCER_CONFIG))
    topic = settings.topic_events
    started = time.perf_counter()
    for key, value in payloads:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(60)
    elapsed = time.perf_counter() - started
    assert left == 0
    return len(payloads) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    settings = Settings()
    if settings.kafka_bootstrap == Settings.model_fields["kafka_bootstrap"].default:
        LocalServices(settings).up()  # the default address: make sure the local broker runs
    settings = settings.model_copy(update={"topic_events": f"bench-produce-{uuid.uuid4().hex[:6]}"})
    ensure_topics(settings, [settings.topic_events])

    codec = EventCodec()
    payloads = [(e.user_id.encode(), codec.encode(e)) for e in open_source("synthetic", seed=99, limit=args.events)]
    mean_size = statistics.fmean(len(v) for _, v in payloads)

    ours, bare = [], []
    for run in range(args.runs):
        ours.append(full_path(settings, args.events, seed=run))
        bare.append(baseline(settings, payloads))
        print(f"run {run + 1}: pulse producer {ours[-1]:>9,.0f} ev/s   bare loop {bare[-1]:>9,.0f} ev/s")

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n{args.events:,} synthetic events x {args.runs} runs, mean payload {mean_size:.0f} B, "
          f"broker {settings.kafka_bootstrap}, {settings.partitions} partitions")
    print(f"pulse producer (generate+encode+produce+acks): median {statistics.median(ours):,.0f} events/s")
    print(f"baseline bare produce of pre-encoded payloads: median {statistics.median(bare):,.0f} events/s")
    print(f"ratio pulse/baseline: {statistics.median(ours) / statistics.median(bare):.2f}   peak RSS {rss_mb:.0f} MiB")


if __name__ == "__main__":
    main()
