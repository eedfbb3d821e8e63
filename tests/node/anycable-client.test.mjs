// The OFFICIAL AnyCable client, @anycable/core 1.1.7, in Node against the
// fixture (`cable-fixture`) over AnyCable's extended protocol
// (`actioncable-v1-ext-json`): the protocol is negotiated, `welcome`
// carries a session id the client keeps, broadcasts carry positions, and
// after its socket is cut without a close frame the client reconnects by
// itself, its session is restored, and it receives exactly the messages
// broadcast meanwhile, in order, once. A fixture with a pong timeout
// keeps a client that pongs and drops one that does not (`no_pong`).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';

import WebSocket from 'ws';
import { createCable } from '@anycable/core';

import { uniq } from './lib/cable.mjs';
import { postBroadcast, startFixture } from './lib/servers.mjs';

const T = { timeout: 30_000 };

/** Resolves with the first `event` of `emitter` that passes `pred`. */
function once(emitter, event, pred = () => true, ms = 5_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      unbind();
      reject(new Error(`no ${event} within ${ms} ms`));
    }, ms);
    const unbind = emitter.on(event, (arg) => {
      if (!pred(arg)) return;
      clearTimeout(timer);
      unbind();
      resolve(arg);
    });
  });
}

describe('@anycable/core 1.1.7 (actioncable-v1-ext-json) against cable-fixture', () => {
  let srv;
  const cables = [];
  const cable = (user) => {
    const c = createCable(`${srv.ws}/cable?token=${encodeURIComponent(user)}`, {
      protocol: 'actioncable-v1-ext-json',
      protocolOptions: { pongs: true },
      websocketImplementation: WebSocket,
      logLevel: 'error',
    });
    cables.push(c);
    return c;
  };

  before(async () => {
    srv = await startFixture({ tickEvery: 0.2, pingInterval: 0.5 });
  });
  after(async () => {
    for (const c of cables) c.disconnect();
    await srv?.stop();
  });

  it('connects with a session id, subscribes, and a speak reaches both clients', T, async () => {
    const room = uniq('room');
    const alice = uniq('alice');
    const a = cable(alice);
    const b = cable(uniq('bob'));
    const ca = a.subscribeTo('ChatChannel', { room });
    const cb = b.subscribeTo('ChatChannel', { room });
    await Promise.all([ca.ensureSubscribed(), cb.ensureSubscribed()]);
    assert.match(a.sessionId, /^[0-9a-f]{32}$/);
    assert.match(b.sessionId, /^[0-9a-f]{32}$/);
    assert.notEqual(a.sessionId, b.sessionId);
    const gotA = once(ca, 'message', (m) => m.message === 'hello over ext');
    const gotB = once(cb, 'message', (m) => m.message === 'hello over ext');
    await ca.perform('speak', { message: 'hello over ext' });
    assert.deepEqual(await gotA, { message: 'hello over ext', from: alice });
    assert.deepEqual(await gotB, { message: 'hello over ext', from: alice });
  });

  it('a cut socket reconnects, restores its session and gets exactly what it missed', T, async () => {
    const room = uniq('room');
    const a = cable(uniq('alice'));
    const ch = a.subscribeTo('ChatChannel', { room });
    await ch.ensureSubscribed();
    const got = [];
    ch.on('message', (m) => got.push(m.n));
    const broadcast = async (from, to) => {
      for (let n = from; n <= to; n++) {
        const res = await postBroadcast(srv.base, { stream: `room:${room}`, data: JSON.stringify({ n }) });
        assert.ok(res.status >= 200 && res.status < 300, `${res.status} ${res.body}`);
      }
    };
    const until = async (n) => {
      const deadline = Date.now() + 15_000;
      while (got.length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    };
    await broadcast(1, 3);
    await until(3);
    assert.deepEqual(got, [1, 2, 3]);
    const first = a.sessionId;
    // Cut the socket without a close frame; broadcasts go on while the
    // client is away (it comes back by itself after its backoff).
    const reconnected = once(a, 'connect', (ev) => ev.reconnect, 15_000);
    a.transport.ws.terminate();
    await broadcast(4, 8);
    const ev = await reconnected;
    assert.equal(ev.restored, true, 'the session is restored');
    assert.match(a.sessionId, /^[0-9a-f]{32}$/);
    assert.notEqual(a.sessionId, first, 'a restored session gets a new id');
    await broadcast(9, 12);
    await until(12);
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(got, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], 'none lost, none twice, in order');
  });
});

describe('cable-fixture --pong-timeout with @anycable/core 1.1.7', () => {
  let srv;
  before(async () => {
    srv = await startFixture({ tickEvery: 0.2, pingInterval: 0.3, pongTimeout: 1 });
  });
  after(async () => {
    await srv?.stop();
  });

  it('a client that pongs stays; a client that does not is disconnected with no_pong', T, async () => {
    const c = createCable(`${srv.ws}/cable?token=p`, {
      protocol: 'actioncable-v1-ext-json',
      protocolOptions: { pongs: true },
      websocketImplementation: WebSocket,
      logLevel: 'error',
    });
    try {
      const ch = c.subscribeTo('HistoryChannel');
      await ch.ensureSubscribed();
      const first = c.sessionId;
      // Raw: the same protocol, never a pong.
      const raw = new WebSocket(`${srv.ws}/cable`, 'actioncable-v1-ext-json');
      const frames = [];
      raw.on('message', (d) => frames.push(JSON.parse(String(d))));
      const closed = new Promise((r) => raw.on('close', r));
      await new Promise((r) => setTimeout(r, 2_500));
      assert.equal(c.state, 'connected');
      assert.equal(c.sessionId, first, 'never reconnected');
      await closed;
      const last = frames[frames.length - 1];
      assert.deepEqual(last, { type: 'disconnect', reason: 'no_pong', reconnect: true });
    } finally {
      c.disconnect();
    }
  });
});
