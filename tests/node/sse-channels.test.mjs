// AnyCable's SSE transport for channels (`GET /events`, protocol §8.9)
// against the conformance fixture, with the `eventsource` package (a WHATWG
// EventSource for Node): protocol messages as named events, broadcasts as
// unnamed events carrying only the message with `lastEventId` set, and
// resuming with `Last-Event-ID` — given explicitly to a new EventSource, and
// sent by the EventSource itself when it reconnects after the server closed
// the stream.
//
// Binary: $CABLE_FIXTURE_BIN, else target/debug/cable-fixture
// (`cargo build -p keayl-demo --bins`).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';

import { EventSource } from 'eventsource';

import { CableClient, closeAll, ident, uniq } from './lib/cable.mjs';
import { postBroadcast, startFixture } from './lib/servers.mjs';

const T = { timeout: 15_000 };
const NAMED = ['welcome', 'confirm_subscription', 'confirm_history', 'reject_history', 'disconnect', 'ping'];

let srv;

before(async () => {
  srv = await startFixture({ tickEvery: 0.2, pingInterval: 0.5 });
});

after(async () => {
  await closeAll();
  await srv?.stop();
});

/** An EventSource whose events (named and unnamed) queue up for `next`. */
class Events {
  constructor(url, init) {
    this.es = new EventSource(url, init);
    this.queue = [];
    this.waiters = [];
    this.opens = 0;
    this.errors = 0;
    const push = (type) => (ev) => {
      this.queue.push({ type, data: ev.data, lastEventId: ev.lastEventId });
      this.wake();
    };
    this.es.addEventListener('message', push('message'));
    for (const type of NAMED) this.es.addEventListener(type, push(type));
    this.es.addEventListener('open', () => {
      this.opens += 1;
      this.wake();
    });
    this.es.addEventListener('error', () => {
      this.errors += 1;
      this.wake();
    });
  }

  wake() {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  changed(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** The next event that is not a ping, within `timeout`. */
  async next({ timeout = 5_000 } = {}) {
    const deadline = Date.now() + timeout;
    for (;;) {
      const i = this.queue.findIndex((e) => e.type !== 'ping');
      if (i >= 0) return this.queue.splice(0, i + 1).at(-1);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no event within ${timeout} ms (readyState ${this.es.readyState})`);
      await this.changed(left);
    }
  }

  /** The next event, which must be of `type`; returns its parsed data. */
  async expect(type, opts) {
    const ev = await this.next(opts);
    assert.equal(ev.type, type, `expected ${type}, got ${JSON.stringify(ev)}`);
    return { ...ev, json: JSON.parse(ev.data) };
  }

  /** `welcome`, then the confirmation of `identifier`. */
  async opened(identifier, opts) {
    const welcome = await this.expect('welcome', opts);
    assert.equal(welcome.json.type, 'welcome');
    const confirm = await this.expect('confirm_subscription');
    assert.deepEqual(confirm.json, { identifier, type: 'confirm_subscription' });
  }

  close() {
    this.es.close();
  }
}

/** A `fetch` for EventSource that sends `Last-Event-ID: id`. */
const withLastEventId = (id) => (input, init) =>
  fetch(input, { ...init, headers: { ...init.headers, 'Last-Event-ID': id } });

const broadcast = async (stream, message) => {
  const res = await postBroadcast(srv.base, { stream, data: JSON.stringify(message) });
  assert.ok(res.status < 300, `broadcast: ${res.status} ${res.body}`);
};

describe('SSE channels', () => {
  it('serves a channel and resumes a new EventSource from Last-Event-ID', T, async (t) => {
    const tag = uniq('h');
    const url = `${srv.base}/events?channel=HistoryChannel`;
    const first = new Events(url);
    t.after(() => first.close());
    await first.opened(ident({ channel: 'HistoryChannel' }));
    assert.equal(first.es.readyState, EventSource.OPEN);

    // Only our own messages: `history_a` is shared by every test.
    const ours = async (events) => {
      for (;;) {
        const ev = await events.next();
        if (ev.type === 'message' && JSON.parse(ev.data).tag !== tag) continue;
        return ev;
      }
    };
    let lastId;
    for (const n of [1, 2]) {
      await broadcast('history_a', { tag, n });
      const ev = await ours(first);
      assert.equal(ev.type, 'message');
      assert.deepEqual(JSON.parse(ev.data), { tag, n }, 'the data is the message alone');
      assert.match(ev.lastEventId, /^\d+\/history_a\/.+$/);
      assert.notEqual(ev.lastEventId, lastId);
      lastId = ev.lastEventId;
    }
    first.close();

    for (const n of [3, 4]) await broadcast('history_a', { tag, n });

    const back = new Events(url, { fetch: withLastEventId(lastId) });
    t.after(() => back.close());
    await back.opened(ident({ channel: 'HistoryChannel' }));
    const missed = [];
    for (;;) {
      const ev = await ours(back);
      if (ev.type === 'confirm_history') break;
      assert.equal(ev.type, 'message', JSON.stringify(ev));
      missed.push(JSON.parse(ev.data));
    }
    assert.deepEqual(missed, [
      { tag, n: 3 },
      { tag, n: 4 },
    ]);
    await broadcast('history_a', { tag, n: 5 });
    const live = await ours(back);
    assert.deepEqual(JSON.parse(live.data), { tag, n: 5 });
    assert.match(live.lastEventId, /^\d+\/history_a\/.+$/);
  });

  it('reconnects by itself after the server closes and gets exactly what it missed', T, async (t) => {
    const room = uniq('room');
    const user = uniq('sse');
    const identifier = ident({ channel: 'ChatChannel', room });
    const url = `${srv.base}/events?identifier=${encodeURIComponent(identifier)}&token=${user}`;
    const events = new Events(url);
    t.after(() => events.close());
    await events.opened(identifier);
    await broadcast(`room:${room}`, { n: 1 });
    const one = await events.expect('message');
    assert.deepEqual(one.json, { n: 1 });
    assert.match(one.lastEventId, new RegExp(`^1/room:${room}/.+$`));

    // A remote disconnect (reconnect allowed) ends the stream.
    const admin = await CableClient.connect(`${srv.ws}/cable?token=${uniq('admin')}`);
    const control = ident({ channel: 'ControlChannel' });
    await admin.subscribe(control);
    admin.perform(control, { action: 'kick', user, reconnect: true });
    const bye = await events.expect('disconnect');
    assert.deepEqual(bye.json, { type: 'disconnect', reason: 'remote', reconnect: true });

    // Missed while away (the EventSource waits its 3 s before coming back).
    await broadcast(`room:${room}`, { n: 2 });
    await broadcast(`room:${room}`, { n: 3 });

    await events.opened(identifier, { timeout: 8_000 });
    assert.equal(events.opens, 2);
    for (const n of [2, 3]) {
      const ev = await events.expect('message');
      assert.deepEqual(ev.json, { n });
      assert.match(ev.lastEventId, new RegExp(`^${n}/room:${room}/.+$`));
    }
    await events.expect('confirm_history');
    await broadcast(`room:${room}`, { n: 4 });
    assert.deepEqual((await events.expect('message')).json, { n: 4 });
  });

  it('refuses a request without a subscription and an unknown channel', T, async () => {
    const none = await fetch(`${srv.base}/events`);
    assert.equal(none.status, 400);
    assert.ok((await none.text()).length > 0);
    const unknown = await fetch(`${srv.base}/events?channel=NoSuchChannel`);
    assert.equal(unknown.status, 401);
    await unknown.text();
    const rejected = await fetch(
      `${srv.base}/events?identifier=${encodeURIComponent(ident({ channel: 'ChatChannel', room: 'forbidden' }))}`,
    );
    assert.equal(rejected.status, 401);
    await rejected.text();
  });
});
