// The OFFICIAL Action Cable client, @rails/actioncable 8.1.400, running in
// Node against the fixture (`cable-fixture`) and the demo (`keayl-demo`):
// consumers, subscriptions and their callbacks, perform round trips,
// rejection, remote disconnects with and without reconnect, server restart,
// and the de-facto BenchmarkChannel.
//
// The client's connection monitor reconnects only after `staleThreshold`
// seconds without a frame (6 s by default, with backoff). The fixture pings
// every 0.5 s here, so the fixture tests lower the threshold to 1 s — the
// same knob a Rails app would turn — to keep reconnection tests short.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';

import {
  installBrowserGlobals,
  recordSubscription,
  terminateAllSockets,
} from './lib/actioncable-node.mjs';
import { signStreamName, uniq } from './lib/cable.mjs';
import { delay, postBroadcast, startDemo, startFixture } from './lib/servers.mjs';

const ActionCable = installBrowserGlobals();
const DEFAULT_STALE = ActionCable.ConnectionMonitor.staleThreshold;

const T = { timeout: 10_000 };
const SLOW = { timeout: 20_000 };

/** Consumers created through this are disconnected when the test ends. */
function consumers(t) {
  const list = [];
  t.after(() => {
    for (const c of list) c.disconnect();
  });
  return (url) => {
    const c = ActionCable.createConsumer(url);
    list.push(c);
    return c;
  };
}

describe('@rails/actioncable 8.1.400 against cable-fixture', () => {
  let srv;
  const url = (token) => `${srv.ws}/cable${token === undefined ? '' : `?token=${encodeURIComponent(token)}`}`;

  before(async () => {
    srv = await startFixture({ tickEvery: 0.2, pingInterval: 0.5 });
    ActionCable.ConnectionMonitor.staleThreshold = 1;
  });
  after(async () => {
    ActionCable.ConnectionMonitor.staleThreshold = DEFAULT_STALE;
    terminateAllSockets();
    await srv?.stop();
  });

  it('createConsumer(url) + subscriptions.create(ChatChannel): connected, speak round trip between two consumers', T, async (t) => {
    const create = consumers(t);
    const room = uniq('room');
    const alice = uniq('alice');
    const a = recordSubscription(create(url(alice)), { channel: 'ChatChannel', room });
    const b = recordSubscription(create(url(uniq('bob'))), { channel: 'ChatChannel', room });
    assert.deepEqual((await a.waitFor('connected')).arg, { reconnected: false });
    assert.deepEqual((await b.waitFor('connected')).arg, { reconnected: false });
    assert.equal(a.sub.consumer.connection.getProtocol(), 'actioncable-v1-json');
    assert.ok(a.sub.consumer.connection.isProtocolSupported());
    a.sub.perform('speak', { message: 'hello from the official client' });
    const want = { message: 'hello from the official client', from: alice };
    assert.deepEqual((await a.waitFor('received')).arg, want);
    assert.deepEqual((await b.waitFor('received')).arg, want);
    b.sub.perform('echo', { x: [1, 2] });
    assert.deepEqual((await b.waitFor('received')).arg, { x: [1, 2], action: 'echo' });
  });

  it('send() with no action reaches ChatChannel#receive', T, async (t) => {
    const create = consumers(t);
    const s = recordSubscription(create(url(uniq('alice'))), { channel: 'ChatChannel', room: uniq('room') });
    await s.waitFor('connected');
    s.sub.send({ hello: 'world' });
    assert.deepEqual((await s.waitFor('received')).arg, { received: { hello: 'world' } });
  });

  it('room "forbidden" → rejected(), never connected', T, async (t) => {
    const create = consumers(t);
    const s = recordSubscription(create(url(uniq('alice'))), { channel: 'ChatChannel', room: 'forbidden' });
    await s.waitFor('rejected');
    await delay(600); // past the guarantor's 500 ms retry
    assert.deepEqual(s.events.map((e) => e.name), ['rejected']);
    assert.equal(s.sub.consumer.subscriptions.findAll(s.sub.identifier).length, 0);
  });

  it('FailingChannel → rejected()', T, async (t) => {
    const create = consumers(t);
    const s = recordSubscription(create(url(uniq('alice'))), { channel: 'FailingChannel' });
    await s.waitFor('rejected');
  });

  it('TransmitChannel: "hello" and "world" reach received(), then connected', T, async (t) => {
    const create = consumers(t);
    const s = recordSubscription(create(url(uniq('alice'))), 'TransmitChannel');
    await s.waitFor('connected');
    assert.deepEqual(
      s.events.map((e) => [e.name, e.arg]),
      [
        ['received', 'hello'],
        ['received', 'world'],
        ['connected', { reconnected: false }],
      ],
    );
  });

  it('unsubscribe() stops deliveries', T, async (t) => {
    const create = consumers(t);
    const room = uniq('room');
    const consumer = create(url(uniq('alice')));
    const s = recordSubscription(consumer, { channel: 'ChatChannel', room });
    const probe = recordSubscription(consumer, { channel: 'ChatChannel', room: uniq('probe') });
    await s.waitFor('connected');
    await probe.waitFor('connected');
    await postBroadcast(srv.base, { stream: `room:${room}`, data: '{"n":1}' });
    assert.deepEqual((await s.waitFor('received')).arg, { n: 1 });
    s.sub.unsubscribe();
    probe.sub.perform('echo', { barrier: true });
    await probe.waitFor('received');
    await postBroadcast(srv.base, { stream: `room:${room}`, data: '{"n":2}' });
    await delay(300);
    assert.deepEqual(
      s.events.filter((e) => e.name === 'received').map((e) => e.arg),
      [{ n: 1 }],
    );
  });

  it('Turbo::StreamsChannel with a signed name: connected, receives the HTML string', T, async (t) => {
    const create = consumers(t);
    const name = uniq('turbo');
    const s = recordSubscription(create(url(uniq('alice'))), {
      channel: 'Turbo::StreamsChannel',
      signed_stream_name: signStreamName(name),
    });
    await s.waitFor('connected');
    const html = '<turbo-stream action="remove" target="m1"></turbo-stream>';
    await postBroadcast(srv.base, { stream: name, data: JSON.stringify(html) });
    assert.equal((await s.waitFor('received')).arg, html);
  });

  it('TickerChannel ticks arrive through received()', T, async (t) => {
    const create = consumers(t);
    const s = recordSubscription(create(url(uniq('alice'))), { channel: 'TickerChannel' });
    await s.waitFor('connected');
    for (const n of [1, 2, 3]) assert.deepEqual((await s.waitFor('received')).arg, { tick: n });
  });

  it('token=bad: the client gets disconnected (no reconnect) and never connects', T, async (t) => {
    const create = consumers(t);
    const consumer = create(url('bad'));
    const s = recordSubscription(consumer, { channel: 'ChatChannel', room: uniq('room') });
    assert.deepEqual((await s.waitFor('disconnected')).arg, { willAttemptReconnect: false });
    await delay(1_500);
    assert.ok(!s.events.some((e) => e.name === 'connected'), JSON.stringify(s.events));
    assert.ok(!consumer.connection.monitor.isRunning());
  });

  describe('remote disconnect via ControlChannel kick', { concurrency: true }, () => {
    async function kick(create, user, reconnect) {
      const admin = recordSubscription(create(url(uniq('admin'))), 'ControlChannel');
      await admin.waitFor('connected');
      admin.sub.perform('kick', { user, reconnect });
    }

    it('reconnect:true → disconnected({willAttemptReconnect:true}), then reconnects and re-confirms', SLOW, async (t) => {
      const create = consumers(t);
      const carol = uniq('carol');
      const room = uniq('room');
      const s = recordSubscription(create(url(carol)), { channel: 'ChatChannel', room });
      const other = recordSubscription(create(url(uniq('dave'))), { channel: 'ChatChannel', room });
      await s.waitFor('connected');
      await other.waitFor('connected');
      await kick(create, carol, true);
      assert.deepEqual((await s.waitFor('disconnected')).arg, { willAttemptReconnect: true });
      const again = await s.waitFor('connected', undefined, 10_000);
      assert.deepEqual(again.arg, { reconnected: true });
      assert.ok(!other.events.some((e) => e.name === 'disconnected'), 'other user unaffected');
      s.sub.perform('speak', { message: 'back' });
      assert.deepEqual((await other.waitFor('received')).arg, { message: 'back', from: carol });
    });

    it('reconnect:false → disconnected({willAttemptReconnect:false}) and stays closed', SLOW, async (t) => {
      const create = consumers(t);
      const carol = uniq('carol');
      const consumer = create(url(carol));
      const s = recordSubscription(consumer, { channel: 'ChatChannel', room: uniq('room') });
      await s.waitFor('connected');
      await kick(create, carol, false);
      assert.deepEqual((await s.waitFor('disconnected')).arg, { willAttemptReconnect: false });
      await delay(3_000); // > 2 poll intervals at staleThreshold 1 s
      assert.deepEqual(s.events.map((e) => e.name), ['connected', 'disconnected']);
      assert.ok(!consumer.connection.isOpen());
      assert.ok(!consumer.connection.monitor.isRunning());
    });
  });
});

describe('@rails/actioncable 8.1.400: server restart', () => {
  let srv;
  before(async () => {
    srv = await startFixture({ tickEvery: 0.2, pingInterval: 0.5 });
    ActionCable.ConnectionMonitor.staleThreshold = 1;
  });
  after(async () => {
    ActionCable.ConnectionMonitor.staleThreshold = DEFAULT_STALE;
    terminateAllSockets();
    await srv?.stop();
  });

  it('restart → every consumer is disconnected and reconnects', SLOW, async (t) => {
    const create = consumers(t);
    const room = uniq('room');
    const a = recordSubscription(create(`${srv.ws}/cable?token=${uniq('alice')}`), { channel: 'ChatChannel', room });
    const admin = recordSubscription(create(`${srv.ws}/cable?token=${uniq('admin')}`), 'ControlChannel');
    await a.waitFor('connected');
    await admin.waitFor('connected');
    admin.sub.perform('restart');
    for (const s of [a, admin]) {
      assert.deepEqual((await s.waitFor('disconnected')).arg, { willAttemptReconnect: true });
    }
    for (const s of [a, admin]) {
      assert.deepEqual((await s.waitFor('connected', undefined, 10_000)).arg, { reconnected: true });
    }
    a.sub.perform('echo', { after: 'restart' });
    assert.deepEqual((await a.waitFor('received')).arg, { after: 'restart', action: 'echo' });
  });
});

describe('@rails/actioncable 8.1.400 against keayl-demo (BenchmarkChannel, chat)', () => {
  let srv;
  before(async () => {
    srv = await startDemo();
  });
  after(async () => {
    terminateAllSockets();
    await srv?.stop();
  });

  it('BenchmarkChannel echo returns the same data', T, async (t) => {
    const create = consumers(t);
    const s = recordSubscription(create(`${srv.ws}/cable`), 'BenchmarkChannel');
    await s.waitFor('connected');
    const payload = { a: 1, text: 'ünïcødé <&>', list: [true, null, 2.5], time: Date.now() };
    s.sub.perform('echo', { payload });
    assert.deepEqual((await s.waitFor('received')).arg, { action: 'echo', payload });
  });

  it('BenchmarkChannel broadcast: every subscriber gets {"action":"broadcast",…}, the sender also broadcastResult', T, async (t) => {
    const create = consumers(t);
    const subs = [0, 1, 2].map(() => recordSubscription(create(`${srv.ws}/cable`), 'BenchmarkChannel'));
    for (const s of subs) await s.waitFor('connected');
    const payload = { time: Date.now(), from: 'node' };
    subs[0].sub.perform('broadcast', { payload });
    for (const s of subs) {
      const e = await s.waitFor('received', (m) => m.action === 'broadcast');
      assert.deepEqual(e.arg, { action: 'broadcast', payload });
    }
    const result = await subs[0].waitFor('received', (m) => m.action === 'broadcastResult');
    assert.deepEqual(result.arg, { action: 'broadcastResult', payload });
    await delay(200);
    for (const s of subs.slice(1)) {
      assert.ok(
        !s.events.some((e) => e.arg?.action === 'broadcastResult'),
        'only the sender gets broadcastResult',
      );
    }
  });

  it('the demo ChatChannel: speak {"text"} reaches both consumers; Rails clients get no presence frames', T, async (t) => {
    const create = consumers(t);
    const room = uniq('room');
    const a = recordSubscription(create(`${srv.ws}/cable?name=alice`), { channel: 'ChatChannel', room });
    await a.waitFor('connected');
    const b = recordSubscription(create(`${srv.ws}/cable?name=bob`), { channel: 'ChatChannel', room });
    await b.waitFor('connected');
    a.sub.perform('speak', { text: 'hi bob' });
    const msg = { type: 'message', from: 'alice', text: 'hi bob' };
    for (const s of [a, b]) assert.deepEqual((await s.waitFor('received', (m) => m.type === 'message')).arg, msg);
    // Presence (the demo joins every chat subscription) is an extended-protocol
    // feature: nothing of it reaches @rails/actioncable's `received`.
    for (const s of [a, b]) {
      const odd = s.events.filter((e) => e.name === 'received' && e.arg?.type !== 'message');
      assert.deepEqual(odd, []);
    }
  });

  it('a missing room is rejected by the demo ChatChannel', T, async (t) => {
    const create = consumers(t);
    const s = recordSubscription(create(`${srv.ws}/cable`), { channel: 'ChatChannel' });
    await s.waitFor('rejected');
  });
});
