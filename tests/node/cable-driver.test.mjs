// The connection driver seen from real clients: user code that awaits never
// stops the socket, and close codes reach the client.
//
// - the OFFICIAL @rails/actioncable client, with its default 6 s stale
//   threshold, against cable-fixture with the default 3 s pings, while an
//   action awaits 7 s: no reconnect, broadcasts still arrive at once, and a
//   command sent after the slow one runs after it;
// - `ws` sending an 8 MiB frame (the limit is 64 KiB): it sees close 1009.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';

import WebSocket from 'ws';

import { installBrowserGlobals, recordSubscription, terminateAllSockets } from './lib/actioncable-node.mjs';
import { uniq } from './lib/cable.mjs';
import { startFixture } from './lib/servers.mjs';

const ActionCable = installBrowserGlobals();

describe('a 7 s action, official client, default ping and stale threshold', () => {
  let srv;
  before(async () => {
    srv = await startFixture({ tickEvery: 0.2, pingInterval: 3 });
  });
  after(async () => {
    terminateAllSockets();
    await srv?.stop();
  });

  it('pings keep coming, broadcasts arrive within 100 ms, order is kept, no reconnect', { timeout: 30_000 }, async (t) => {
    const room = uniq('room');
    const alice = ActionCable.createConsumer(`${srv.ws}/cable?token=${uniq('alice')}`);
    const bob = ActionCable.createConsumer(`${srv.ws}/cable?token=${uniq('bob')}`);
    t.after(() => {
      alice.disconnect();
      bob.disconnect();
    });
    const a = recordSubscription(alice, { channel: 'ChatChannel', room });
    const b = recordSubscription(bob, { channel: 'ChatChannel', room });
    await a.waitFor('connected');
    await b.waitFor('connected');
    // Count pings on alice's socket as they arrive.
    const pings = [];
    alice.connection.webSocket.addEventListener('message', (e) => {
      if (JSON.parse(e.data).type === 'ping') pings.push(Date.now());
    });

    const started = Date.now();
    a.sub.perform('slow', { ms: 7000 });
    a.sub.perform('echo', { after: 'slow' });
    await new Promise((r) => setTimeout(r, 1000));
    // Bob speaks while alice's action runs: she hears it at once.
    const spoke = Date.now();
    b.sub.perform('speak', { message: 'during the slow action' });
    const heard = await a.waitFor('received', (m) => m.message === 'during the slow action', 2000);
    assert.ok(heard.t - spoke < 100, `broadcast took ${heard.t - spoke} ms`);

    const done = await a.waitFor('received', (m) => m.slow === 'done', 10_000);
    assert.deepEqual(done.arg, { slow: 'done', ms: 7000 });
    assert.ok(done.t - started >= 7000);
    const echo = await a.waitFor('received', (m) => m.after === 'slow', 2000);
    assert.ok(echo.t >= done.t, 'the command sent after the slow one ran after it');

    // Pings every 3 s throughout (at most one interval plus scheduling slack).
    const during = pings.filter((p) => p <= done.t);
    assert.ok(during.length >= 2, `pings during the action: ${during.length}`);
    for (let i = 1; i < during.length; i++) assert.ok(during[i] - during[i - 1] < 3500, `gap ${during[i] - during[i - 1]} ms`);
    // The client never saw the connection as stale.
    assert.equal(a.events.filter((e) => e.name === 'disconnected').length, 0, JSON.stringify(a.events));
    assert.equal(a.events.filter((e) => e.name === 'connected').length, 1);
  });
});

describe('close codes reach the client', () => {
  let srv;
  before(async () => {
    srv = await startFixture();
  });
  after(async () => {
    await srv?.stop();
  });

  it('an 8 MiB frame from ws gets close 1009 while it is still being sent', { timeout: 20_000 }, async () => {
    const ws = new WebSocket(`${srv.ws}/cable?token=${uniq('big')}`, ['actioncable-v1-json']);
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    const closed = new Promise((resolve) => ws.once('close', (code) => resolve(code)));
    ws.on('error', () => {}); // a reset after the close frame is not the point
    ws.send('x'.repeat(8 * 1024 * 1024));
    assert.equal(await closed, 1009);
  });
});
