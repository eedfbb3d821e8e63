// Presence and whispers against cable-fixture, frame by frame, over the
// extended protocol: PresenceChannel (presence stream `presence_room`),
// WhisperChannel (whisper stream `whisper_room`), `$pubsub` with public and
// signed names (key s3Krit). One process in memory first, then two processes
// sharing Redis (skipped loudly without Redis; a failure in CI).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';

import WebSocket from 'ws';
import { createCable } from '@anycable/core';

import { signStreamName, uniq } from './lib/cable.mjs';
import { ExtClient, presence } from './lib/ext-client.mjs';
import { delay, requireService, startFixture } from './lib/servers.mjs';

const T = { timeout: 30_000 };
const TTL = 1; // --presence-ttl, seconds

const PRESENCE = JSON.stringify({ channel: 'PresenceChannel' });
const WHISPER = JSON.stringify({ channel: 'WhisperChannel' });

/** Frames of the presence set of `id` other tests left: the room is shared,
 * so each test uses its own presence ids and matches on them. */
const join = (c, id, info = null) => c.send({ command: 'join', identifier: PRESENCE, presence: { id, info } });
const leave = (c) => c.send({ command: 'leave', identifier: PRESENCE });
const info = async (c, identifier = PRESENCE) => {
  await c.send({ command: 'presence', identifier, data: { return_records: true } });
  return (await c.next(presence(identifier, 'info'))).message;
};
const idsOf = (message) => message.records.map((r) => r.id);

/** Poll `check` until it returns something truthy (5 s at most). */
async function waitFor(check, what = 'condition') {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const v = check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(20);
  }
}

describe('presence and whispers in one process', () => {
  let srv;
  before(async () => {
    srv = await startFixture({ presenceTtl: TTL });
  });
  after(async () => {
    await srv?.stop();
  });
  const open = () => ExtClient.open(`${srv.ws}/cable`);

  it('join, info and leave: events to every subscriber, the joiner included', T, async () => {
    const [a, b] = [await open(), await open()];
    try {
      await a.subscribe(PRESENCE);
      await b.subscribe(PRESENCE);
      const jack = uniq('jack');
      await join(a, jack, { name: 'Jack' });
      for (const c of [a, b]) {
        const f = await c.next(presence(PRESENCE, 'join', { id: jack }));
        assert.deepEqual(f.message, { type: 'join', id: jack, info: { name: 'Jack' } });
      }
      const set = await info(b);
      assert.ok(idsOf(set).includes(jack), JSON.stringify(set));
      assert.equal(set.total, set.records.length);
      assert.deepEqual(set.records.find((r) => r.id === jack), { id: jack, info: { name: 'Jack' } });
      // return_records false: the count only.
      await b.send({ command: 'presence', identifier: PRESENCE, data: { return_records: false } });
      const counted = (await b.next(presence(PRESENCE, 'info'))).message;
      assert.equal(counted.records, undefined);
      assert.equal(counted.total, set.total);
      await leave(a);
      for (const c of [a, b]) {
        assert.deepEqual((await c.next(presence(PRESENCE, 'leave', { id: jack }))).message, { type: 'leave', id: jack });
      }
      assert.ok(!idsOf(await info(b)).includes(jack));
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('one id, two sessions: one join, and a leave only when the last session goes', T, async () => {
    const [a, b, watcher] = [await open(), await open(), await open()];
    try {
      for (const c of [a, b, watcher]) await c.subscribe(PRESENCE);
      const id = uniq('twice');
      await join(a, id, { tab: 1 });
      await watcher.next(presence(PRESENCE, 'join', { id }));
      await join(b, id, { tab: 2 });
      await leave(a);
      const noise = await watcher.within(TTL * 1000 + 800, (f) => f.message?.id === id);
      assert.deepEqual(noise, [], 'no second join, no leave while b is there');
      await leave(b);
      await watcher.next(presence(PRESENCE, 'leave', { id }));
    } finally {
      for (const c of [a, b, watcher]) await c.close();
    }
  });

  it('join attached to subscribe; a disconnect leaves after the TTL; a reload within it does not flicker', T, async () => {
    const watcher = await open();
    try {
      await watcher.subscribe(PRESENCE);
      const id = uniq('reload');
      const tab = await open();
      await tab.subscribe(PRESENCE, { presence: { id, info: { v: 1 } } });
      await watcher.next(presence(PRESENCE, 'join', { id }));
      // A reload: the socket goes, a new one joins within the TTL.
      await tab.kill();
      const again = await open();
      await again.subscribe(PRESENCE, { presence: { id, info: { v: 2 } } });
      const flicker = await watcher.within(TTL * 1000 + 1_000, (f) => f.message?.id === id);
      assert.deepEqual(flicker, [], 'neither a leave nor a second join');
      // The record carries the latest info.
      assert.deepEqual((await info(watcher)).records.find((r) => r.id === id), { id, info: { v: 2 } });
      const closedAt = Date.now();
      await again.close();
      await watcher.next(presence(PRESENCE, 'leave', { id }), 5_000);
      const waited = Date.now() - closedAt;
      assert.ok(waited >= TTL * 1000 - 150, `left ${waited} ms after the disconnect, before the TTL`);
    } finally {
      await watcher.close();
    }
  });

  it('presence requests without a presence stream get an error frame; failed joins none; the socket stays', T, async () => {
    const c = await open();
    try {
      await c.subscribe(WHISPER);
      await c.send({ command: 'presence', identifier: WHISPER, data: {} });
      await c.next(presence(WHISPER, 'error'));
      // A join that cannot be served is refused without a frame (the
      // @anycable/core client would take one for the answer to a pending
      // presence request).
      await c.send({ command: 'join', identifier: WHISPER, presence: { id: 'x' } });
      await c.subscribe(PRESENCE);
      await c.send({ command: 'join', identifier: PRESENCE, presence: { id: { nested: 1 } } });
      await c.send({ command: 'join', identifier: PRESENCE });
      await c.send({ command: 'join', identifier: PRESENCE, presence: { id: 'big', info: 'x'.repeat(2_000) } });
      assert.deepEqual(await c.within(300, (f) => f.type === 'presence'), []);
      const set = await info(c);
      assert.ok(!idsOf(set).includes('big'));
    } finally {
      await c.close();
    }
  });

  it('whispers reach the other subscribers, not the sender, and never come back from history', T, async () => {
    const t0 = Math.floor(Date.now() / 1000) - 1;
    const [a, b, c] = [await open(), await open(), await open()];
    try {
      for (const x of [a, b, c]) await x.subscribe(WHISPER);
      const mark = uniq('typing');
      await a.send({ command: 'whisper', identifier: WHISPER, data: { event: 'typing', user: mark } });
      for (const x of [b, c]) {
        assert.deepEqual(await x.next((f) => f.message?.user === mark), {
          identifier: WHISPER,
          message: { event: 'typing', user: mark },
        });
      }
      assert.deepEqual(await a.within(400, (f) => f.message?.user === mark), [], 'not echoed to its sender');
      // A subscription without a whisper stream: ignored.
      await a.subscribe(PRESENCE);
      await a.send({ command: 'whisper', identifier: PRESENCE, data: { user: `${mark}-p` } });
      assert.deepEqual(await b.within(300, (f) => f.message?.user === `${mark}-p`), []);
      // Not in history: a late subscriber asking since before the whisper.
      const late = await open();
      await late.subscribe(WHISPER, { history: { since: t0 } });
      await late.next((f) => f.type === 'confirm_history' || f.type === 'reject_history');
      assert.deepEqual(await late.within(300, (f) => f.message?.user === mark), []);
      await late.close();
    } finally {
      for (const x of [a, b, c]) await x.close();
    }
  });

  it('$pubsub: public names allow presence and whispers, signed ones presence, tampered ones are rejected', T, async () => {
    const [a, b] = [await open(), await open()];
    try {
      const name = uniq('public');
      const pub = JSON.stringify({ channel: '$pubsub', stream_name: name });
      for (const c of [a, b]) assert.ok((await c.subscribe(pub)).confirmed);
      await a.send({ command: 'join', identifier: pub, presence: { id: 'p1', info: { n: 1 } } });
      await b.next(presence(pub, 'join', { id: 'p1' }));
      assert.deepEqual(idsOf(await info(b, pub)), ['p1']);
      await b.send({ command: 'whisper', identifier: pub, data: { hi: name } });
      assert.deepEqual((await a.next((f) => f.message?.hi === name)).identifier, pub);

      const signedName = uniq('signed');
      const signed = JSON.stringify({ channel: '$pubsub', signed_stream_name: signStreamName(signedName) });
      for (const c of [a, b]) assert.ok((await c.subscribe(signed)).confirmed);
      await a.send({ command: 'join', identifier: signed, presence: { id: 's1' } });
      await b.next(presence(signed, 'join', { id: 's1' }));
      // Whispers on signed streams are off by default.
      await b.send({ command: 'whisper', identifier: signed, data: { hi: signedName } });
      assert.deepEqual(await a.within(400, (f) => f.message?.hi === signedName), []);

      const [b64, digest] = signStreamName(signedName).split('--');
      const tampered = JSON.stringify({
        channel: '$pubsub',
        signed_stream_name: `${b64}--${digest.slice(0, -1)}${digest.endsWith('0') ? '1' : '0'}`,
      });
      assert.equal((await a.subscribe(tampered)).confirmed, false);
      const renamed = JSON.stringify({
        channel: '$pubsub',
        signed_stream_name: `${Buffer.from(JSON.stringify(`${signedName}x`)).toString('base64')}--${digest}`,
      });
      assert.equal((await a.subscribe(renamed)).confirmed, false);
    } finally {
      await a.close();
      await b.close();
    }
  });
});

describe('presence and whispers across two processes on Redis', () => {
  let p1;
  let p2;
  let up = false;
  before(async () => {
    up = await requireService('Redis', 6379);
    if (!up) return;
    const pubsub = `redis://127.0.0.1:6379/0?channel_prefix=${uniq('presence-test')}`;
    p1 = await startFixture({ presenceTtl: TTL, pubsub });
    p2 = await startFixture({ presenceTtl: TTL, pubsub });
  });
  after(async () => {
    await p1?.stop();
    await p2?.stop();
  });

  it('@anycable/core: presence.join, presence.info and whisper across the processes', T, async (t) => {
    if (!up) return t.skip('Redis not reachable');
    const cableOf = (srv) =>
      createCable(`${srv.ws}/cable`, {
        protocol: 'actioncable-v1-ext-json',
        websocketImplementation: WebSocket,
        logLevel: 'error',
      });
    const [ca, cb] = [cableOf(p1), cableOf(p2)];
    try {
      const [pa, pb] = [ca.subscribeTo('PresenceChannel'), cb.subscribeTo('PresenceChannel')];
      const [wa, wb] = [ca.subscribeTo('WhisperChannel'), cb.subscribeTo('WhisperChannel')];
      await Promise.all([pa, pb, wa, wb].map((c) => c.ensureSubscribed()));
      const events = [];
      pb.on('presence', (ev) => events.push(ev));
      const user = uniq('core-user');
      await pa.presence.join(user, { name: 'Core' });
      const joined = await waitFor(() => events.find((e) => e.type === 'join' && e.id === user));
      assert.deepEqual(joined, { type: 'join', id: user, info: { name: 'Core' } });
      const state = await pb.presence.info();
      assert.deepEqual(state[user], { name: 'Core' });
      const heard = [];
      const echoed = [];
      wb.on('message', (m) => heard.push(m));
      wa.on('message', (m) => echoed.push(m));
      await wa.whisper({ event: 'typing', user });
      await waitFor(() => heard.find((m) => m.user === user));
      await delay(300);
      assert.deepEqual(echoed.filter((m) => m.user === user), [], 'the sender does not hear itself');
      await pa.presence.leave();
      await waitFor(() => events.find((e) => e.type === 'leave' && e.id === user));
      // info() keeps its state from the events.
      assert.equal((await pb.presence.info())[user], undefined);
    } finally {
      ca.disconnect();
      cb.disconnect();
    }
  });

  it('joins, info, whispers and leaves cross; a dead process leaves after the TTL', T, async (t) => {
    if (!up) return t.skip('Redis not reachable');
    const a = await ExtClient.open(`${p1.ws}/cable`);
    const b = await ExtClient.open(`${p2.ws}/cable`);
    try {
      await a.subscribe(PRESENCE);
      await b.subscribe(PRESENCE);
      await a.subscribe(WHISPER);
      await b.subscribe(WHISPER);
      const ann = uniq('ann');
      await join(a, ann, { name: 'Ann' });
      await b.next(presence(PRESENCE, 'join', { id: ann }));
      await a.next(presence(PRESENCE, 'join', { id: ann }));
      assert.deepEqual((await info(b)).records.find((r) => r.id === ann), { id: ann, info: { name: 'Ann' } });
      // The same id from the other process: no second join.
      await join(b, ann, { name: 'Ann' });
      await b.send({ command: 'whisper', identifier: WHISPER, data: { typing: ann } });
      assert.deepEqual((await a.next((f) => f.message?.typing === ann)).message, { typing: ann });
      assert.deepEqual(await b.within(300, (f) => f.message?.typing === ann), []);
      assert.deepEqual(await a.within(200, (f) => f.type === 'presence' && f.message?.type === 'join' && f.message.id === ann), []);
      await leave(b);
      // Process 1 dies with a session of `bob` in it: process 2 reaps it.
      const bob = uniq('bob');
      await join(a, bob, null);
      await b.next(presence(PRESENCE, 'join', { id: bob }));
      await p1.kill();
      const gone = Date.now();
      const left = [];
      for (const id of [ann, bob]) left.push((await b.next(presence(PRESENCE, 'leave', { id }), 8_000)).message.id);
      assert.deepEqual(left.sort(), [ann, bob].sort());
      assert.ok(Date.now() - gone < 8_000);
      assert.deepEqual(idsOf(await info(b)).filter((id) => id === ann || id === bob), []);
    } finally {
      await b.close();
      await a.kill().catch(() => {});
    }
  });
});
