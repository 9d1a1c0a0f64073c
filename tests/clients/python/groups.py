"""Consumer-group scenarios for the Runnel end-to-end tests.

Usage: python groups.py BOOTSTRAP SCENARIO [ARGS...]

Each scenario drives the broker's group coordinator with real clients (librdkafka via
confluent-kafka, kafka-python, aiokafka) and exits non-zero with a message when the
broker misbehaves. Every wait is bounded. Prints "ok" on success.
"""
import queue
import signal
import subprocess
import sys
import threading
import time

BOOT = sys.argv[1]
SCENARIO = sys.argv[2]
ARGS = sys.argv[3:]
DEADLINE_S = 60
PARTITIONS = 4


def fail(msg):
    print(f"FAIL {SCENARIO}: {msg}", file=sys.stderr)
    sys.exit(1)


# ---------------------------------------------------------------- helpers (librdkafka)

def create_topic(name, partitions=PARTITIONS):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": BOOT})
    fs = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    fs[name].result(30)


def produce(topic, per_partition, start=0, partitions=PARTITIONS):
    """Writes `per_partition` records to each partition; values are 'p<partition>-<i>'."""
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": BOOT, "linger.ms": 2})
    for part in range(partitions):
        for i in range(start, start + per_partition):
            p.produce(topic, key=f"k{i}".encode(), value=f"p{part}-{i}".encode(), partition=part)
    if p.flush(30) != 0:
        fail("records left unflushed")


def consumer(group, **extra):
    from confluent_kafka import Consumer
    conf = {
        "bootstrap.servers": BOOT,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "topic.metadata.refresh.interval.ms": 1000,
    }
    conf.update(extra)
    return Consumer(conf)


def poll_until(consumers, done, what, seconds=DEADLINE_S, sink=None):
    """Polls every consumer in turn until `done()` holds; `sink(i, msg)` gets records."""
    end = time.time() + seconds
    while time.time() < end:
        for i, c in enumerate(consumers):
            m = c.poll(0.1)
            if m is None:
                continue
            if m.error():
                fail(f"{what}: {m.error()}")
            if sink is not None:
                sink(i, m)
        if done():
            return
    fail(f"timed out waiting for {what}")


def partitions_of(c):
    return sorted(tp.partition for tp in c.assignment())


# ---------------------------------------------------------------- confluent-kafka

def competing():
    """Two consumers of one group on a 4-partition topic get 2 partitions each, and
    between them read every record exactly once."""
    topic = "competing"
    create_topic(topic)
    a, b = consumer("workers"), consumer("workers")
    a.subscribe([topic])
    b.subscribe([topic])
    poll_until([a, b], lambda: len(partitions_of(a)) == 2 and len(partitions_of(b)) == 2,
               "two members with two partitions each")
    pa, pb = partitions_of(a), partitions_of(b)
    if sorted(pa + pb) != [0, 1, 2, 3]:
        fail(f"assignments overlap or miss: {pa} {pb}")
    # Produced once the group is stable: no rebalance can hand a record to both.
    produce(topic, 10)
    seen = {0: [], 1: []}
    poll_until([a, b], lambda: len(seen[0]) + len(seen[1]) >= 40, "all 40 records",
               sink=lambda i, m: seen[i].append((m.partition(), m.offset())))
    every = sorted(seen[0] + seen[1])
    if len(every) != 40 or len(set(every)) != 40:
        fail(f"{len(every)} deliveries of {len(set(every))} records, expected 40 once each")
    if {p for p, _ in seen[0]} != set(pa) or {p for p, _ in seen[1]} != set(pb):
        fail("a consumer read a partition it was not assigned")
    a.close()
    b.close()
    print("ok")


def fanout():
    """Two groups on the same topic each receive every record."""
    topic = "fanout"
    create_topic(topic)
    produce(topic, 5)
    x, y = consumer("billing"), consumer("shipping")
    x.subscribe([topic])
    y.subscribe([topic])
    seen = {0: set(), 1: set()}
    poll_until([x, y], lambda: len(seen[0]) == 20 and len(seen[1]) == 20,
               "both groups to read all 20 records",
               sink=lambda i, m: seen[i].add(m.value()))
    if seen[0] != seen[1]:
        fail("the groups saw different records")
    x.close()
    y.close()
    print("ok")


def leave():
    """When one consumer closes (LeaveGroup), the survivor owns all 4 partitions within
    a few seconds, far below the session timeout."""
    topic = "leave"
    create_topic(topic)
    a = consumer("leavers", **{"session.timeout.ms": 30000})
    b = consumer("leavers", **{"session.timeout.ms": 30000})
    a.subscribe([topic])
    b.subscribe([topic])
    poll_until([a, b], lambda: len(partitions_of(a)) == 2 and len(partitions_of(b)) == 2,
               "two partitions each")
    b.close()
    start = time.time()
    poll_until([a], lambda: partitions_of(a) == [0, 1, 2, 3], "the survivor to own all", seconds=15)
    took = time.time() - start
    if took > 10:
        fail(f"took {took:.1f}s: the leave did not trigger a rebalance")
    a.close()
    print("ok")


def crash_child():
    """Run as a separate process by `crash`: joins, says which partitions it got, then
    reads and commits all 10 records of each, reports, and waits to be killed."""
    topic = ARGS[0]
    c = consumer("crashers")
    c.subscribe([topic])
    end = time.time() + DEADLINE_S
    read = {}
    said_assigned = False
    while time.time() < end:
        m = c.poll(0.1)
        if m is not None and not m.error():
            read[m.partition()] = m.offset() + 1
            c.commit(message=m, asynchronous=False)
        mine = partitions_of(c)
        if len(mine) == 2 and not said_assigned:
            print("assigned " + " ".join(map(str, mine)), flush=True)
            said_assigned = True
        if said_assigned and all(read.get(p) == 10 for p in mine):
            print("committed " + " ".join(f"{p}:{read[p]}" for p in mine), flush=True)
            time.sleep(DEADLINE_S)
            return
    fail("child never settled with two partitions")


def crash():
    """A consumer killed with SIGKILL: after the session timeout the survivor owns all 4
    partitions and resumes the dead one's partitions from its committed offsets."""
    topic = "crash"
    create_topic(topic)
    a = consumer("crashers")
    a.subscribe([topic])
    child = subprocess.Popen([sys.executable, __file__, BOOT, "crash_child", topic],
                             stdout=subprocess.PIPE, text=True)
    try:
        got = {}

        def sink(_, m):
            got.setdefault(m.partition(), []).append(m.offset())

        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(l) for l in child.stdout], daemon=True).start()

        def child_says(word):
            # Keep polling meanwhile: librdkafka serves rebalances inside poll().
            end = time.time() + DEADLINE_S
            while time.time() < end:
                try:
                    line = lines.get_nowait().split()
                except queue.Empty:
                    m = a.poll(0.1)
                    if m is not None and not m.error():
                        sink(0, m)
                    continue
                if not line or line[0] != word:
                    fail(f"child said {line}, expected {word}")
                return line[1:]
            fail(f"child never said {word}")

        theirs = [int(p) for p in child_says("assigned")]
        poll_until([a], lambda: len(partitions_of(a)) == 2, "the in-process member's share")
        if sorted(theirs + partitions_of(a)) != [0, 1, 2, 3]:
            fail(f"split {theirs} / {partitions_of(a)}")
        produce(topic, 10)
        committed = {int(p): int(o) for p, o in (x.split(":") for x in child_says("committed"))}
        if committed != {p: 10 for p in theirs}:
            fail(f"child committed {committed}")
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        produce(topic, 5, start=10)
        start = time.time()
        poll_until([a], lambda: partitions_of(a) == [0, 1, 2, 3]
                   and all(len(got.get(p, [])) >= 5 for p in theirs),
                   "takeover after the session timeout", sink=sink)
        took = time.time() - start
        for p in theirs:
            if got[p] != list(range(10, 15)):
                fail(f"partition {p} resumed with {got[p]}, committed was 10")
        print(f"takeover after {took:.1f}s", file=sys.stderr)
        a.close()
    finally:
        if child.poll() is None:
            child.kill()
    print("ok")


def commit_and_close():
    """Reads the first 5 records of each partition, commits them with metadata, closes."""
    topic = ARGS[0]
    create_topic(topic)
    produce(topic, 10)
    from confluent_kafka import TopicPartition
    c = consumer("resumers")
    c.subscribe([topic])
    got = {}

    def sink(_, m):
        got.setdefault(m.partition(), []).append(m.offset())

    poll_until([c], lambda: all(len(got.get(p, [])) >= 5 for p in range(PARTITIONS)),
               "five records per partition", sink=sink)
    c.commit(offsets=[TopicPartition(topic, p, 5, metadata=f"meta-{p}") for p in range(PARTITIONS)],
             asynchronous=False)
    c.close()
    print("ok")


def resume():
    """A new consumer of the group continues from the committed offsets, and the commit
    metadata comes back unchanged."""
    topic = ARGS[0]
    from confluent_kafka import TopicPartition
    c = consumer("resumers")
    committed = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30)
    for tp in committed:
        if tp.offset != 5 or tp.metadata != f"meta-{tp.partition}":
            fail(f"committed {tp.partition}: {tp.offset} {tp.metadata!r}")
    c.subscribe([topic])
    got = {}

    def sink(_, m):
        got.setdefault(m.partition(), []).append(m.offset())

    poll_until([c], lambda: all(len(got.get(p, [])) >= 5 for p in range(PARTITIONS)),
               "the rest of each partition", sink=sink)
    for p, offsets in got.items():
        if offsets != list(range(5, 10)):
            fail(f"partition {p} resumed with {offsets}")
    c.close()
    print("ok")


def static_membership():
    """A static member restarted within the session timeout gets its partitions back,
    and the other member sees no rebalance."""
    topic = "static"
    create_topic(topic)
    events = []
    a = consumer("statics", **{"group.instance.id": "a", "session.timeout.ms": 20000})
    a.subscribe([topic], on_assign=lambda c, ps: events.append("assign"),
                on_revoke=lambda c, ps: events.append("revoke"))
    b = consumer("statics", **{"group.instance.id": "b", "session.timeout.ms": 20000})
    b.subscribe([topic])
    poll_until([a, b], lambda: len(partitions_of(a)) == 2 and len(partitions_of(b)) == 2,
               "two partitions each")
    before_a, before_b = partitions_of(a), partitions_of(b)
    # Let the group settle, then forget the events of forming it.
    poll_until([a, b], lambda: False or time.sleep(0) or True, "settle", seconds=1)
    events.clear()
    b.close()  # a static member does not leave on close
    b = consumer("statics", **{"group.instance.id": "b", "session.timeout.ms": 20000})
    b.subscribe([topic])
    poll_until([a, b], lambda: partitions_of(b) == before_b, "b to get its partitions back",
               seconds=15)
    # Give a rebalance, were one coming, time to show.
    end = time.time() + 3
    while time.time() < end:
        a.poll(0.1)
        b.poll(0.1)
    if partitions_of(a) != before_a:
        fail(f"a's partitions moved: {before_a} -> {partitions_of(a)}")
    if events:
        fail(f"a saw a rebalance: {events}")
    a.close()
    b.close()
    print("ok")


def admin_groups():
    """AdminClient lists and describes groups with members, assignments and offsets."""
    from confluent_kafka import ConsumerGroupState, TopicPartition
    from confluent_kafka.admin import AdminClient
    from confluent_kafka import ConsumerGroupTopicPartitions
    topic = "admin-groups"
    create_topic(topic)
    produce(topic, 3)
    c = consumer("described", **{"client.id": "describer"})
    c.subscribe([topic])
    poll_until([c], lambda: len(partitions_of(c)) == PARTITIONS, "assignment")
    c.commit(offsets=[TopicPartition(topic, p, 2) for p in range(PARTITIONS)], asynchronous=False)
    admin = AdminClient({"bootstrap.servers": BOOT})
    listed = admin.list_consumer_groups(request_timeout=30).result(30)
    ids = {g.group_id: g for g in listed.valid}
    if "described" not in ids:
        fail(f"listed {sorted(ids)}")
    if ids["described"].state != ConsumerGroupState.STABLE:
        fail(f"state {ids['described'].state}")
    desc = admin.describe_consumer_groups(["described"], request_timeout=30)["described"].result(30)
    if len(desc.members) != 1 or desc.members[0].client_id != "describer":
        fail(f"members {desc.members}")
    assigned = sorted(tp.partition for tp in desc.members[0].assignment.topic_partitions)
    if assigned != [0, 1, 2, 3]:
        fail(f"assignment {assigned}")
    if desc.state != ConsumerGroupState.STABLE:
        fail(f"state {desc.state}")
    offsets = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions("described")])
    got = offsets["described"].result(30)
    committed = sorted((tp.partition, tp.offset) for tp in got.topic_partitions)
    if committed != [(p, 2) for p in range(PARTITIONS)]:
        fail(f"offsets {committed}")
    c.close()
    # Empty now: it can be deleted, and its offsets go with it.
    deleted = admin.delete_consumer_groups(["described"], request_timeout=30)
    deleted["described"].result(30)
    listed = admin.list_consumer_groups(request_timeout=30).result(30)
    if "described" in {g.group_id for g in listed.valid}:
        fail("deleted group still listed")
    print("ok")


# ---------------------------------------------------------------- kafka-python, aiokafka

def kafka_python_group():
    """kafka-python joins, consumes, commits, and a second consumer resumes."""
    from kafka import KafkaConsumer, TopicPartition
    topic = "kp-group"
    create_topic(topic, 2)
    produce(topic, 10, partitions=2)

    def read(n):
        c = KafkaConsumer(topic, bootstrap_servers=BOOT, group_id="kp", auto_offset_reset="earliest",
                          enable_auto_commit=False, consumer_timeout_ms=1000, session_timeout_ms=10000)
        got = []
        end = time.time() + DEADLINE_S
        while len(got) < n and time.time() < end:
            for m in c:
                got.append((m.partition, m.offset))
                if len(got) == n:
                    break
        c.commit()
        committed = {p: c.committed(TopicPartition(topic, p)) for p in range(2)}
        c.close()
        return got, committed

    first, committed = read(12)
    if len(first) != 12:
        fail(f"first read {len(first)}")
    rest, _ = read(8)
    if sorted(first + rest) != sorted({(p, o) for p in range(2) for o in range(10)}):
        fail(f"resumed wrongly: first {first} rest {rest} committed {committed}")
    print("ok")


def aiokafka_group():
    """aiokafka joins, consumes, commits, and a second consumer resumes."""
    import asyncio
    from aiokafka import AIOKafkaConsumer
    topic = "aio-group"
    create_topic(topic, 2)
    produce(topic, 10, partitions=2)

    async def read(n):
        c = AIOKafkaConsumer(topic, bootstrap_servers=BOOT, group_id="aio", auto_offset_reset="earliest",
                             enable_auto_commit=False, session_timeout_ms=10000)
        await c.start()
        got = []
        try:
            end = time.time() + DEADLINE_S
            while len(got) < n and time.time() < end:
                batch = await c.getmany(timeout_ms=500, max_records=n - len(got))
                for msgs in batch.values():
                    got.extend((m.partition, m.offset) for m in msgs)
            await c.commit()
        finally:
            await c.stop()
        return got

    first = asyncio.run(read(12))
    rest = asyncio.run(read(8))
    if len(first) != 12 or sorted(first + rest) != sorted((p, o) for p in range(2) for o in range(10)):
        fail(f"first {first} rest {rest}")
    print("ok")


SCENARIOS = {f.__name__: f for f in [
    competing, fanout, leave, crash, crash_child, commit_and_close, resume, static_membership,
    admin_groups, kafka_python_group, aiokafka_group,
]}

if __name__ == "__main__":
    if SCENARIO not in SCENARIOS:
        fail(f"unknown scenario; known: {', '.join(SCENARIOS)}")
    SCENARIOS[SCENARIO]()
