"""Issue 11, topic administration as a real client sees it (confluent-kafka, librdkafka).

Usage: python topic_admin.py BOOTSTRAP SCENARIO

Driven by crates/runnel-broker/tests/topic_admin.rs, which then looks at what the broker
stored with raw Fetch requests. Prints "ok", or exits non-zero with a message. Every wait
is bounded.
"""
import sys
import time

BOOT = sys.argv[1]
SCENARIO = sys.argv[2]
DEADLINE_S = 60


def fail(msg):
    print(f"FAIL {SCENARIO}: {msg}", file=sys.stderr)
    sys.exit(1)


def refused_with(future, code, what):
    """Waits for an admin future that must fail with the KafkaError `code`."""
    try:
        future.result(30)
    except Exception as e:  # noqa: BLE001
        err = e.args[0] if e.args else None
        got = err.code() if hasattr(err, "code") else None
        if got != code:
            fail(f"{what}: expected error {code}, got {e!r}")
        return
    fail(f"{what}: accepted")


def partitions(admin, topic):
    # All topics: asking for one by name may create it (the broker auto-creates).
    md = admin.list_topics(timeout=10)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return None
    return len(t.partitions)


def replica_assignment():
    """A manual assignment naming only this broker (node 1) is Kafka's to accept."""
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

    a = AdminClient({"bootstrap.servers": BOOT})
    # librdkafka wants the count beside an assignment, and sends -1 for it, as Kafka asks.
    a.create_topics([NewTopic("ra", 3, replica_assignment=[[1], [1], [1]])])["ra"].result(30)
    if partitions(a, "ra") != 3:
        fail(f"ra has {partitions(a, 'ra')} partitions, not 3")

    bad = KafkaError.INVALID_REPLICA_ASSIGNMENT
    refused_with(a.create_topics([NewTopic("ra-other", 1, replica_assignment=[[2]])])["ra-other"],
                 bad, "an assignment naming broker 2")
    refused_with(a.create_topics([NewTopic("ra-twice", 1, replica_assignment=[[1, 1]])])["ra-twice"],
                 bad, "an assignment naming broker 1 twice")
    for t in ["ra-other", "ra-twice"]:
        if partitions(a, t) is not None:
            fail(f"{t} was created")

    a.create_partitions([NewPartitions("ra", 5, replica_assignment=[[1], [1]])])["ra"].result(30)
    if partitions(a, "ra") != 5:
        fail(f"ra has {partitions(a, 'ra')} partitions after growing to 5")
    refused_with(a.create_partitions([NewPartitions("ra", 6, replica_assignment=[[2]])])["ra"],
                 bad, "new partitions on broker 2")
    if partitions(a, "ra") != 5:
        fail("a refused create_partitions grew the topic")
    print("ok")


def consume_all(topic, n):
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": BOOT, "group.id": "unused", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    got = []
    end = time.time() + DEADLINE_S
    while len(got) < n and time.time() < end:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            fail(f"{topic}: consumer error {m.error()}")
        got.append((m.offset(), m.key(), m.value(), m.headers()))
    c.close()
    return got


def compression_type():
    """Topic-level compression.type: the broker re-compresses what producers send."""
    from confluent_kafka import KafkaError, Producer
    from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

    a = AdminClient({"bootstrap.servers": BOOT})
    refused_with(a.create_topics([NewTopic("ct-bad", 1, 1, config={"compression.type": "brotli"})])["ct-bad"],
                 KafkaError.INVALID_CONFIG, "compression.type=brotli")
    if partitions(a, "ct-bad") is not None:
        fail("ct-bad was created")

    # topic -> (its compression.type, what the producer sends, idempotent producer)
    cases = {
        "ct-zstd": ("zstd", "none", False),
        "ct-zstd-idem": ("zstd", "none", True),
        "ct-plain": ("uncompressed", "gzip", False),
        "ct-lz4": ("lz4", "snappy", True),
        "ct-producer": ("producer", "gzip", False),
    }
    fs = a.create_topics([NewTopic(t, 1, 1, config={"compression.type": c})
                          for t, (c, _, _) in cases.items()])
    for f in fs.values():
        f.result(30)
    res = a.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, t) for t in cases])
    for r, f in res.items():
        got = f.result(30)["compression.type"].value
        if got != cases[r.name][0]:
            fail(f"{r.name}: DescribeConfigs says compression.type={got}")

    n = 200
    for topic, (_, sent, idempotent) in cases.items():
        p = Producer({"bootstrap.servers": BOOT, "compression.type": sent, "linger.ms": 20,
                      "enable.idempotence": idempotent})
        for i in range(n):
            p.produce(topic, key=f"k{i}".encode(), value=(b"runnel " * 40) + str(i).encode(),
                      headers=[("h", str(i).encode())], partition=0)
        if p.flush(30) != 0:
            fail(f"{topic}: messages left unflushed")
        got = consume_all(topic, n)
        want = [(i, f"k{i}".encode(), (b"runnel " * 40) + str(i).encode(), [("h", str(i).encode())])
                for i in range(n)]
        if got != want:
            fail(f"{topic}: read back {len(got)} records, first difference at "
                 f"{next((i for i, (g, w) in enumerate(zip(got, want)) if g != w), len(got))}")
    print("ok")


SCENARIOS = {f.__name__: f for f in [replica_assignment, compression_type]}

if __name__ == "__main__":
    SCENARIOS[SCENARIO]()
