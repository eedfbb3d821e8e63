// The OFFICIAL AnyCable client, @anycable/core 1.1.7, in Node against the
// fixture (`cable-fixture`) over AnyCable's extended protocol
// (`actioncable-v1-ext-json`), as far as Keayl implements it so far: the
// protocol is negotiated, `welcome` carries a session id the client keeps,
// pongs are accepted, history requests are answered (with
// `reject_history`: streams keep no history yet, which the client reports
// as `history_not_found`), and after its socket is cut the client
// reconnects by itself (a new session: no restore yet) and subscribes
// again.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';

import WebSocket from 'ws';
import { createCable } from '@anycable/core';

import { uniq } from './lib/cable.mjs';
import { startFixture } from './lib/servers.mjs';

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

  it('pongs keep the connection; a cut socket reconnects with a new session and subscribes again', T, async () => {
    const room = uniq('room');
    const alice = uniq('alice');
    const a = cable(alice);
    const ch = a.subscribeTo('ChatChannel', { room });
    await ch.ensureSubscribed();
    // A second of pings answered with pongs: still connected.
    await new Promise((r) => setTimeout(r, 1_000));
    assert.equal(a.state, 'connected');
    const first = a.sessionId;
    // Cut the socket without a close frame. The client comes back by
    // itself (after its backoff, up to a few seconds) and subscribes again,
    // asking for the history it missed; the server says it has none.
    const reconnected = once(a, 'connect', (ev) => ev.reconnect, 12_000);
    const noHistory = once(ch, 'info', (ev) => ev.type === 'history_not_found', 15_000);
    a.transport.ws.terminate();
    const ev = await reconnected;
    assert.equal(ev.restored, false, 'no session restore yet');
    assert.match(a.sessionId, /^[0-9a-f]{32}$/);
    assert.notEqual(a.sessionId, first);
    await ch.ensureSubscribed();
    await noHistory;
    const got = once(ch, 'message', (m) => m.message === 'after the cut');
    await ch.perform('speak', { message: 'after the cut' });
    assert.deepEqual(await got, { message: 'after the cut', from: alice });
  });
});
