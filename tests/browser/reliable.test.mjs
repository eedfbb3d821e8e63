// Reliable streams in headless Chromium: the chat page on @anycable/web over
// AnyCable's extended protocol survives a network blip (its session is
// restored and exactly the messages sent meanwhile arrive, once, in order,
// marked as missed), and the index page's ticker over the cable's SSE
// transport resumes from Last-Event-ID after the server drops the stream.
// Harness: harness.mjs.

import assert from 'node:assert/strict';
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  WAIT_MS,
  broadcast,
  browserTest,
  demo,
  messages,
  openChat,
  say,
  unique,
  useDemo,
  waitForExactUsers,
  waitForMessage,
  waitForUsers,
} from './harness.mjs';

useDemo();

/** Records each WebSocket a page opens: its URL and the frames it received. */
function recordSockets(sockets) {
  return (page) => {
    page.on('websocket', (ws) => {
      const socket = { url: ws.url(), received: [], closed: false };
      sockets.push(socket);
      ws.on('close', () => {
        socket.closed = true;
      });
      ws.on('framereceived', ({ payload }) => {
        try {
          socket.received.push(JSON.parse(String(payload)));
        } catch {
          socket.received.push(String(payload));
        }
      });
    });
  };
}

const welcomeOf = (socket) => socket.received.find((f) => f && f.type === 'welcome');

browserTest('a network blip: the session is restored and the missed messages arrive once, in order, marked', async ({ open }) => {
  const room = unique('blip');
  const sockets = [];
  const alice = await openChat(open, room, 'alice', recordSockets(sockets));
  const bob = await openChat(open, room, 'bob');
  await waitForUsers(alice, ['alice', 'bob']);
  await say(bob, 'before the blip');
  await waitForMessage(alice, 'bob', 'before the blip');

  assert.equal(sockets.length, 1);
  const first = welcomeOf(sockets[0]);
  assert.ok(first && first.sid, `the extended protocol's welcome carries a session id: ${JSON.stringify(first)}`);
  assert.ok(!first.restored, 'a first connection restores nothing');

  await alice.click('#blip');
  await alice.waitForSelector('body[data-connected="false"]', { timeout: WAIT_MS });
  assert.equal(await alice.textContent('#state'), 'reconnecting…');
  assert.ok(await alice.isDisabled('#send'), 'nothing can be sent while away');
  // The server saw alice go: her connection is closed, not just quiet.
  await waitForExactUsers(bob, ['bob']);

  const missed = ['missed one', 'missed two', 'missed three'];
  for (const text of missed) await say(bob, text);
  for (const text of missed) await waitForMessage(bob, 'bob', text);
  assert.equal(await alice.textContent('#state'), 'reconnecting…', 'alice is still away while bob speaks');
  assert.deepEqual(await messages(alice), ['bob: before the blip'], 'nothing reached alice while away');

  // The page reconnects by itself after 3 s, with its session id.
  await alice.waitForSelector('body[data-connected="true"]', { timeout: 6000 });
  await alice.waitForSelector('body[data-catching-up="false"]', { timeout: WAIT_MS });
  for (const text of missed) await waitForMessage(alice, 'bob', text);
  assert.equal(await alice.textContent('#state'), 'connected');
  assert.equal(sockets.length, 2, 'one reconnect');
  assert.equal(new URL(sockets[1].url).searchParams.get('sid'), first.sid, 'the reconnect names the old session');
  const second = welcomeOf(sockets[1]);
  assert.equal(second?.restored, true, `the session is restored: ${JSON.stringify(second)}`);
  assert.equal(await alice.getAttribute('body', 'data-restored'), 'true');
  await waitForExactUsers(alice, ['alice', 'bob']);
  await waitForExactUsers(bob, ['alice', 'bob']);

  // A live message after the catch-up is not marked.
  await say(bob, 'live after the blip');
  await waitForMessage(alice, 'bob', 'live after the blip');
  await say(alice, 'alice is back');
  await waitForMessage(bob, 'alice', 'alice is back');
  await waitForMessage(alice, 'alice', 'alice is back');
  await sleep(300); // room for a late repeat to show up

  const expected = ['before the blip', ...missed, 'live after the blip'].map((t) => `bob: ${t}`);
  expected.push('alice: alice is back');
  assert.deepEqual(await messages(alice), expected, 'each message once, in order');
  const lines = await alice.$$eval('#log p.message', (ps) =>
    ps.map((p) => ({
      missed: p.classList.contains('missed'),
      label: p.querySelector('.away')?.textContent ?? null,
      offset: Number(p.dataset.offset),
    })),
  );
  assert.deepEqual(
    lines.map((l) => l.missed),
    [false, true, true, true, false, false],
    'exactly the messages sent while away are marked',
  );
  for (const l of lines) assert.equal(l.label, l.missed ? '(while you were away)' : null);
  for (let i = 1; i < lines.length; i++) {
    assert.ok(lines[i].offset > lines[i - 1].offset, `stream offsets increase: ${lines.map((l) => l.offset)}`);
  }
  assert.equal((await alice.getAttribute('body', 'data-duplicates')) ?? '0', '0', 'no repeats reached the page');
  assert.deepEqual(
    await messages(bob),
    expected,
    'bob saw the same conversation',
  );
});

browserTest('the ticker over the SSE transport resumes from Last-Event-ID: nothing missed, nothing repeated', async ({ open }) => {
  const name = unique('feed');
  const page = await open('index', `/?name=${encodeURIComponent(name)}`);
  const feed = () => page.evaluate(() => window.keaylFeed);
  await page.waitForFunction(() => window.keaylFeed.events.length >= 2, null, { timeout: WAIT_MS });
  const early = await page.evaluate(() => ({ feed: window.keaylFeed, shown: document.getElementById('ticker-id').textContent }));
  assert.equal(early.feed.name, name);
  assert.equal(early.feed.opens, 1);
  assert.equal(early.shown, early.feed.events.at(-1).id, 'the page shows the last event id');
  assert.match(early.shown, /^\d+\/demo:ticker\/[^/]+$/);

  // A server-side disconnect of this page's connection (Rails' remote
  // disconnect, reconnect allowed), through the demo's open broadcast API.
  await broadcast(`action_cable/${name}`, { type: 'disconnect', reconnect: true });
  await page.waitForFunction(() => window.keaylFeed.disconnects.length === 1, null, { timeout: WAIT_MS });
  // EventSource comes back by itself (after its reconnection delay) with
  // Last-Event-ID; the server replays what was broadcast meanwhile, then
  // confirms the history, then goes on live.
  await page.waitForFunction(() => window.keaylFeed.opens === 2 && window.keaylFeed.histories === 1, null, {
    timeout: 10000,
  });
  const caughtUpAt = (await feed()).events.length;
  await page.waitForFunction((n) => window.keaylFeed.events.length >= n + 2, caughtUpAt, { timeout: WAIT_MS });

  const { feed: f, shown, resumeText } = await page.evaluate(() => ({
    feed: window.keaylFeed,
    shown: document.getElementById('ticker-id').textContent,
    resumeText: document.getElementById('ticker-resume').textContent,
  }));
  const [bye] = f.disconnects;
  assert.deepEqual({ type: bye.type, reason: bye.reason, reconnect: bye.reconnect }, { type: 'disconnect', reason: 'remote', reconnect: true });
  assert.deepEqual(f.resumes, [bye.lastId], 'it resumed after the last event it had');
  assert.ok(resumeText.includes(`resuming after ${bye.lastId}`) && resumeText.includes('caught up'), resumeText);

  const ids = f.events.map((e) => e.id);
  assert.equal(new Set(ids).size, ids.length, `no event twice: ${ids}`);
  const stream = (id) => id.slice(id.indexOf('/') + 1);
  assert.equal(new Set(ids.map(stream)).size, 1, `one stream, one epoch: ${ids}`);
  const offsets = f.events.map((e) => e.offset);
  offsets.forEach((o, i) => assert.equal(o, offsets[0] + i, `consecutive offsets, none missed: ${offsets}`));
  const ns = f.events.map((e) => e.n);
  ns.forEach((n, i) => assert.equal(n, ns[0] + i, `consecutive ticks: ${ns}`));

  const cut = ids.indexOf(bye.lastId);
  assert.ok(cut >= 1, `the last id before the drop is among the events: ${bye.lastId}`);
  const replayed = f.events.filter((e) => e.replayed);
  assert.ok(replayed.length >= 1, `ticks broadcast while away are replayed: ${JSON.stringify(f.events)}`);
  assert.deepEqual(
    replayed.map((e) => e.id),
    ids.slice(cut + 1, cut + 1 + replayed.length),
    'the replay starts right after the last id before the drop',
  );
  assert.ok(f.events.slice(cut + 1 + replayed.length).length >= 2, 'then live ticks');
  assert.equal(shown, ids.at(-1));
  assert.equal(await page.textContent('#ticker-status'), 'subscribed');
});

browserTest('/assets/npm serves only .js files of the listed packages', async ({ open }) => {
  // node:http sends the path as written (fetch would resolve `%2e%2e`).
  const get = (p) =>
    new Promise((resolve, reject) => {
      const req = http.get(demo.baseUrl + '/', { path: p }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode, type: res.headers['content-type'], body }));
      });
      req.on('error', reject);
    });
  for (const p of ['/assets/npm/@anycable/web/index.js', '/assets/npm/@anycable/core/cable/index.js', '/assets/npm/nanoevents/index.js']) {
    const r = await get(p);
    assert.equal(r.status, 200, p);
    assert.equal(r.type, 'text/javascript; charset=utf-8', p);
    assert.match(r.body, /export /, p);
  }
  for (const p of [
    '/assets/npm/nanoevents/package.json',
    '/assets/npm/@anycable/core/%2e%2e/web/index.js',
    '/assets/npm/@anycable/core/..%2fweb/index.js',
    '/assets/npm/@anycable/core//index.js',
    '/assets/npm/@anycable/core/%2fetc/passwd.js',
    '/assets/npm/@anycable/core/no-such-file.js',
    '/assets/npm/@anycable/webx/index.js',
    '/assets/npm/@rails/actioncable/app/assets/javascripts/actioncable.esm.js',
    '/assets/npm/nanoevents',
    '/assets/npm/nanoevents/',
    '/assets/npm/%2e%2e/%2e%2e/src/lib.js',
  ]) {
    assert.equal((await get(p)).status, 404, p);
  }
  // The chat page loads the client through its import map.
  const page = await open('chat', '/chat?room=assets&name=importmap');
  await page.waitForSelector('body[data-connected="true"]', { timeout: WAIT_MS });
  const protocol = await page.evaluate(() => window.keaylChat.cable.protocol.constructor.name);
  assert.equal(protocol, 'ActionCableExtendedProtocol');
});

/**
 * A TCP proxy to the demo whose connections the test can cut without a
 * close frame (a reset, as a dropped network does) and refuse for a while.
 */
async function cuttableProxy(target) {
  const net = await import('node:net');
  const { hostname, port } = new URL(target);
  const sockets = new Set();
  let down = false;
  const server = net.createServer((client) => {
    if (down) {
      client.resetAndDestroy();
      return;
    }
    const upstream = net.connect(Number(port), hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {});
    }
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    /** Reset every open connection and refuse new ones until `up()`. */
    cut() {
      down = true;
      for (const s of sockets) s.resetAndDestroy();
    },
    up() {
      down = false;
    },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(r));
    },
  };
}

browserTest('a socket cut without a close frame: the client reconnects by itself, restored, and gets exactly the missed messages', async ({ open }) => {
  const proxy = await cuttableProxy(demo.baseUrl);
  const direct = demo.baseUrl;
  const room = unique('cut');
  const sockets = [];
  try {
    // Alice reaches the demo through the proxy, Bob directly.
    demo.baseUrl = proxy.url;
    const alice = await openChat(open, room, 'alice', recordSockets(sockets));
    demo.baseUrl = direct;
    const bob = await openChat(open, room, 'bob');
    await waitForUsers(alice, ['alice', 'bob']);
    await say(bob, 'before the cut');
    await waitForMessage(alice, 'bob', 'before the cut');
    const first = welcomeOf(sockets[0]);

    // The network drops: a reset, no close frame; reconnects are refused
    // while Bob speaks.
    proxy.cut();
    const deadline = Date.now() + WAIT_MS;
    while (!sockets[0].closed) {
      assert.ok(Date.now() < deadline, 'the browser saw its socket die');
      await sleep(20);
    }
    const missed = ['cut one', 'cut two', 'cut three'];
    for (const text of missed) await say(bob, text);
    for (const text of missed) await waitForMessage(bob, 'bob', text);
    await sleep(500);
    assert.deepEqual(await messages(alice), ['bob: before the cut'], 'nothing reached alice while cut off');
    proxy.up();

    // The client comes back on its own (its backoff), names its session,
    // and gets what it missed, once each, in order.
    const back = Date.now() + 15000;
    while (!sockets.some((s) => welcomeOf(s)?.restored)) {
      assert.ok(Date.now() < back, `reconnected and restored: ${JSON.stringify(sockets.map(welcomeOf))}`);
      await sleep(50);
    }
    for (const text of missed) await waitForMessage(alice, 'bob', text);
    const restoredSocket = sockets.find((s) => welcomeOf(s)?.restored);
    assert.ok(restoredSocket, `a reconnect was restored: ${JSON.stringify(sockets.map(welcomeOf))}`);
    assert.equal(new URL(restoredSocket.url).searchParams.get('sid'), first.sid);
    await say(bob, 'live after the cut');
    await waitForMessage(alice, 'bob', 'live after the cut');
    await sleep(300);
    assert.deepEqual(
      await messages(alice),
      ['before the cut', ...missed, 'live after the cut'].map((t) => `bob: ${t}`),
      'each message once, in order',
    );
    assert.equal((await alice.getAttribute('body', 'data-duplicates')) ?? '0', '0');
  } finally {
    demo.baseUrl = direct;
    await proxy.close();
  }
}, { timeout: 40000 });
