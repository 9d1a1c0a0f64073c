// The web console in a real browser: Debian's chromium (/usr/bin/chromium), driven by
// playwright-core (no browser download). Run by crates/runnel/tests/console.rs:
//
//   node console.js <http-addr> <kafka-addr> <screenshot-dir> <runnel-binary> <example-dir>
//
// against a fresh `runnel serve`. Records are produced and consumed with kcat (and one
// binary record with confluent-kafka from .venv), never through the console's own API
// calls, so the console shows what real clients did. Every step has a deadline; the
// whole run prints `ok` last and exits 0, or prints what failed and exits 1.
//
// Checked: every route renders (main[data-state=ready]) with no console errors, no page
// errors and no failed requests; a topic created with the UI form is listed; keys,
// values and headers are shown as text (script and markup in a value stay text, run
// nothing, add no element), JSON pretty-printed, binary as hex; the start/partition
// controls, the search filter and the produce form work; a group's members and lag
// match the JSON API and what the Kafka protocol reports (OffsetFetch, ListOffsets);
// offsets reset after a preview; the empty group deleted; a topic followed live;
// deleting asks for confirmation first; changes are POST/DELETE;
// screenshots of every page at 1280 px and of the topics page at 390 px.
'use strict';

const { chromium } = require('playwright-core');
const { spawn, spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const [http, kafka, shots, runnelBin, exampleDir] = process.argv.slice(2);
if (!http || !kafka || !shots || !runnelBin || !exampleDir) {
  console.error('usage: node console.js <http-addr> <kafka-addr> <screenshot-dir> <runnel> <example-dir>');
  process.exit(2);
}
const base = `http://${http}`;
const repo = path.resolve(__dirname, '../../..');
const python = path.join(repo, '.venv/bin/python');
const CHROMIUM = '/usr/bin/chromium';

const log = (...a) => console.error(`[${new Date().toISOString().slice(11, 23)}]`, ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}
function equal(actual, expected, what) {
  if (actual !== expected) {
    throw new Error(
      `check failed: ${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`,
    );
  }
}

/** Runs `fn` with a deadline; names the step in the failure. */
async function step(name, ms, fn) {
  log(`step: ${name}`);
  const started = Date.now();
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`step "${name}" not done within ${ms} ms`)), ms);
  });
  try {
    await Promise.race([fn(), deadline]);
  } catch (e) {
    e.message = `${name}: ${e.message}`;
    throw e;
  } finally {
    clearTimeout(timer);
  }
  assertClean(name);
  log(`  done in ${Date.now() - started} ms`);
}

/** Polls `fn` until it returns a truthy value (returned), or throws the last failure. */
async function until(what, ms, fn) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      last = new Error(`${what}: not yet`);
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) {
      last.message = `${what} (gave up after ${ms} ms): ${last.message}`;
      throw last;
    }
    await sleep(200);
  }
}

// ---------------------------------------------------------------- the JSON API

async function api(p) {
  const res = await fetch(`${base}${p}`);
  const body = await res.text();
  if (!res.ok) throw new Error(`GET ${p}: ${res.status} ${body}`);
  return JSON.parse(body);
}
async function apiStatus(p) {
  return (await fetch(`${base}${p}`)).status;
}

// ---------------------------------------------------------------- Kafka clients

/** kcat with a deadline; fails on a non-zero exit. */
function kcat(args, input) {
  const r = spawnSync('kcat', ['-b', kafka, ...args], {
    input,
    timeout: 20000,
    encoding: 'utf8',
  });
  if (r.error || r.status !== 0) {
    throw new Error(
      `kcat ${args.join(' ')}: ${r.error || `exit ${r.status}`}\n${r.stdout}\n${r.stderr}`,
    );
  }
  return r.stdout;
}

/** Produces `lines` ("key\tvalue") to one partition, with headers. */
function produce(topic, partition, lines, headers = []) {
  const args = ['-P', '-t', topic, '-p', String(partition), '-K', '\t', '-X', 'acks=all'];
  for (const h of headers) args.push('-H', h);
  kcat(args, lines.map((l) => `${l}\n`).join(''));
}

/** A record with bytes that are not UTF-8, through confluent-kafka. */
function produceBinary(topic, partition, hex) {
  const code = `
import sys
from confluent_kafka import Producer
p = Producer({"bootstrap.servers": sys.argv[1]})
p.produce(sys.argv[2], value=bytes.fromhex(sys.argv[4]), key=b"bin", partition=int(sys.argv[3]))
assert p.flush(15) == 0
`;
  const r = spawnSync(python, ['-c', code, kafka, topic, String(partition), hex], {
    timeout: 20000,
    encoding: 'utf8',
  });
  if (r.error || r.status !== 0) {
    throw new Error(`binary produce: ${r.error || `exit ${r.status}`}\n${r.stderr}`);
  }
}

/**
 * What the Kafka protocol itself says of a group's offsets on a topic: OffsetFetch for
 * the committed offsets and ListOffsets for the ends, through confluent-kafka (a
 * consumer that never subscribes, so the group is not joined). {partition: {committed, end}}.
 */
function kafkaOffsets(group, topic, partitions) {
  const code = `
import json, sys
from confluent_kafka import Consumer, TopicPartition
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2], "enable.auto.commit": False})
tps = [TopicPartition(sys.argv[3], p) for p in range(int(sys.argv[4]))]
out = {}
for tp in c.committed(tps, timeout=15):
    low, high = c.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=15)
    out[tp.partition] = {"committed": tp.offset, "end": high}
c.close()
print(json.dumps(out))
`;
  const r = spawnSync(python, ['-c', code, kafka, group, topic, String(partitions)], {
    timeout: 40000,
    encoding: 'utf8',
  });
  if (r.error || r.status !== 0) {
    throw new Error(`offsets over Kafka: ${r.error || `exit ${r.status}`}\n${r.stderr}`);
  }
  return JSON.parse(r.stdout);
}

/** A balanced kcat consumer (-G) that commits every 100 ms; killed at the end. */
const consumers = [];
function consumer(group, topic, clientId) {
  const c = spawn(
    'kcat',
    [
      '-b', kafka, '-G', group, '-q',
      '-X', `client.id=${clientId}`,
      '-X', 'auto.offset.reset=earliest',
      '-X', 'auto.commit.interval.ms=100',
      topic,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  c.stderrText = '';
  c.stderr.on('data', (d) => { c.stderrText += d; });
  // A deadline of its own, whatever happens to this script.
  c.deadline = setTimeout(() => c.kill('SIGKILL'), 90000);
  consumers.push(c);
  return c;
}
/** SIGTERM (kcat closes the consumer: a last commit, then it leaves the group). */
async function stop(c) {
  if (c.exitCode !== null || c.signalCode !== null) return;
  const done = new Promise((r) => c.once('exit', r));
  c.kill('SIGTERM');
  const t = setTimeout(() => c.kill('SIGKILL'), 10000);
  await done;
  clearTimeout(t);
  clearTimeout(c.deadline);
}
function killConsumers() {
  for (const c of consumers) {
    clearTimeout(c.deadline);
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
}

// ---------------------------------------------------------------- the browser

const problems = [];
const requests = [];
/** Paths whose failure a step provokes on purpose (the error state). */
const expected = new Set();
const provoked = (url) => [...expected].some((p) => url && url.endsWith(p));

function watch(page, label) {
  page.on('console', (m) => {
    if (m.type() === 'error' && !provoked(m.location().url)) problems.push(`${label}: console error: ${m.text()} (${JSON.stringify(m.location())})`);
  });
  page.on('pageerror', (e) => problems.push(`${label}: page error: ${e.message}`));
  page.on('requestfailed', (r) => {
    const why = r.failure() ? r.failure().errorText : '?';
    // A fetch the console itself cancels (a route left before its data came) is fine.
    if (why === 'net::ERR_ABORTED') return;
    problems.push(`${label}: request failed: ${r.method()} ${r.url()}: ${why}`);
  });
  page.on('request', (r) => requests.push({ method: r.method(), url: r.url() }));
  page.on('response', (r) => {
    if (r.status() >= 400 && !provoked(r.url())) {
      problems.push(`${label}: ${r.request().method()} ${r.url()} answered ${r.status()}`);
    }
  });
}

function assertClean(when) {
  if (problems.length) {
    throw new Error(`problems in the browser (by ${when}):\n  ${problems.join('\n  ')}`);
  }
}

/** Goes to a hash route and waits for it to have rendered its data. */
async function visit(page, hash) {
  const url = `${base}/${hash}`;
  if (page.url() === 'about:blank' || !page.url().startsWith(base)) {
    await page.goto(url);
  } else if (page.url() === url) {
    await page.reload(); // the same hash fires no hashchange: load it again
  } else {
    await page.evaluate((h) => { window.location.hash = h; }, hash.replace(/^#/, ''));
  }
  await ready(page, hash);
}

/** Waits for main[data-state=ready] on route `hash`; fails at once on 'error'. */
async function ready(page, hash) {
  await page.waitForFunction(
    (h) => {
      const m = document.querySelector('main');
      const want = h === '#/' ? ['#/', '', '#'] : [h.split('?')[0]];
      // The route is the hash up to any '?' (a view may keep its controls' state there).
      return want.includes(location.hash.split('?')[0]) && m && ['ready', 'error'].includes(m.dataset.state);
    },
    hash,
    { timeout: 10000 },
  ).catch(async (e) => {
    const state = await page.evaluate(() => [location.hash, document.querySelector('main')?.dataset.state]);
    throw new Error(`${hash} never became ready (hash, state: ${JSON.stringify(state)}): ${e.message}`);
  });
  const state = await page.$eval('main', (m) => m.dataset.state);
  if (state !== 'ready') {
    const err = await page.$eval('#error', (e) => e.textContent).catch(() => '(no #error)');
    throw new Error(`${hash} shows an error: ${err}`);
  }
}

/** Reloads the route until `cond(page)` holds (for views that show changing state). */
async function revisitUntil(page, hash, what, ms, cond) {
  return until(what, ms, async () => {
    await page.reload();
    await ready(page, hash);
    return cond(page);
  });
}

const text = (page, sel) => page.$eval(sel, (e) => e.textContent.trim());
const num = (s) => {
  const digits = String(s).replace(/[\s,_]/g, '');
  check(/^-?\d+$/.test(digits), `${JSON.stringify(s)} is a whole number`);
  return Number(digits);
};
const attr = (s) => JSON.stringify(s); // a quoted attribute value for a selector

async function shot(page, name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
}

function mutations(since) {
  return requests.slice(since).filter((r) => r.url.includes('/api/v1/') && r.method !== 'GET');
}

// ---------------------------------------------------------------- the scenarios

/** The browser's fresh --user-data-dir, removed at the end. */
let profile = null;

async function main() {
  fs.mkdirSync(shots, { recursive: true });
  const run = Date.now().toString(36);
  const topic = `console-${run}`;
  const groupTopic = `console-group-${run}`;
  // Group and client ids are any string a client picks: markup in them must stay text.
  const group = `console-group-${run}<svg onload=window.__xss=4>`;
  const groupHash = `#/groups/${encodeURIComponent(group)}`;
  const nasty = 'console-two<img src=x onerror=window.__xss=3>';

  profile = fs.mkdtempSync(path.join(os.tmpdir(), 'runnel-console-chromium-'));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-dev-shm-usage', // a container's small /dev/shm must not crash the renderer
    ],
    viewport: { width: 1280, height: 800 },
  });
  const page = browser.pages()[0] || (await browser.newPage());
  watch(page, 'desktop');
  try {

    await step('the console is served at /', 10000, async () => {
      const res = await fetch(`${base}/`);
      equal(res.status, 200, 'GET / status');
      check(/text\/html/.test(res.headers.get('content-type') || ''), 'GET / is HTML');
    });

    await step('overview', 15000, async () => {
      await visit(page, '#/');
      const o = await api('/api/v1/overview');
      for (const id of ['#overview', '#version', '#uptime', '#connections', '#topic-count']) {
        check(await page.$(id), `${id} is on the overview`);
      }
      check((await text(page, '#version')).includes(o.version), `#version shows ${o.version}`);
      check(await text(page, '#uptime'), '#uptime shows something');
      equal(num(await text(page, '#connections')), o.connections, '#connections');
      equal(num(await text(page, '#topic-count')), o.topics, '#topic-count');
      check(await page.$('#rates svg, svg#rates'), '#rates is (or holds) an svg');
      const overview = await page.$('nav a[data-nav="overview"]');
      check(overview, 'nav a[data-nav=overview]');
      for (const n of ['topics', 'groups']) check(await page.$(`nav a[data-nav="${n}"]`), `nav a[data-nav=${n}]`);
    });

    await step('create a topic with the form', 15000, async () => {
      await page.click('nav a[data-nav="topics"]');
      await ready(page, '#/topics');
      check(await page.$('#topics'), '#topics table');
      const before = requests.length;
      await page.fill('#create-topic [name="name"]', topic);
      await page.fill('#create-topic [name="partitions"]', '1');
      await page.click('#create-topic [type="submit"], #create-topic button');
      await page.waitForSelector(`#topics tr[data-topic=${attr(topic)}]`, { timeout: 10000 });
      await ready(page, '#/topics');
      const posts = mutations(before);
      check(
        posts.some((r) => r.method === 'POST' && r.url.endsWith('/api/v1/topics')),
        `the form POSTs to /api/v1/topics (saw ${JSON.stringify(posts)})`,
      );
      const t = await api(`/api/v1/topics/${encodeURIComponent(topic)}`);
      equal(t.partitions.length, 1, 'partitions of the created topic');
      const row = `#topics tr[data-topic=${attr(topic)}]`;
      equal(num(await text(page, `${row} .partitions`)), 1, '.partitions of the new topic');
      check(await page.$(`${row} .size`), `${row} .size`);
      check(await page.$(`${row} .end`), `${row} .end`);
    });

    const script = '<script>window.__xss=1</script>';
    const img = '"><img src=x onerror="window.__xss=2">';
    const json = '{"order":17,"items":["a","b"],"paid":true}';
    const headerValue = '<b>bold</b>';
    const binaryHex = 'ff00fe41c3';

    await step('produce with kcat and see the records as text', 30000, async () => {
      produce(topic, 0, [`plain\tplain value`, `xss1\t${script}`, `xss2\t${img}`, `json\t${json}`]);
      produce(topic, 0, [`with-headers\th`], [`trace=${headerValue}`, 'source=kcat']);
      produceBinary(topic, 0, binaryHex);
      await until('6 records in the API', 10000, async () => {
        const t = await api(`/api/v1/topics/${encodeURIComponent(topic)}`);
        return t.partitions[0].high_watermark === 6;
      });

      await visit(page, `#/topics/${topic}`);
      const p0 = '#partitions tr[data-partition="0"]';
      check(await page.$(p0), p0);
      equal(num(await text(page, `${p0} .end`)), 6, 'partition 0 .end');
      equal(num(await text(page, `${p0} .start`)), 0, 'partition 0 .start');
      check(await page.$(`${p0} .size`), `${p0} .size`);
      check(await page.$('#config'), '#config table');
      await shot(page, 'topic');

      await visit(page, `#/topics/${topic}/messages`);
      await page.selectOption('#partition', 'all');
      await page.selectOption('#start', 'oldest');
      await page.click('#load');
      await page.waitForFunction(() => document.querySelectorAll('#messages tr.record').length >= 6, null, { timeout: 10000 });
      await ready(page, `#/topics/${topic}/messages`);
      const rows = await page.$$eval('#messages tr.record', (trs) => trs.map((tr) => ({
        offset: tr.dataset.offset,
        partition: tr.dataset.partition,
        key: tr.querySelector('.key')?.textContent,
        value: tr.querySelector('.value')?.textContent,
        headers: tr.querySelector('.headers')?.textContent,
        timestamp: tr.querySelector('.timestamp')?.textContent,
        pre: tr.querySelector('.value pre')?.textContent ?? null,
      })));
      equal(rows.length, 6, 'rows in #messages');
      const byKey = Object.fromEntries(rows.map((r) => [r.key && r.key.trim(), r]));
      for (const k of ['plain', 'xss1', 'xss2', 'json', 'with-headers', 'bin']) {
        check(byKey[k], `a row with .key ${k} (keys: ${JSON.stringify(rows.map((r) => r.key))})`);
        equal(byKey[k].partition, '0', `data-partition of ${k}`);
        check(byKey[k].timestamp && byKey[k].timestamp.trim(), `.timestamp of ${k}`);
      }
      equal(byKey.xss1.offset, '1', 'data-offset of the second record');
      equal(byKey.xss1.value, script, '.value of the <script> record');
      equal(byKey.xss2.value, img, '.value of the <img onerror> record');
      equal(byKey.plain.value.trim(), 'plain value', '.value of a plain record');
      check(byKey.json.pre !== null, 'a JSON value is in a pre');
      const jsonShown = byKey.json.pre;
      check(jsonShown.includes('\n'), `JSON is pretty-printed (got ${JSON.stringify(jsonShown)})`);
      equal(JSON.stringify(JSON.parse(jsonShown)), json, 'the pretty-printed JSON parses to the value');
      const shownHex = byKey.bin.value.toLowerCase().replace(/[\s:]/g, '');
      check(shownHex.includes(binaryHex), `binary shown as hex ${binaryHex} (got ${JSON.stringify(byKey.bin.value)})`);
      const h = byKey['with-headers'].headers;
      check(h.includes('trace') && h.includes(headerValue), `headers shown as text (got ${JSON.stringify(h)})`);
      check(h.includes('source') && h.includes('kcat'), `both headers shown (got ${JSON.stringify(h)})`);

      await noMarkupRan(page, 'the messages browser');
      equal(await page.$$eval('#messages img, #messages script, #messages b', (e) => e.length), 0,
        'elements made from record data in #messages');
      await shot(page, 'messages');
    });

    await step('messages: start offset, partition, search', 20000, async () => {
      await page.selectOption('#partition', '0');
      await page.selectOption('#start', 'offset');
      await page.fill('#offset', '3');
      await page.click('#load');
      await page.waitForFunction(() => {
        const first = document.querySelector('#messages tr.record');
        return first && first.dataset.offset === '3' && document.querySelector('main').dataset.state === 'ready';
      }, null, { timeout: 10000 });
      const offsets = await page.$$eval('#messages tr.record', (trs) => trs.map((t) => Number(t.dataset.offset)));
      equal(JSON.stringify(offsets), JSON.stringify([3, 4, 5]), 'offsets loaded from offset 3');

      await page.selectOption('#start', 'oldest');
      await page.click('#load');
      await page.waitForFunction(() => document.querySelectorAll('#messages tr.record').length === 6, null, { timeout: 10000 });
      await page.fill('#search', 'onerror');
      await until('search filters the rows', 5000, async () => {
        const visible = await page.locator('#messages tr.record:visible').count();
        return visible === 1;
      });
      equal((await page.locator('#messages tr.record:visible .key').textContent()).trim(), 'xss2', 'the row the search kept');
      await page.fill('#search', '');
      await until('clearing the search shows every row', 5000, async () =>
        (await page.locator('#messages tr.record:visible').count()) === 6);
    });

    await step('produce with the form', 20000, async () => {
      const before = requests.length;
      await page.fill('#produce [name="key"]', 'from-form');
      await page.fill('#produce [name="value"]', '<u>typed</u>');
      await page.fill('#produce [name="headers"]', 'a=1\nb=two');
      await page.click('#produce [type="submit"], #produce button');
      await until('the form record in the API', 10000, async () => {
        const t = await api(`/api/v1/topics/${encodeURIComponent(topic)}`);
        return t.partitions[0].high_watermark === 7;
      });
      const posts = mutations(before);
      check(
        posts.some((r) => r.method === 'POST' && r.url.includes('/records')),
        `the produce form POSTs to .../records (saw ${JSON.stringify(posts)})`,
      );
      const r = await api(`/api/v1/topics/${encodeURIComponent(topic)}/partitions/0/records?offset=6&limit=1`);
      equal(r.records[0].key, 'from-form', 'key of the record produced with the form');
      equal(r.records[0].value, '<u>typed</u>', 'value of the record produced with the form');
      equal(JSON.stringify(r.records[0].headers.map((x) => [x.key, x.value])),
        JSON.stringify([['a', '1'], ['b', 'two']]), 'headers of the record produced with the form');
      await page.selectOption('#partition', 'all');
      await page.selectOption('#start', 'oldest');
      await page.click('#load');
      await page.waitForSelector('#messages tr.record[data-offset="6"]', { timeout: 10000 });
      equal(await page.$eval('#messages tr.record[data-offset="6"] .value', (e) => e.textContent), '<u>typed</u>',
        '.value of the form record');
      equal(await page.$$eval('#messages u', (e) => e.length), 0, 'elements made from the form record');
    });

    const ends = { 0: 5, 1: 3 };
    await step('a group of two kcat consumers: members', 60000, async () => {
      const res = await fetch(`${base}/api/v1/topics`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ name: groupTopic, partitions: 2 }),
      });
      check(res.status < 300 || res.status === 409, `create ${groupTopic}: ${res.status} ${await res.text()}`);
      produce(groupTopic, 0, ['a\t1', 'b\t2', 'c\t3', 'd\t4', 'e\t5']);
      produce(groupTopic, 1, ['f\t6', 'g\t7', 'h\t8']);
      consumer(group, groupTopic, 'console-one');
      consumer(group, groupTopic, nasty);
      // Both members in, each with one partition, everything consumed and committed.
      await until('the group stable with two members and all committed', 40000, async () => {
        const g = await api(`/api/v1/groups/${encodeURIComponent(group)}`);
        const committed = Object.fromEntries(g.offsets.map((o) => [o.partition, o.committed]));
        return g.state === 'Stable' && g.members.length === 2 &&
          g.members.every((m) => m.assignment.length === 1) &&
          committed[0] === ends[0] && committed[1] === ends[1];
      });

      await visit(page, '#/groups');
      const row = `#groups tr[data-group=${attr(group)}]`;
      await revisitUntil(page, '#/groups', 'the group listed with 2 members', 10000, async () =>
        (await page.$(row)) && num(await text(page, `${row} .members`)) === 2);
      check(/stable/i.test(await text(page, `${row} .state`)), `${row} .state is Stable`);
      await shot(page, 'groups');
      await noMarkupRan(page, 'the groups list');

      // The group's link, as the console builds it.
      await page.click(`${row} a`);
      await ready(page, groupHash);
      const g = await api(`/api/v1/groups/${encodeURIComponent(group)}`);
      const members = await page.$$eval('#members tr.member', (trs) => trs.map((tr) => ({
        client: tr.querySelector('.client-id')?.textContent.trim(),
        host: tr.querySelector('.host')?.textContent.trim(),
        assignment: tr.querySelector('.assignment')?.textContent.trim(),
      })));
      equal(members.length, 2, 'tr.member rows');
      equal(JSON.stringify(members.map((m) => m.client).sort()), JSON.stringify(['console-one', nasty].sort()),
        '.client-id of the members');
      for (const m of members) {
        const api_m = g.members.find((x) => x.client_id === m.client);
        check(m.host && api_m && m.host.includes(api_m.client_host.replace(/^\//, '')),
          `.host ${JSON.stringify(m.host)} shows ${api_m && api_m.client_host}`);
        const p = api_m.assignment[0].partition;
        check(m.assignment.includes(groupTopic) && m.assignment.includes(String(p)),
          `.assignment ${JSON.stringify(m.assignment)} names ${groupTopic} ${p}`);
      }
      await checkLag(page, group, groupTopic);
      await noMarkupRan(page, 'the group views');
    });

    await step('a group of two kcat consumers: lag after they stop', 40000, async () => {
      await Promise.all(consumers.map(stop));
      produce(groupTopic, 0, ['i\t9', 'j\t10', 'k\t11']);
      produce(groupTopic, 1, ['l\t12']);
      await until('the new records in the API', 10000, async () => {
        const t = await api(`/api/v1/topics/${encodeURIComponent(groupTopic)}`);
        return t.partitions[0].high_watermark === 8 && t.partitions[1].high_watermark === 4;
      });
      await visit(page, groupHash);
      const lags = await checkLag(page, group, groupTopic);
      equal(JSON.stringify(lags), JSON.stringify({ 0: 3, 1: 1 }), 'lag per partition after 4 more records');
      await revisitUntil(page, groupHash, 'no members after both left', 15000, async () =>
        (await page.$$('#members tr.member')).length === 0);
      await shot(page, 'group');
    });

    await step('reset the empty group\'s offsets: a preview, then for real', 30000, async () => {
      await visit(page, groupHash);
      await page.selectOption('#reset-topic', groupTopic);
      await page.selectOption('#reset-to', 'earliest');
      check(await page.$eval('#reset-execute', (b) => b.disabled), 'reset disabled before a preview');
      const before = await api(`/api/v1/groups/${encodeURIComponent(group)}`);
      await page.click('#reset-preview');
      await page.waitForSelector('#reset-rows tr[data-partition]', { timeout: 5000 });
      for (const p of [0, 1]) {
        const sel = `#reset-rows tr[data-partition=${attr(`${groupTopic}-${p}`)}]`;
        equal(num(await text(page, `${sel} .to`)), 0, `${sel} would go to the start`);
      }
      const after = await api(`/api/v1/groups/${encodeURIComponent(group)}`);
      equal(JSON.stringify(after.offsets), JSON.stringify(before.offsets), 'a preview changes nothing');
      await page.click('#reset-execute');
      await until('the committed offsets at the start', 10000, async () => {
        const g = await api(`/api/v1/groups/${encodeURIComponent(group)}`);
        return g.offsets.every((o) => o.committed === 0);
      });
      await visit(page, groupHash);
      const lags = await checkLag(page, group, groupTopic);
      equal(JSON.stringify(lags), JSON.stringify({ 0: 8, 1: 4 }), 'lag after the reset: everything');
      check(await page.$('#lag-chart polyline'), 'the lag chart');
    });

    await step('follow a topic live', 30000, async () => {
      await visit(page, `#/topics/${encodeURIComponent(groupTopic)}/messages`);
      await page.click('#follow');
      await sleep(500);
      produce(groupTopic, 1, ['live\t<b>followed</b>']);
      await page.waitForSelector('#messages tr.record.live', { timeout: 15000 });
      equal(await text(page, '#messages tr.record.live .value'), '<b>followed</b>', 'the followed record, as text');
      equal(await page.$$('#messages b').then((b) => b.length), 0, 'no markup from the record');
      await page.click('#follow');
    });

    await step('a service states itself; its dead letter is replayed', 60000, async () => {
      // The reference system's loyalty service, as its own process on this broker.
      const svc = spawn(runnelBin, ['example', 'loyalty', '--bootstrap', kafka, '--data-dir', exampleDir, '--log-level', 'warn'], {
        stdio: ['ignore', 'ignore', 'ignore'],
      });
      consumers.push(svc);
      await until('loyalty up in /api/v1/services', 30000, async () => {
        const { services } = await api('/api/v1/services');
        return services.some((x) => x.service === 'loyalty' && x.up === 1);
      });
      // A record loyalty cannot decode: dead-lettered at once.
      produce('orders', 0, ['bad-order\tnot json'], ['ce_type=orderCreated']);
      await until('the dead letter counted', 30000, async () => {
        const { services } = await api('/api/v1/services');
        return services.some((x) => x.service === 'loyalty' && x.dead_letters >= 1);
      });
      await visit(page, '#/services');
      const sec = 'section[data-service="loyalty"]';
      equal(await text(page, `${sec} tr.instance .state`), 'ready', 'the instance\'s state');
      await page.click(`${sec} .show-dead`);
      await page.waitForSelector(`${sec} tr.dead-letter`, { timeout: 10000 });
      equal(await text(page, `${sec} tr.dead-letter .source`), 'orders', 'where the dead letter came from');
      const before = (await api('/api/v1/topics/orders')).partitions.reduce((n, p) => n + p.high_watermark, 0);
      await page.click(`${sec} tr.dead-letter .replay`);
      await page.waitForSelector(`${sec} .replayed`, { timeout: 10000 });
      check((await text(page, `${sec} .replayed`)).startsWith('replayed to orders'), 'replayed to its topic');
      const after = (await api('/api/v1/topics/orders')).partitions.reduce((n, p) => n + p.high_watermark, 0);
      equal(after, before + 1, 'one record more in orders');
      await shot(page, 'services');
      await stop(svc);
    });

    await step('change a topic setting and return it to the default', 20000, async () => {
      await visit(page, `#/topics/${encodeURIComponent(groupTopic)}`);
      // The partitions' end offsets are what a Kafka client is told (ListOffsets).
      const kafkaSays = kafkaOffsets(group, groupTopic, 2);
      for (const p of [0, 1]) {
        equal(num(await text(page, `#partitions tr[data-partition="${p}"] .end`)), kafkaSays[p].end, `partition ${p} .end (ListOffsets over Kafka)`);
      }
      await page.selectOption('#config-form select[name="key"]', 'retention.ms');
      await page.fill('#config-form input[name="value"]', '3600000');
      await page.click('#config-form button[type="submit"]');
      const row = '#config tr[data-setting="retention.ms"]';
      await page.waitForSelector(`${row}.overridden`, { timeout: 10000 });
      equal(await text(page, `${row} .value`), '3600000', 'the new value shown');
      const t = await api(`/api/v1/topics/${encodeURIComponent(groupTopic)}`);
      equal(t.config['retention.ms'].value, '3600000', 'the new value in the API');
      // A value the broker refuses: an error, nothing changed.
      await page.selectOption('#config-form select[name="key"]', 'cleanup.policy');
      await page.fill('#config-form input[name="value"]', 'sometimes');
      const configUrl = `/api/v1/topics/${encodeURIComponent(groupTopic)}/config`;
      expected.add(configUrl);
      await page.click('#config-form button[type="submit"]');
      await page.waitForSelector('main[data-state="error"]', { timeout: 10000 });
      check((await text(page, '#error')).includes('cleanup.policy'), 'the error names the setting');
      expected.delete(configUrl);
      await visit(page, `#/topics/${encodeURIComponent(groupTopic)}`);
      await page.click(`${row} .reset-setting`);
      await page.waitForFunction((r) => !document.querySelector(r).classList.contains('overridden'), `${row}`, { timeout: 10000 });
      equal((await api(`/api/v1/topics/${encodeURIComponent(groupTopic)}`)).config['retention.ms'].overridden, false, 'back to the default');
    });

    await step('the topology: an edge appears with traffic and fades without', 30000, async () => {
      const flowTopic = `flow-${run}`;
      kcat(['-P', '-t', flowTopic, '-X', 'client.id=flow-producer', '-X', 'acks=all'], 'one\ntwo\n');
      const edge = `g.edge[data-edge=${attr(`p|flow-producer->t|${flowTopic}`)}]`;
      // Edges fade after 3 s here (the page's idle= option), not the default 30 s.
      await visit(page, '#/topology?idle=3');
      await page.waitForSelector(edge, { timeout: 10000 });
      check(!(await page.$eval(edge, (e) => e.classList.contains('idle'))), 'a fresh edge is not faded');
      await page.waitForSelector(`${edge}.idle`, { timeout: 15000 });
    });

    await step('every route by the nav, with screenshots', 30000, async () => {
      await visit(page, '#/');
      // Some traffic while the overview polls, so its rates chart has something to draw.
      for (let i = 0; i < 6; i += 1) {
        produce(topic, 0, Array.from({ length: 25 }, (_, j) => `rate-${i}-${j}\tx`));
        await sleep(800);
      }
      check(await page.$('#rates svg, svg#rates'), '#rates is (or holds) an svg');
      await shot(page, 'overview');
      await page.click('nav a[data-nav="topics"]');
      await ready(page, '#/topics');
      for (const t of [topic, groupTopic]) check(await page.$(`#topics tr[data-topic=${attr(t)}]`), `${t} listed`);
      const gt = `#topics tr[data-topic=${attr(groupTopic)}]`;
      equal(num(await text(page, `${gt} .partitions`)), 2, `${gt} .partitions`);
      equal(num(await text(page, `${gt} .end`)), 13, `${gt} .end (the partitions' end offsets added up: 12, and the one followed live)`);
      await shot(page, 'topics');
      await page.click('nav a[data-nav="groups"]');
      await ready(page, '#/groups');
      // The topology (producers -> topics -> groups), linked from the nav too.
      await page.click('nav a[data-nav="topology"]');
      await ready(page, '#/topology');
      await noMarkupRan(page, 'the topology');
      await shot(page, 'topology');
      await page.click('nav a[data-nav="overview"]');
      await ready(page, '#/');
      // Each route loaded directly, as a bookmark would.
      for (const hash of ['#/', '#/topology', '#/topics', `#/topics/${topic}`, `#/topics/${topic}/messages`, '#/groups', groupHash]) {
        await page.goto(`${base}/${hash}`);
        await ready(page, hash);
      }
    });

    await step('a failed request shows the error state', 20000, async () => {
      for (const [hash, url] of [
        ['#/topics/no-such-topic', '/api/v1/topics/no-such-topic'],
        ['#/groups/no-such-group', '/api/v1/groups/no-such-group'],
      ]) {
        expected.add(url);
        await page.goto(`${base}/${hash}`);
        await page.waitForFunction(() => document.querySelector('main').dataset.state === 'error', null, { timeout: 10000 })
          .catch(async (e) => {
            const state = await page.$eval('main', (m) => m.dataset.state);
            throw new Error(`${hash}: main[data-state] is ${state}, not error: ${e.message}`);
          });
        check(await page.isVisible('#error'), `#error is visible on ${hash}`);
        check(await text(page, '#error'), `#error says what went wrong on ${hash}`);
        expected.delete(url);
      }
    });

    await step('delete the topic, after confirming', 20000, async () => {
      await visit(page, `#/topics/${topic}`);
      const before = requests.length;
      await page.click('#delete-topic');
      await page.waitForSelector('#confirm-delete', { state: 'visible', timeout: 5000 });
      await sleep(300);
      equal(mutations(before).length, 0, 'requests that change state before confirming');
      equal(await apiStatus(`/api/v1/topics/${encodeURIComponent(topic)}`), 200, 'the topic before confirming');
      await page.click('#confirm-delete');
      await page.waitForFunction(() => location.hash.split('?')[0] === '#/topics', null, { timeout: 10000 });
      await ready(page, '#/topics');
      check(
        mutations(before).some((r) => r.method === 'DELETE' && r.url.endsWith(`/api/v1/topics/${encodeURIComponent(topic)}`)),
        `DELETE /api/v1/topics/${topic} (saw ${JSON.stringify(mutations(before))})`,
      );
      equal(await page.$$(`#topics tr[data-topic=${attr(topic)}]`).then((r) => r.length), 0, 'rows of the deleted topic');
      check(await page.$(`#topics tr[data-topic=${attr(groupTopic)}]`), 'the other topic still listed');
      equal(await apiStatus(`/api/v1/topics/${encodeURIComponent(topic)}`), 404, 'the deleted topic in the API');
    });

    await step('delete the empty group, after confirming', 20000, async () => {
      await visit(page, groupHash);
      await page.click('#delete-group');
      equal(await apiStatus(`/api/v1/groups/${encodeURIComponent(group)}`), 200, 'nothing deleted before the confirmation');
      await page.click('#confirm-delete-group');
      await page.waitForFunction(() => location.hash === '#/groups', null, { timeout: 10000 });
      await page.waitForSelector('main[data-state="ready"]', { timeout: 10000 });
      equal(await page.$$(`#groups tr[data-group=${attr(group)}]`).then((r) => r.length), 0, 'the deleted group listed');
      equal(await apiStatus(`/api/v1/groups/${encodeURIComponent(group)}`), 404, 'the deleted group in the API');
    });

    await step('only GET, POST and DELETE to the API', 1000, async () => {
      // The steps above saw each change made by a POST or DELETE; nothing else is sent.
      const odd = requests.filter((r) => r.url.includes('/api/v1/') && !['GET', 'POST', 'DELETE'].includes(r.method));
      equal(odd.length, 0, `other methods to the API: ${JSON.stringify(odd)}`);
    });

    await step('phone width', 20000, async () => {
      const phone = await browser.newPage();
      watch(phone, 'phone');
      await phone.setViewportSize({ width: 390, height: 844 });
      await visit(phone, '#/topics');
      await shot(phone, 'topics-phone');
      const width = await phone.evaluate(() => document.documentElement.scrollWidth);
      if (width > 390) log(`  note: the topics page is ${width} px wide at a 390 px viewport (scrolls sideways)`);
      await phone.close();
    });
  } catch (e) {
    // What the page showed when a step failed, beside the other screenshots.
    await shot(page, 'failed').catch(() => {});
    throw e;
  } finally {
    killConsumers();
    await browser.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

/** Nothing from client data became an element or ran. */
async function noMarkupRan(page, where) {
  equal(await page.evaluate(() => typeof window.__xss), 'undefined', `window.__xss after ${where} (markup ran)`);
  equal(await page.$$eval('main img, main script, main svg[onload]', (e) => e.length), 0,
    `img, script or svg[onload] elements in main after ${where}`);
}

/** The #lag rows against the API: committed and lag as it says, end as the topic says. */
async function checkLag(page, group, topic) {
  const g = await api(`/api/v1/groups/${encodeURIComponent(group)}`);
  const t = await api(`/api/v1/topics/${encodeURIComponent(topic)}`);
  const kafkaSays = kafkaOffsets(group, topic, 2);
  const lags = {};
  for (const p of [0, 1]) {
    const sel = `#lag tr[data-partition=${attr(`${topic}-${p}`)}]`;
    check(await page.$(sel), sel);
    const committed = num(await text(page, `${sel} .committed`));
    const end = num(await text(page, `${sel} .end`));
    const lag = num(await text(page, `${sel} .lag`));
    const o = g.offsets.find((x) => x.topic === topic && x.partition === p);
    check(o, `the API has an offset for ${topic}-${p}`);
    equal(committed, o.committed, `${sel} .committed`);
    equal(end, t.partitions[p].high_watermark, `${sel} .end (the topic's end offset)`);
    equal(end, o.end, `${sel} .end (the group's end offset)`);
    equal(lag, end - committed, `${sel} .lag`);
    equal(lag, o.lag, `${sel} .lag (the API's)`);
    // And what a Kafka client is told over the wire, for the same data.
    equal(committed, kafkaSays[p].committed, `${sel} .committed (OffsetFetch over Kafka)`);
    equal(end, kafkaSays[p].end, `${sel} .end (ListOffsets over Kafka)`);
    lags[p] = lag;
  }
  return lags;
}

// The whole run within 100 s (the Rust test allows 120): a stuck run still ends its
// consumers and, through playwright's exit handler, the browser.
setTimeout(() => {
  killConsumers();
  if (profile) fs.rmSync(profile, { recursive: true, force: true });
  console.log('FAILED: not done within 100 s');
  process.exit(1);
}, 100000).unref();

main().then(
  () => {
    console.log('ok');
    process.exit(0);
  },
  (e) => {
    killConsumers();
    console.log(`FAILED: ${e.stack || e}`);
    process.exit(1);
  },
);
