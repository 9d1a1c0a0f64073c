// kafkajs scenarios, run by crates/runnel-broker/tests/node_clients.rs as
//   node scenarios.js <bootstrap> <scenario>
// Prints "ok" and exits 0 when every check holds; anything else fails the test.
//
// Consumer groups arrive with their own issue, so reads here go through kafkajs's
// cluster and broker objects: the same Fetch and ListOffsets requests its consumer
// sends, without the group around them.
'use strict'

process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1'
const assert = require('assert')
const { Kafka, CompressionTypes, logLevel } = require('kafkajs')

const [bootstrap, scenario] = process.argv.slice(2)
const kafka = new Kafka({
  clientId: 'runnel-kafkajs-test',
  brokers: [bootstrap],
  logLevel: logLevel.NOTHING,
  retry: { retries: 5, initialRetryTime: 100 },
})

// The cluster object kafkajs builds for its producer and consumer.
function cluster() {
  const create = Object.getOwnPropertySymbols(kafka).find(s =>
    s.toString().includes('createCluster')
  )
  return kafka[create]({ allowAutoTopicCreation: false })
}

// Fetches partition 0 of `topic` from `offset` until `count` records arrive or 10 s pass.
async function readAll(topic, count, offset = 0) {
  const c = cluster()
  await c.connect()
  await c.addTargetTopic(topic)
  const leaders = c.findLeaderForPartitions(topic, [0])
  const nodeId = Object.keys(leaders)[0]
  const broker = await c.findBroker({ nodeId })
  const records = []
  let next = BigInt(offset)
  const deadline = Date.now() + 10000
  while (records.length < count && Date.now() < deadline) {
    const res = await broker.fetch({
      maxWaitTime: 200,
      minBytes: 1,
      topics: [{ topic, partitions: [{ partition: 0, fetchOffset: next.toString(), maxBytes: 1 << 20 }] }],
    })
    const p = res.responses[0].partitions[0]
    assert.strictEqual(p.errorCode, 0, `fetch error ${p.errorCode}`)
    for (const m of p.messages) {
      if (BigInt(m.offset) < next) continue // a batch may start before the fetch offset
      records.push(m)
      next = BigInt(m.offset) + 1n
    }
  }
  await c.disconnect()
  assert.strictEqual(records.length, count, `read ${records.length} of ${count} records`)
  return records
}

const str = b => (b === null ? null : b.toString())

// Waits until `done()` holds, polling every 50 ms, for at most `ms`.
async function waitFor(done, what, ms = 30000) {
  const deadline = Date.now() + ms
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(r => setTimeout(r, 50))
  }
}

const scenarios = {
  // Keys, headers and null values through an idempotent producer, uncompressed and
  // gzip (the one codec kafkajs ships), then offsets by time and watermarks.
  async roundtrip() {
    const topic = 'kafkajs-roundtrip'
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 })
    await producer.connect()
    const before = Date.now()
    const plain = await producer.send({
      topic, // auto-created by Metadata
      acks: -1,
      messages: [
        { key: 'k1', value: 'v1', headers: { h: 'x', empty: '' }, partition: 0 },
        { key: null, value: 'no key', partition: 0 },
        { key: 'tomb', value: null, partition: 0 },
      ],
    })
    assert.strictEqual(plain[0].errorCode, 0)
    assert.strictEqual(plain[0].baseOffset, '0')
    const gz = []
    for (let i = 0; i < 50; i++) gz.push({ key: `g${i}`, value: `gzip value ${i}`.repeat(10), partition: 0 })
    const zipped = await producer.send({ topic, acks: -1, compression: CompressionTypes.GZIP, messages: gz })
    assert.strictEqual(zipped[0].baseOffset, '3')
    await producer.disconnect()

    const got = await readAll(topic, 53)
    assert.strictEqual(str(got[0].key), 'k1')
    assert.strictEqual(str(got[0].value), 'v1')
    assert.strictEqual(str(got[0].headers.h), 'x')
    assert.strictEqual(str(got[0].headers.empty), '')
    assert.strictEqual(got[1].key, null)
    assert.strictEqual(str(got[1].value), 'no key')
    assert.strictEqual(str(got[2].key), 'tomb')
    assert.strictEqual(got[2].value, null)
    for (let i = 0; i < 50; i++) {
      assert.strictEqual(got[3 + i].offset, String(3 + i))
      assert.strictEqual(str(got[3 + i].key), `g${i}`)
      assert.strictEqual(str(got[3 + i].value), `gzip value ${i}`.repeat(10))
    }
    // Timestamps are the producer's create time.
    assert.ok(Number(got[0].timestamp) >= before - 1000)

    const admin = kafka.admin()
    await admin.connect()
    const offsets = await admin.fetchTopicOffsets(topic)
    assert.deepStrictEqual(
      offsets.map(o => [o.partition, o.low, o.high]),
      [[0, '0', '53']]
    )
    const byTime = await admin.fetchTopicOffsetsByTimestamp(topic, before - 60000)
    assert.strictEqual(byTime[0].offset, '0')
    const future = await admin.fetchTopicOffsetsByTimestamp(topic, Date.now() + 3600000)
    assert.strictEqual(future[0].offset, '53') // no such record: the log end
    await admin.disconnect()
  },

  // acks=0: kafkajs expects no response, and the records still land in order.
  async acks0() {
    const topic = 'kafkajs-acks0'
    const admin = kafka.admin()
    await admin.connect()
    assert.ok(await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true }))
    await admin.disconnect()
    const producer = kafka.producer()
    await producer.connect()
    for (let i = 0; i < 20; i++) {
      await producer.send({ topic, acks: 0, messages: [{ value: `fire ${i}`, partition: 0 }] })
    }
    await producer.disconnect()
    const got = await readAll(topic, 20)
    got.forEach((m, i) => assert.strictEqual(str(m.value), `fire ${i}`))
  },

  // Competing consumers: two members of one group on 4 partitions get 2 each, and
  // between them read every record once.
  async competing() {
    const topic = 'kafkajs-competing'
    const admin = kafka.admin()
    await admin.connect()
    await admin.createTopics({ topics: [{ topic, numPartitions: 4 }], waitForLeaders: true })
    await admin.disconnect()
    const assigned = new Map()
    const seen = []
    const members = []
    for (const name of ['a', 'b']) {
      const c = kafka.consumer({
        groupId: 'kafkajs-workers',
        sessionTimeout: 10000,
        rebalanceTimeout: 10000,
        heartbeatInterval: 500,
      })
      await c.connect()
      c.on(c.events.GROUP_JOIN, e => {
        assigned.set(name, (e.payload.memberAssignment[topic] || []).slice().sort())
      })
      await c.subscribe({ topic, fromBeginning: true })
      await c.run({
        eachMessage: async ({ partition, message }) => {
          seen.push([name, partition, message.offset])
        },
      })
      members.push(c)
    }
    const two = n => (assigned.get(n) || []).length === 2
    await waitFor(() => two('a') && two('b'), 'two partitions each')
    const all = [...assigned.get('a'), ...assigned.get('b')].sort()
    assert.deepStrictEqual(all, [0, 1, 2, 3])

    const producer = kafka.producer()
    await producer.connect()
    const messages = []
    for (let p = 0; p < 4; p++) {
      for (let i = 0; i < 10; i++) messages.push({ value: `p${p}-${i}`, partition: p })
    }
    await producer.send({ topic, acks: -1, messages })
    await producer.disconnect()

    await waitFor(() => seen.length >= 40, 'all 40 records')
    const keys = seen.map(([, p, o]) => `${p}:${o}`)
    assert.strictEqual(new Set(keys).size, 40, 'each record once')
    for (const [name, p] of seen) {
      assert.ok(assigned.get(name).includes(p), `${name} read partition ${p} it was not given`)
    }
    for (const c of members) await c.disconnect()
  },

  // Admin: create, list, describe, grow, read config, delete.
  async admin() {
    const admin = kafka.admin()
    await admin.connect()
    const topic = 'kafkajs-admin'
    assert.strictEqual(
      await admin.createTopics({
        topics: [{ topic, numPartitions: 2, configEntries: [{ name: 'retention.ms', value: '3600000' }] }],
        waitForLeaders: true,
      }),
      true
    )
    // Creating it again is not an error for kafkajs: it answers false.
    assert.strictEqual(await admin.createTopics({ topics: [{ topic, numPartitions: 2 }] }), false)
    assert.ok((await admin.listTopics()).includes(topic))

    const meta = await admin.fetchTopicMetadata({ topics: [topic] })
    assert.strictEqual(meta.topics[0].partitions.length, 2)

    await admin.createPartitions({ topicPartitions: [{ topic, count: 4 }] })
    const grown = await admin.fetchTopicMetadata({ topics: [topic] })
    assert.strictEqual(grown.topics[0].partitions.length, 4)

    const configs = await admin.describeConfigs({
      resources: [{ type: 2 /* TOPIC */, name: topic, configNames: ['retention.ms'] }],
      includeSynonyms: false,
    })
    const entry = configs.resources[0].configEntries.find(e => e.configName === 'retention.ms')
    assert.strictEqual(entry.configValue, '3600000')

    await assert.rejects(
      admin.createTopics({ topics: [{ topic: 'bad name!', numPartitions: 1 }] }),
      // kafkajs wraps per-topic errors in an aggregate.
      e => (e.errors || [e]).some(x => x.type === 'INVALID_TOPIC_EXCEPTION')
    )

    await admin.deleteTopics({ topics: [topic] })
    assert.ok(!(await admin.listTopics()).includes(topic))
    await admin.disconnect()
  },
}

const run = scenarios[scenario]
if (!run) {
  console.error(`unknown scenario ${scenario}; known: ${Object.keys(scenarios).join(', ')}`)
  process.exit(2)
}
run().then(
  () => {
    console.log('ok')
    process.exit(0)
  },
  e => {
    console.error(e && e.stack ? e.stack : e)
    process.exit(1)
  }
)
