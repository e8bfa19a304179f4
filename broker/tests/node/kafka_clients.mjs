// KafkaJS (npm, pure JavaScript Kafka client) against fjord's Kafka
// listener: admin create / describe / delete topics, an idempotent
// producer with keys and headers, a consumer group of two members sharing
// the partitions and committing, a new member resuming from the commits,
// group describe / list / delete.
//
// Usage: node kafka_clients.mjs HOST:PORT
// Exits 0 when every check passed; prints what failed otherwise. Every wait
// has a deadline and the whole run a watchdog: it never hangs. No timing
// assertions.

import assert from "node:assert/strict";
import { Kafka, logLevel } from "kafkajs";

const WATCHDOG_MS = 240_000;
const WAIT_MS = 60_000;
const PARTITIONS = 3;

const broker = process.argv[2];
if (!broker) {
  console.error("usage: node kafka_clients.mjs HOST:PORT");
  process.exit(2);
}
const watchdog = setTimeout(() => {
  console.error(`watchdog: still running after ${WATCHDOG_MS} ms`);
  process.exit(3);
}, WATCHDOG_MS);

const kafka = new Kafka({
  clientId: "kafkajs-test",
  brokers: [broker],
  logLevel: logLevel.WARN,
  retry: { retries: 10 },
});

function step(text) {
  console.log(`--- ${text}`);
}

async function until(what, predicate) {
  const deadline = Date.now() + WAIT_MS;
  while (!(await predicate())) {
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function record(i) {
  return {
    key: `key-${i % 11}`,
    value: `value-${i}`,
    headers: { seq: `${i}`, origin: "kafkajs" },
  };
}

async function produce(producer, topic, from, count) {
  const messages = [];
  for (let i = from; i < from + count; i++) {
    messages.push(record(i));
  }
  // Several requests, so batches go to every partition more than once.
  for (let start = 0; start < messages.length; start += 50) {
    const sent = await producer.send({
      topic,
      acks: -1,
      messages: messages.slice(start, start + 50),
    });
    for (const r of sent) {
      assert.equal(r.errorCode, 0, `produce error ${JSON.stringify(r)}`);
    }
  }
  return new Set(messages.map((m) => `${m.key}=${m.value}`));
}

/// A group member: consumes with manual commits after each message and
/// records what it saw and its latest assignment.
async function member(name, topic, groupId) {
  const consumer = kafka.consumer({
    groupId,
    sessionTimeout: 30_000,
    heartbeatInterval: 1_000,
    rebalanceTimeout: 30_000,
  });
  const state = { name, consumer, seen: [], assignment: null, joins: 0 };
  consumer.on(consumer.events.GROUP_JOIN, (e) => {
    state.assignment = (e.payload.memberAssignment[topic] || []).slice().sort();
    state.joins += 1;
  });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ topic: t, partition, message }) => {
      const headers = Object.fromEntries(
        Object.entries(message.headers).map(([k, v]) => [k, v.toString()]),
      );
      const value = message.value.toString();
      assert.equal(headers.origin, "kafkajs");
      assert.equal(`value-${headers.seq}`, value);
      state.seen.push({ partition, text: `${message.key}=${value}` });
      await consumer.commitOffsets([
        { topic: t, partition, offset: (BigInt(message.offset) + 1n).toString() },
      ]);
    },
  });
  return state;
}

async function main() {
  const topic = "kafkajs-events";
  const groupId = "kafkajs-group";
  const admin = kafka.admin();
  await admin.connect();

  step("admin: create and describe a topic");
  const created = await admin.createTopics({
    topics: [{ topic, numPartitions: PARTITIONS, replicationFactor: 1 }],
    waitForLeaders: true,
  });
  assert.equal(created, true, "the topic is new");
  const meta = await admin.fetchTopicMetadata({ topics: [topic] });
  assert.equal(meta.topics[0].partitions.length, PARTITIONS);
  const configs = await admin.describeConfigs({
    includeSynonyms: false,
    resources: [{ type: 2, name: topic }],
  });
  const names = configs.resources[0].configEntries.map((c) => c.configName);
  assert.ok(names.includes("retention.ms"), `configs: ${names}`);

  step("idempotent producer, acks=all");
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();

  step("two group members share the partitions");
  const a = await member("a", topic, groupId);
  const b = await member("b", topic, groupId);
  await until("both members assigned disjoint shares of every partition", () => {
    const all = [...(a.assignment || []), ...(b.assignment || [])];
    return (
      a.assignment?.length > 0 &&
      b.assignment?.length > 0 &&
      all.length === PARTITIONS &&
      new Set(all).size === PARTITIONS
    );
  });
  const first = await produce(producer, topic, 0, 300);
  await until("300 records consumed", () => a.seen.length + b.seen.length >= first.size);
  for (const m of [a, b]) {
    for (const s of m.seen) {
      assert.ok(m.assignment.includes(s.partition), `${m.name} read a partition it does not own`);
    }
  }
  const firstSeen = [...a.seen, ...b.seen].map((s) => s.text);
  assert.equal(firstSeen.length, first.size, "nothing delivered twice");
  assert.deepEqual(new Set(firstSeen), first);

  step("group describe and list");
  const described = await admin.describeGroups([groupId]);
  const group = described.groups[0];
  assert.equal(group.state, "Stable");
  assert.equal(group.protocolType, "consumer");
  assert.equal(group.members.length, 2);
  const listed = await admin.listGroups();
  assert.ok(listed.groups.some((g) => g.groupId === groupId), JSON.stringify(listed));
  const offsets = await admin.fetchOffsets({ groupId, topics: [topic] });
  const committed = offsets[0].partitions.reduce((n, p) => n + Number(p.offset), 0);
  assert.equal(committed, first.size, `committed offsets ${JSON.stringify(offsets)}`);

  step("members leave; a new member resumes from the commits");
  await a.consumer.disconnect();
  await b.consumer.disconnect();
  const second = await produce(producer, topic, 300, 100);
  const c = await member("c", topic, groupId);
  await until("100 new records consumed", () => c.seen.length >= second.size);
  await new Promise((resolve) => setTimeout(resolve, 500));
  assert.equal(c.seen.length, second.size, "no committed record came back");
  assert.deepEqual(new Set(c.seen.map((s) => s.text)), second);
  await c.consumer.disconnect();
  await producer.disconnect();

  step("delete the group and the topic");
  await admin.deleteGroups([groupId]);
  await admin.deleteTopics({ topics: [topic] });
  const after = await admin.listTopics();
  assert.ok(!after.includes(topic), `topics after delete: ${after}`);
  await admin.disconnect();
  console.log("kafkajs: all checks passed");
}

main()
  .then(() => {
    clearTimeout(watchdog);
    process.exit(0);
  })
  .catch((error) => {
    console.error("FAILED:", error);
    process.exit(1);
  });
