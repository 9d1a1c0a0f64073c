"""Client scenarios for the Runnel end-to-end tests.

Usage: python scenarios.py BOOTSTRAP SCENARIO [ARGS...]

Each scenario drives the broker with a real third-party client and exits non-zero (with
an assertion message) when the broker misbehaves. Every wait is bounded.
"""
import sys
import time

BOOT = sys.argv[1]
SCENARIO = sys.argv[2]
ARGS = sys.argv[3:]
DEADLINE_S = 60


def fail(msg):
    print(f"FAIL {SCENARIO}: {msg}", file=sys.stderr)
    sys.exit(1)


# ---------------------------------------------------------------- confluent-kafka

def confluent_roundtrip():
    """Keys, headers, null values and every codec, produced and consumed by librdkafka 2.16."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    value = b"runnel " * 300
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
        topic = f"ck-{codec}"
        p = Producer({"bootstrap.servers": BOOT, "compression.type": codec, "linger.ms": 5})
        for i in range(50):
            p.produce(topic, key=f"k{i}".encode(), value=value + str(i).encode(), headers=[("h", b"v"), ("n", None)])
        p.produce(topic, key=b"null", value=None)
        if p.flush(30) != 0:
            fail(f"{codec}: messages left unflushed")
        c = Consumer({"bootstrap.servers": BOOT, "group.id": "unused", "enable.auto.commit": False})
        c.assign([TopicPartition(topic, 0, 0)])
        got = []
        end = time.time() + DEADLINE_S
        while len(got) < 51 and time.time() < end:
            m = c.poll(1.0)
            if m is None:
                continue
            if m.error():
                fail(f"{codec}: {m.error()}")
            got.append(m)
        c.close()
        if len(got) != 51:
            fail(f"{codec}: got {len(got)} of 51")
        for i, m in enumerate(got[:50]):
            if m.key() != f"k{i}".encode() or m.value() != value + str(i).encode() or m.offset() != i:
                fail(f"{codec}: record {i} differs")
            if m.headers() != [("h", b"v"), ("n", None)]:
                fail(f"{codec}: headers {m.headers()}")
        if got[50].value() is not None or got[50].key() != b"null":
            fail(f"{codec}: null value came back as {got[50].value()!r}")
    print("ok")


def confluent_idempotent():
    """An idempotent librdkafka producer: InitProducerId, sequences, no duplicates."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    topic = "ck-idem"
    p = Producer({"bootstrap.servers": BOOT, "enable.idempotence": True, "linger.ms": 2})
    for i in range(1000):
        p.produce(topic, value=str(i).encode())
        if i % 100 == 0:
            p.poll(0)
    if p.flush(30) != 0:
        fail("unflushed")
    c = Consumer({"bootstrap.servers": BOOT, "group.id": "unused", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    seen = []
    end = time.time() + DEADLINE_S
    while len(seen) < 1000 and time.time() < end:
        m = c.poll(1.0)
        if m is not None and not m.error():
            seen.append(int(m.value()))
    c.close()
    if seen != list(range(1000)):
        fail(f"expected 0..999 in order, got {len(seen)} values")
    print("ok")


def confluent_offsets():
    """ListOffsets: watermarks and offsets_for_times down to the record."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    topic = "ck-times"
    p = Producer({"bootstrap.servers": BOOT, "linger.ms": 50, "compression.type": "gzip"})
    base = 1_700_000_000_000
    for i in range(10):
        p.produce(topic, value=b"x" * 100, timestamp=base + i * 1000)
    p.flush(30)
    c = Consumer({"bootstrap.servers": BOOT, "group.id": "unused"})
    lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    if (lo, hi) != (0, 10):
        fail(f"watermarks {(lo, hi)}")
    # Inside one compressed batch: the broker must find the record, not the batch start.
    res = c.offsets_for_times([TopicPartition(topic, 0, base + 3500)], timeout=10)
    if res[0].offset != 4:
        fail(f"offsets_for_times gave {res[0].offset}, expected 4")
    res = c.offsets_for_times([TopicPartition(topic, 0, base + 99_000)], timeout=10)
    if res[0].offset not in (-1, 10):
        fail(f"a time after the last record gave {res[0].offset}")
    c.close()
    print("ok")


def confluent_admin():
    """AdminClient: create, list, describe configs, create partitions, delete records, delete."""
    from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic
    from confluent_kafka import Producer, TopicPartition

    a = AdminClient({"bootstrap.servers": BOOT})
    fs = a.create_topics([NewTopic("adm-x", 3, 1, config={"retention.ms": "60000"})])
    fs["adm-x"].result(30)
    try:
        a.create_topics([NewTopic("adm-x", 3, 1)])["adm-x"].result(30)
        fail("creating an existing topic succeeded")
    except Exception as e:  # noqa: BLE001
        if "TOPIC_ALREADY_EXISTS" not in str(e) and "already exists" not in str(e):
            fail(f"wrong error for a duplicate topic: {e}")
    try:
        a.create_topics([NewTopic("adm-bad", 1, 3)])["adm-bad"].result(30)
        fail("replication factor 3 was accepted on one node")
    except Exception as e:  # noqa: BLE001
        if "REPLICATION" not in str(e).upper():
            fail(f"wrong error for replication factor 3: {e}")
    md = a.list_topics(timeout=10)
    if "adm-x" not in md.topics or len(md.topics["adm-x"].partitions) != 3:
        fail(f"list_topics: {md.topics}")
    if md.controller_id < 0:
        fail("no controller")
    res = a.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, "adm-x")])
    cfg = list(res.values())[0].result(30)
    if cfg["retention.ms"].value != "60000":
        fail(f"retention.ms is {cfg['retention.ms'].value}")
    a.create_partitions([NewPartitions("adm-x", 5)])["adm-x"].result(30)
    if len(a.list_topics(timeout=10).topics["adm-x"].partitions) != 5:
        fail("create_partitions did not grow the topic")
    p = Producer({"bootstrap.servers": BOOT})
    for i in range(10):
        p.produce("adm-x", value=b"v", partition=0)
    p.flush(30)
    out = a.delete_records([TopicPartition("adm-x", 0, 4)])
    low = list(out.values())[0].result(30)
    if low.low_watermark != 4:
        fail(f"delete_records low watermark {low.low_watermark}")
    a.delete_topics(["adm-x"])["adm-x"].result(30)
    deadline = time.time() + 10
    while "adm-x" in a.list_topics(timeout=10).topics and time.time() < deadline:
        time.sleep(0.1)
    if "adm-x" in a.list_topics(timeout=10).topics:
        fail("topic still listed after delete")
    print("ok")


# ---------------------------------------------------------------- kafka-python

def kafka_python_roundtrip():
    """kafka-python 3 defaults (idempotent, acks=all) with gzip, then consume from the start."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    topic = "kp-rt"
    p = KafkaProducer(bootstrap_servers=BOOT, compression_type="gzip")
    for i in range(200):
        p.send(topic, key=f"k{i}".encode(), value=(b"kafka-python " * 50) + str(i).encode(),
               headers=[("h", b"1")])
    p.send(topic, key=b"nil", value=None)
    p.flush(30)
    p.close()
    c = KafkaConsumer(bootstrap_servers=BOOT, auto_offset_reset="earliest", consumer_timeout_ms=10000,
                      enable_auto_commit=False)
    c.assign([TopicPartition(topic, 0)])
    c.seek_to_beginning()
    got = []
    for m in c:
        got.append(m)
        if len(got) == 201:
            break
    c.close()
    if len(got) != 201:
        fail(f"got {len(got)} of 201")
    for i, m in enumerate(got[:200]):
        if m.offset != i or m.key != f"k{i}".encode() or m.headers != [("h", b"1")]:
            fail(f"record {i}: {m}")
    if got[200].value is not None:
        fail("null value lost")
    print("ok")


def kafka_python_snappy_lz4():
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    for codec in ["snappy", "lz4", "zstd"]:
        topic = f"kp-{codec}"
        try:
            p = KafkaProducer(bootstrap_servers=BOOT, compression_type=codec)
        except Exception as e:  # noqa: BLE001
            fail(f"{codec}: producer refused: {e}")
        for i in range(20):
            p.send(topic, value=(b"z" * 500) + str(i).encode())
        p.flush(30)
        p.close()
        c = KafkaConsumer(bootstrap_servers=BOOT, consumer_timeout_ms=10000, enable_auto_commit=False)
        c.assign([TopicPartition(topic, 0)])
        c.seek_to_beginning()
        vals = [m.value for _, m in zip(range(20), c)]
        c.close()
        if vals != [(b"z" * 500) + str(i).encode() for i in range(20)]:
            fail(f"{codec}: read back {len(vals)} values")
    print("ok")


def kafka_python_admin():
    from kafka.admin import KafkaAdminClient, NewTopic

    a = KafkaAdminClient(bootstrap_servers=BOOT)
    a.create_topics([NewTopic("kp-adm", 2, 1)])
    if "kp-adm" not in a.list_topics():
        fail("created topic not listed")
    a.delete_topics(["kp-adm"])
    end = time.time() + 10
    while "kp-adm" in a.list_topics() and time.time() < end:
        time.sleep(0.1)
    if "kp-adm" in a.list_topics():
        fail("deleted topic still listed")
    a.close()
    print("ok")


# ---------------------------------------------------------------- aiokafka

def aiokafka_roundtrip():
    import asyncio

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    async def go():
        topic = "aio-rt"
        p = AIOKafkaProducer(bootstrap_servers=BOOT, compression_type="gzip")
        await p.start()
        try:
            for i in range(50):
                await p.send_and_wait(topic, value=f"v{i}".encode(), key=b"k")
        finally:
            await p.stop()
        c = AIOKafkaConsumer(bootstrap_servers=BOOT, enable_auto_commit=False, auto_offset_reset="earliest")
        await c.start()
        try:
            tp = TopicPartition(topic, 0)
            c.assign([tp])
            await c.seek_to_beginning(tp)
            got = []
            while len(got) < 50:
                batch = await asyncio.wait_for(c.getmany(tp, timeout_ms=1000), DEADLINE_S)
                for msgs in batch.values():
                    got.extend(m.value for m in msgs)
            if got != [f"v{i}".encode() for i in range(50)]:
                fail(f"got {got[:5]}...")
        finally:
            await c.stop()

    asyncio.run(go())
    print("ok")


def confluent_compacted():
    """A compacted topic read from the start shows each key's latest value, after the
    cleaner removed superseded records from closed segments (lz4 batches included)."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic
    topic = "ck-compacted"
    admin = AdminClient({"bootstrap.servers": BOOT})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1, config={
        "cleanup.policy": "compact", "segment.bytes": "1024"})])[topic].result(30)
    p = Producer({"bootstrap.servers": BOOT, "compression.type": "lz4", "linger.ms": 0})
    rounds, keys = 20, 10
    for r in range(rounds):
        for k in range(keys):
            p.produce(topic, key=f"k{k}".encode(), value=f"v{r}".encode())
        p.flush(30)
    # A keyless record is refused on a compacted topic (INVALID_RECORD).
    errors = []
    p.produce(topic, key=None, value=b"no key", on_delivery=lambda e, m: errors.append(e))
    p.flush(30)
    if not errors or errors[0] is None or "INVALID_RECORD" not in str(errors[0].name()):
        fail(f"keyless record: {errors}")

    def read_all():
        c = Consumer({"bootstrap.servers": BOOT, "group.id": "unused", "enable.auto.commit": False,
                      "enable.partition.eof": True})
        c.assign([TopicPartition(topic, 0, 0)])
        got = []
        end = time.time() + DEADLINE_S
        while time.time() < end:
            m = c.poll(1.0)
            if m is None:
                continue
            if m.error():
                if m.error().code() == -191:  # partition EOF
                    break
                fail(str(m.error()))
            got.append((m.offset(), m.key().decode(), m.value().decode()))
        c.close()
        return got

    total = rounds * keys
    end = time.time() + DEADLINE_S
    while True:
        got = read_all()
        if len(got) < total // 2:
            break
        if time.time() > end:
            fail(f"no compaction: {len(got)} of {total} records remain")
        time.sleep(0.5)
    latest = {}
    for offset, k, v in got:
        latest[k] = v
    if latest != {f"k{k}": f"v{rounds - 1}" for k in range(keys)}:
        fail(f"latest values {latest}")
    offsets = [o for o, _, _ in got]
    if offsets != sorted(set(offsets)):
        fail("offsets out of order")
    print("ok")


SCENARIOS = {f.__name__: f for f in [
    confluent_compacted,
    confluent_roundtrip, confluent_idempotent, confluent_offsets, confluent_admin,
    kafka_python_roundtrip, kafka_python_snappy_lz4, kafka_python_admin, aiokafka_roundtrip,
]}

if __name__ == "__main__":
    if SCENARIO not in SCENARIOS:
        fail(f"unknown scenario; known: {', '.join(SCENARIOS)}")
    SCENARIOS[SCENARIO]()
