// Raw-frame conformance tests of the Action Cable fixture server
// (`cable-fixture`, apps/keayl-demo/src/fixture.rs) with the `ws` client and
// plain TCP sockets: the wire contract of shared/protocol/actioncable.md
// §1–§5 (handshake, server frames, client commands, connection and channel
// lifecycle), checked against the recorded Rails transcripts.
//
// Frames are compared as parsed JSON, identifiers as exact strings (§0), and
// "no frame" means no frame other than pings within the window.
//
// Binary: $CABLE_FIXTURE_BIN, else target/debug/cable-fixture
// (`cargo build -p keayl-demo --bins`).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';

import {
  CableClient,
  WELCOME,
  closeAll,
  confirmFrame,
  dataFrame,
  gidParam,
  ident,
  rawUpgrade,
  rejectFrame,
  signStreamName,
  uniq,
} from './lib/cable.mjs';
import { delay, postBroadcast, startFixture } from './lib/servers.mjs';

const T = { timeout: 10_000 };
const SILENCE = 300;

const chat = (room) => ident({ channel: 'ChatChannel', room });
const CONTROL = ident({ channel: 'ControlChannel' });
const AUDIT = ident({ channel: 'AuditChannel' });
const TURBO_VECTOR =
  'ImNoYXQvMjAyMyI=--2b2e054b6413bf3bc7e8bbad2f68962aa2ba19821800ccbd8de6fd7314e8320c';
const turbo = (signed) =>
  signed === undefined
    ? ident({ channel: 'Turbo::StreamsChannel' })
    : ident({ channel: 'Turbo::StreamsChannel', signed_stream_name: signed });

let srv;

before(async () => {
  srv = await startFixture({ tickEvery: 0.2, pingInterval: 0.5 });
});

after(async () => {
  await closeAll();
  await srv?.stop();
});

/** Clients opened through this are closed when the test ends. */
function session(t, server = () => srv) {
  const list = [];
  t.after(() => Promise.all(list.map((c) => c.close())));
  return {
    connect(token, { path = '/cable', ...opts } = {}) {
      const qs = token === undefined ? '' : `?token=${encodeURIComponent(token)}`;
      return CableClient.connect(`${server().ws}${path}${qs}`, {
        label: token ?? 'anon',
        ...opts,
        track: list,
      });
    },
  };
}

/** A connection subscribed to a fresh ChatChannel room: { c, id, user, room }. */
async function chatClient(s, { user = uniq('alice'), room = uniq('room') } = {}) {
  const c = await s.connect(user);
  const id = chat(room);
  await c.subscribe(id);
  return { c, id, user, room };
}

// ---------------------------------------------------------------------------
// §1 Transport and handshake
// ---------------------------------------------------------------------------

describe('§1 handshake and subprotocols', () => {
  it('welcome is exactly {"type":"welcome"}; actioncable-v1-json is selected from [v1-json, unsupported]', T, async (t) => {
    const s = session(t);
    const c = await s.connect(uniq('alice'));
    assert.equal(c.frames[0].text, WELCOME);
    assert.equal(c.ws.protocol, 'actioncable-v1-json');
    assert.equal(c.upgrade.status, 101);
    assert.equal(c.upgrade.headers['sec-websocket-protocol'], 'actioncable-v1-json');
  });

  it('offering only actioncable-unsupported selects it, and the server behaves the same', T, async (t) => {
    const s = session(t);
    const c = await s.connect(uniq('alice'), { protocols: ['actioncable-unsupported'] });
    assert.equal(c.ws.protocol, 'actioncable-unsupported');
    const id = chat(uniq('room'));
    await c.subscribe(id);
    await c.probe(id);
  });

  it('offering ["foo"]: the 101 has no Sec-WebSocket-Protocol header', T, async () => {
    const r = await rawUpgrade(srv.port, '/cable', { headers: { 'Sec-WebSocket-Protocol': 'foo' } });
    try {
      assert.equal(r.status, 101, r.statusLine);
      assert.equal(r.headers['sec-websocket-accept'], r.accept);
      assert.equal(r.headers['sec-websocket-protocol'], undefined, 'no protocol may be selected');
      const frames = await r.waitFrames(1);
      assert.equal(frames[0]?.text, WELCOME);
    } finally {
      r.socket.destroy();
    }
  });

  it('offering ["foo"]: the ws client fails the handshake (none selected)', T, async () => {
    await assert.rejects(CableClient.connect(`${srv.ws}/cable?token=x`, { protocols: ['foo'] }), /subprotocol/i);
  });

  it('offering no protocol: 101 without the header, then welcome', T, async (t) => {
    const s = session(t);
    const c = await s.connect(uniq('alice'), { protocols: [] });
    assert.equal(c.ws.protocol, '');
    assert.equal(c.upgrade.headers['sec-websocket-protocol'], undefined);
  });

  it('plain GET /cable (no upgrade) → 404 "Page not found"', T, async () => {
    const res = await fetch(`${srv.base}/cable`);
    assert.equal(res.status, 404);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
    assert.equal(await res.text(), 'Page not found');
  });

  it('POST /cable → 404 "Page not found"', T, async () => {
    const res = await fetch(`${srv.base}/cable`, { method: 'POST', body: '{}' });
    assert.equal(res.status, 404);
    assert.equal(await res.text(), 'Page not found');
  });
});

describe('§1.2 origin check on /cable-origin', () => {
  const refused = (err) => {
    assert.equal(err.status, 404, `expected HTTP 404, got ${err.status ?? err.message}`);
    assert.equal(err.body, 'Page not found');
    return true;
  };

  it('Origin http://allowed.example → upgraded, welcome', T, async (t) => {
    const s = session(t);
    const c = await s.connect(uniq('alice'), { path: '/cable-origin', origin: 'http://allowed.example' });
    assert.equal(c.ws.protocol, 'actioncable-v1-json');
  });

  it('Origin equal to http:// + Host → upgraded', T, async (t) => {
    const s = session(t);
    await s.connect(uniq('alice'), { path: '/cable-origin', origin: `http://127.0.0.1:${srv.port}` });
  });

  for (const [name, origin] of [
    ['another origin', 'http://evil.example'],
    ['a longer host', 'http://allowed.example.evil'],
    ['https:// + Host (scheme differs)', () => `https://127.0.0.1:${srv.port}`],
    ['no Origin header', undefined],
  ]) {
    it(`${name} → HTTP 404 "Page not found", no upgrade`, T, async () => {
      const o = typeof origin === 'function' ? origin() : origin;
      await assert.rejects(
        CableClient.connect(`${srv.ws}/cable-origin?token=alice`, { origin: o }),
        refused,
      );
    });
  }

  it('refused origin over a raw socket: 404 with text/plain body, never 101', T, async () => {
    const r = await rawUpgrade(srv.port, '/cable-origin', {
      headers: { Origin: 'http://evil.example', 'Sec-WebSocket-Protocol': 'actioncable-v1-json' },
    });
    assert.equal(r.status, 404, r.statusLine);
    assert.match(r.headers['content-type'] ?? '', /^text\/plain/);
    assert.equal(r.body, 'Page not found');
  });

  it('plain GET /cable-origin → 404', T, async () => {
    const res = await fetch(`${srv.base}/cable-origin`, { headers: { Origin: 'http://allowed.example' } });
    assert.equal(res.status, 404);
    assert.equal(await res.text(), 'Page not found');
  });
});

describe('client close codes', () => {
  for (const [code, reason] of [
    [4001, 'bye'],
    [1001, ''],
    [1000, ''],
  ]) {
    it(`client closes with ${code} ${JSON.stringify(reason)} → the server echoes it`, T, async (t) => {
      const s = session(t);
      const { c } = await chatClient(s);
      c.ws.close(code, reason);
      assert.deepEqual(await c.expectClosed(), { code, reason });
    });
  }
});

describe('§1.4 frames and sizes', () => {
  it('a binary frame is dropped (even one holding a valid command) and the connection lives', T, async (t) => {
    const s = session(t);
    const { c, id } = await chatClient(s);
    const other = chat(uniq('room'));
    c.sendBinary(Buffer.from(JSON.stringify({ command: 'subscribe', identifier: other })));
    await c.expectSilence(SILENCE, 'binary frame must be dropped');
    await c.probe(id);
  });

  it('a 60 KiB message is processed', T, async (t) => {
    const s = session(t);
    const { c, id } = await chatClient(s);
    const data = { action: 'echo', pad: 'x'.repeat(60 * 1024) };
    c.perform(id, data);
    await c.expect(dataFrame(id, data));
  });

  /** A message command of exactly `bytes` bytes. */
  function sized(id, bytes) {
    const base = JSON.stringify({ command: 'message', identifier: id, data: JSON.stringify({ action: 'echo', pad: '' }) });
    const pad = 'x'.repeat(bytes - base.length);
    return { text: JSON.stringify({ command: 'message', identifier: id, data: JSON.stringify({ action: 'echo', pad }) }), pad };
  }

  it('exactly 65536 bytes is accepted; 65537 bytes closes with 1009', T, async (t) => {
    const s = session(t);
    const a = await chatClient(s);
    const ok = sized(a.id, 65536);
    assert.equal(Buffer.byteLength(ok.text), 65536);
    a.c.send(ok.text);
    await a.c.expect(dataFrame(a.id, { action: 'echo', pad: ok.pad }));
    const b = await chatClient(s);
    const big = sized(b.id, 65537);
    assert.equal(Buffer.byteLength(big.text), 65537);
    b.c.send(big.text);
    assert.equal((await b.c.expectClosed()).code, 1009, b.c.transcript());
  });

  it('a message over 64 KiB closes the connection with code 1009', T, async (t) => {
    const s = session(t);
    const { c, id } = await chatClient(s);
    c.perform(id, { action: 'echo', pad: 'x'.repeat(70 * 1024) });
    const info = await c.expectClosed({ timeout: 3_000 });
    assert.equal(info.code, 1009, c.transcript());
  });
});

// ---------------------------------------------------------------------------
// §2 Server → client messages
// ---------------------------------------------------------------------------

describe('§2.2 pings', () => {
  it('pings come after the welcome, every ~0.5 s, {"type":"ping","message":<int unix secs>}', T, async (t) => {
    const s = session(t);
    const c = await s.connect(uniq('alice'));
    await c.nextPing({ after: 2, timeout: 3_000 });
    assert.equal(c.frames[0].text, WELCOME, 'nothing (no ping) before the welcome');
    const pings = c.pings.slice(0, 3);
    const now = Date.now() / 1000;
    for (const p of pings) {
      assert.deepEqual(Object.keys(p.data).sort(), ['message', 'type']);
      assert.ok(Number.isInteger(p.data.message), `integer message: ${p.text}`);
      assert.ok(Math.abs(p.data.message - now) < 5, `unix seconds: ${p.text}`);
    }
    for (let i = 1; i < pings.length; i++) {
      assert.ok(pings[i].data.message >= pings[i - 1].data.message, 'never decreasing');
      const gap = pings[i].t - pings[i - 1].t;
      assert.ok(gap > 300 && gap < 900, `ping interval ${gap} ms (want ~500)\n${c.transcript()}`);
    }
    // One server-wide timer pings every connection (as Rails does), so the
    // first ping comes 0 to 1 interval after the welcome, never before it.
    assert.ok(pings[0].t < 900, `first ping at ${pings[0].t} ms`);
  });

  it('with a 1.1 s interval consecutive pings strictly increase', { timeout: 15_000 }, async (t) => {
    const own = await startFixture({ pingInterval: 1.1 });
    t.after(() => own.stop());
    const s = session(t, () => own);
    const c = await s.connect(uniq('alice'));
    const p1 = await c.nextPing({ after: 0, timeout: 3_000 });
    const p2 = await c.nextPing({ after: 1, timeout: 3_000 });
    assert.ok(p2.data.message > p1.data.message, `${p1.text} then ${p2.text}`);
    const gap = p2.t - p1.t;
    assert.ok(gap > 900 && gap < 1_600, `interval ${gap} ms`);
  });

  it('a rejected (unauthorized) connection never gets a ping', T, async () => {
    const c = new CableClient(`${srv.ws}/cable?token=bad`, { protocols: undefined });
    await c.opened.catch(() => {});
    await c.expectClosed();
    assert.equal(c.pings.length, 0);
  });
});

describe('§2.5 / §4.1 authentication', () => {
  const unauthorized = { type: 'disconnect', reason: 'unauthorized', reconnect: false };

  async function expectUnauthorized(c) {
    const f = await c.next();
    assert.deepEqual(f, unauthorized, c.transcript());
    const info = await c.expectClosed();
    assert.deepEqual(info, { code: 1000, reason: '' });
    assert.equal(c.frames.length, 1, `only the disconnect frame:\n${c.transcript()}`);
  }

  it('token=bad → 101, then {"type":"disconnect","reason":"unauthorized","reconnect":false}, close 1000', T, async (t) => {
    const s = session(t);
    const c = await s.connect('bad', { welcome: false });
    assert.equal(c.ws.protocol, 'actioncable-v1-json');
    await expectUnauthorized(c);
  });

  it('cookie token=bad → unauthorized', T, async (t) => {
    const s = session(t);
    const c = await s.connect(undefined, { welcome: false, headers: { Cookie: 'token=bad' } });
    await expectUnauthorized(c);
  });

  it('cookie token=<user> identifies the user', T, async (t) => {
    const s = session(t);
    const user = uniq('cookie');
    const c = await s.connect(undefined, { headers: { Cookie: `other=1; token=${user}` } });
    const id = chat(uniq('room'));
    await c.subscribe(id);
    c.perform(id, { action: 'speak', message: 'hi' });
    await c.expect(dataFrame(id, { message: 'hi', from: user }));
  });

  it('the token query parameter wins over the cookie', T, async (t) => {
    const s = session(t);
    const user = uniq('alice');
    const c = await s.connect(user, { headers: { Cookie: 'token=bad' } });
    const id = chat(uniq('room'));
    await c.subscribe(id);
    c.perform(id, { action: 'speak', message: 'q' });
    await c.expect(dataFrame(id, { message: 'q', from: user }));
  });

  it('no token → accepted, current_user null (speak from:null)', T, async (t) => {
    const s = session(t);
    const c = await s.connect(undefined);
    const id = chat(uniq('room'));
    await c.subscribe(id);
    c.perform(id, { action: 'speak', message: 'anonymous' });
    await c.expect(dataFrame(id, { message: 'anonymous', from: null }));
  });

  it('commands sent with an unauthorized connection are never processed', T, async () => {
    const id = chat(uniq('room'));
    const r = await rawUpgrade(srv.port, '/cable?token=bad', {
      headers: { 'Sec-WebSocket-Protocol': 'actioncable-v1-json' },
      early: [JSON.stringify({ command: 'subscribe', identifier: id })],
    });
    try {
      assert.equal(r.status, 101);
      await r.waitFrames(3, 1_000);
      const texts = r.frames.filter((f) => f.opcode === 1).map((f) => JSON.parse(f.text));
      assert.deepEqual(texts, [{ type: 'disconnect', reason: 'unauthorized', reconnect: false }]);
      const close = r.frames.find((f) => f.opcode === 8);
      assert.ok(close, 'a close frame');
      assert.equal(close.payload.readUInt16BE(0), 1000);
    } finally {
      r.socket.destroy();
    }
  });
});

// ---------------------------------------------------------------------------
// §3 Subscriptions
// ---------------------------------------------------------------------------

describe('§2.3/§2.4/§3.2–§3.5 subscriptions', () => {
  it('subscribe → confirm_subscription echoing the identifier string', T, async (t) => {
    const s = session(t);
    const c = await s.connect(uniq('alice'));
    const id = chat('1');
    c.subscribeCmd(id);
    const f = await c.nextRaw();
    assert.deepEqual(f.data, confirmFrame(id));
    assert.equal(f.data.identifier, id);
  });

  it('room "forbidden" → reject_subscription; the identifier is gone; a re-subscribe is rejected again', T, async (t) => {
    const s = session(t);
    const c = await s.connect(uniq('alice'));
    const id = chat('forbidden');
    await c.subscribe(id, { expect: 'reject' });
    c.perform(id, { action: 'echo', x: 1 });
    await c.expectSilence(SILENCE, 'message to a rejected identifier');
    await c.subscribe(id, { expect: 'reject' });
  });

  it('TransmitChannel: "hello", "world", then confirm_subscription', T, async (t) => {
    const s = session(t);
    const c = await s.connect(uniq('alice'));
    const id = ident({ channel: 'TransmitChannel' });
    c.subscribeCmd(id);
    await c.expect(dataFrame(id, 'hello'));
    await c.expect(dataFrame(id, 'world'));
    await c.expect(confirmFrame(id));
  });

  it('RejectChannel: its transmit comes before reject_subscription, and its stream is stopped', T, async (t) => {
    const s = session(t);
    const c = await s.connect(uniq('alice'));
    const id = ident({ channel: 'RejectChannel' });
    c.subscribeCmd(id);
    await c.expect(dataFrame(id, { note: 'before reject' }));
    await c.expect(rejectFrame(id));
    const r = await postBroadcast(srv.base, { stream: 'rejected_stream', data: '{"leak":true}' });
    assert.ok(r.status >= 200 && r.status < 300, `broadcast: ${r.status} ${r.body}`);
    await c.expectSilence(SILENCE, 'a rejected subscription receives no broadcast');
  });

  it('duplicate subscribe: no second confirm, a broadcast is delivered once', T, async (t) => {
    const s = session(t);
    const { c, id, user } = await chatClient(s);
    c.subscribeCmd(id);
    await c.expectSilence(SILENCE, 'second identical subscribe');
    c.perform(id, { action: 'speak', message: 'count me' });
    await c.expect(dataFrame(id, { message: 'count me', from: user }));
    await c.expectSilence(SILENCE, 'delivered exactly once');
  });

  it('identifier variants (key order, spaces, number) are distinct subscriptions, each gets one frame', T, async (t) => {
    const s = session(t);
    const user = uniq('alice');
    const c = await s.connect(user);
    const n = 900_000 + Math.floor(Math.random() * 99_999);
    const variants = [
      `{"channel":"ChatChannel","room":"${n}"}`,
      `{"room":"${n}","channel":"ChatChannel"}`,
      `{"channel": "ChatChannel", "room": "${n}"}`,
      `{"channel":"ChatChannel","room":${n}}`,
    ];
    for (const v of variants) await c.subscribe(v);
    c.perform(variants[0], { action: 'speak', message: 'fan' });
    const got = [];
    for (let i = 0; i < variants.length; i++) got.push(await c.next());
    await c.expectSilence(SILENCE, 'one frame per identifier');
    for (const f of got) assert.deepEqual(f.message, { message: 'fan', from: user });
    assert.deepEqual(got.map((f) => f.identifier).sort(), [...variants].sort());
  });

  it('unsubscribe: no frame back, broadcasts stop, message to it is ignored, re-subscribe confirms', T, async (t) => {
    const s = session(t);
    const room = uniq('room');
    const id = chat(room);
    const a = await s.connect(uniq('alice'));
    const bob = uniq('bob');
    const b = await s.connect(bob);
    await a.subscribe(id);
    await b.subscribe(id);
    a.unsubscribe(id);
    await a.expectSilence(SILENCE, 'no unsubscribe acknowledgement');
    b.perform(id, { action: 'speak', message: 'after unsubscribe' });
    await b.expect(dataFrame(id, { message: 'after unsubscribe', from: bob }));
    a.perform(id, { action: 'echo', x: 1 });
    await a.expectSilence(SILENCE, 'after unsubscribe');
    await a.subscribe(id);
    await a.probe(id);
  });

  it('unsubscribe of an unknown identifier → no frame, connection fine', T, async (t) => {
    const s = session(t);
    const { c, id } = await chatClient(s);
    c.unsubscribe(chat(uniq('never')));
    await c.expectSilence(SILENCE);
    await c.probe(id);
  });

  it('FailingChannel (subscribed panics) → reject_subscription, and again on a second subscribe', T, async (t) => {
    const s = session(t);
    const { c, id } = await chatClient(s);
    const f = ident({ channel: 'FailingChannel' });
    await c.subscribe(f, { expect: 'reject' });
    await c.subscribe(f, { expect: 'reject' });
    await c.probe(id);
  });

  describe('unregistered channel names → no frame at all', { concurrency: true }, () => {
    for (const channel of [
      'NopeChannel',
      'String',
      'Kernel',
      'chatchannel',
      'ActionCable::Channel::Base',
      'ApplicationCable::Channel',
      'ApplicationCable::Connection',
    ]) {
      it(channel, T, async (t) => {
        const s = session(t);
        const { c, id } = await chatClient(s);
        c.subscribeCmd(ident({ channel, room: '1' }));
        await c.expectSilence(SILENCE);
        await c.probe(id);
      });
    }
  });
});

// ---------------------------------------------------------------------------
// §3.6 Malformed input
// ---------------------------------------------------------------------------

describe('§3.6 malformed input: no frame, connection stays open', { concurrency: true }, () => {
  /** rows: [name, (id, other) => frame text or object] — id is the subscribed identifier. */
  const rows = [
    ['not JSON: truncated', () => '{"command":"subscribe",'],
    ['not JSON: plain text', () => 'hello'],
    ['not JSON: empty frame', () => ''],
    ['JSON null', () => 'null'],
    ['JSON array []', () => '[]'],
    ['JSON number 42', () => '42'],
    ['JSON string "subscribe"', () => '"subscribe"'],
    ['JSON object without command', (id) => ({ identifier: id })],
    ['unknown command "dance"', (id) => ({ command: 'dance', identifier: id })],
    ['wrong-case command "Subscribe"', (id, other) => ({ command: 'Subscribe', identifier: other })],
    ['command null', (id, other) => ({ command: null, identifier: other })],
    ['subscribe without identifier', () => ({ command: 'subscribe' })],
    ['subscribe with identifier as a JSON object', (id, other) => ({ command: 'subscribe', identifier: JSON.parse(other) })],
    ['subscribe with identifier "ChatChannel" (not JSON)', () => ({ command: 'subscribe', identifier: 'ChatChannel' })],
    ['subscribe with identifier "42"', () => ({ command: 'subscribe', identifier: '42' })],
    ['subscribe with identifier "[\\"ChatChannel\\"]"', () => ({ command: 'subscribe', identifier: '["ChatChannel"]' })],
    ['subscribe with identifier "null"', () => ({ command: 'subscribe', identifier: 'null' })],
    ['subscribe with identifier 12 (number)', () => ({ command: 'subscribe', identifier: 12 })],
    ['subscribe with identifier "{}"', () => ({ command: 'subscribe', identifier: '{}' })],
    ['subscribe with identifier without channel', () => ({ command: 'subscribe', identifier: '{"room":"1"}' })],
    ['subscribe with channel null', () => ({ command: 'subscribe', identifier: '{"channel":null}' })],
    ['subscribe with channel 5', () => ({ command: 'subscribe', identifier: '{"channel":5}' })],
    ['message without data', (id) => ({ command: 'message', identifier: id })],
    ['message with data as an object', (id) => ({ command: 'message', identifier: id, data: { action: 'echo', x: 1 } })],
    ['message with data "[1,2]"', (id) => ({ command: 'message', identifier: id, data: '[1,2]' })],
    ['message with data "\\"echo\\""', (id) => ({ command: 'message', identifier: id, data: '"echo"' })],
    ['message with data "null"', (id) => ({ command: 'message', identifier: id, data: 'null' })],
    ['message with data "{not json"', (id) => ({ command: 'message', identifier: id, data: '{not json' })],
    ['message with action 5', (id) => ({ command: 'message', identifier: id, data: '{"action":5}' })],
    ['message with action ["echo"]', (id) => ({ command: 'message', identifier: id, data: '{"action":["echo"]}' })],
    ['message with action {"a":1}', (id) => ({ command: 'message', identifier: id, data: '{"action":{"a":1}}' })],
    [
      'message with identifier as a JSON object (equal to the subscribed params)',
      (id) => ({ command: 'message', identifier: JSON.parse(id), data: '{"action":"echo"}' }),
    ],
    ['message to an identifier never subscribed', (id, other) => ({ command: 'message', identifier: other, data: '{"action":"echo"}' })],
    [
      'message to the same params with another key order',
      (id) => {
        const { channel, room } = JSON.parse(id);
        return { command: 'message', identifier: JSON.stringify({ room, channel }), data: '{"action":"echo"}' };
      },
    ],
    ['unsubscribe without identifier', () => ({ command: 'unsubscribe' })],
    ['unsubscribe with identifier as a JSON object', (id) => ({ command: 'unsubscribe', identifier: JSON.parse(id) })],
  ];

  for (const [name, make] of rows) {
    it(name, T, async (t) => {
      const s = session(t);
      const { c, id } = await chatClient(s);
      const other = chat(uniq('other'));
      c.send(make(id, other));
      await c.expectSilence(SILENCE);
      await c.probe(id);
    });
  }
});

// ---------------------------------------------------------------------------
// §3.7 Actions
// ---------------------------------------------------------------------------

describe('§3.7 actions of ChatChannel', () => {
  it('echo transmits the whole data, action included', T, async (t) => {
    const s = session(t);
    const { c, id } = await chatClient(s);
    const data = { action: 'echo', nested: { a: [1, 'two', null] }, html: '<b>&</b>', u: '\u2028é' };
    c.perform(id, data);
    await c.expect(dataFrame(id, data));
  });

  it('echo survives JSON edge cases (escapes, U+2028, astral chars, floats, u64, -0.0, nesting, duplicate keys)', T, async (t) => {
    const s = session(t);
    const { c, id } = await chatClient(s);
    const data =
      '{"action":"echo","html":"<b>&\'\\"</b>","ls":"\u2028\u2029","uni":"hé 😀","f":1.0,"e":1e20,' +
      '"big":12345678901234567890,"neg0":-0.0,"n":null,"t":true,"arr":[1,"2",{"k":[]}],"esc":"\\u0041\\/","dup":1,"dup":2}';
    c.send({ command: 'message', identifier: id, data });
    const f = await c.nextRaw();
    assert.deepEqual(f.data, dataFrame(id, JSON.parse(data)), c.transcript());
    assert.match(f.text, /"big":12345678901234567890[,}]/, 'a u64 keeps all its digits');
    assert.ok(Object.is(f.data.message.neg0, -0), '-0.0 stays negative zero');
  });

  it('tick transmits the JSON string "tock"', T, async (t) => {
    const s = session(t);
    const { c, id } = await chatClient(s);
    c.perform(id, { action: 'tick' });
    await c.expect(dataFrame(id, 'tock'));
  });

  it('missing, "" or null action → receive, which gets the whole data', T, async (t) => {
    const s = session(t);
    const { c, id } = await chatClient(s);
    for (const data of [{ x: 1 }, { action: '', x: 2 }, { action: null, x: 3 }, {}]) {
      c.perform(id, data);
      await c.expect(dataFrame(id, { received: data }));
    }
  });

  it('speak broadcasts {"message","from"} to the room: A and B get it, C in another room does not', T, async (t) => {
    const s = session(t);
    const room = uniq('room');
    const id = chat(room);
    const alice = uniq('alice');
    const a = await s.connect(alice);
    const b = await s.connect(uniq('bob'));
    const c = await s.connect(uniq('carol'));
    await a.subscribe(id);
    await b.subscribe(id);
    const other = chat(uniq('room'));
    await c.subscribe(other);
    a.perform(id, { action: 'speak', message: 'hello room' });
    const want = dataFrame(id, { message: 'hello room', from: alice });
    await a.expect(want);
    await b.expect(want);
    await c.expectSilence(SILENCE, 'another room');
  });

  it('unknown action "dance" → no frame', T, async (t) => {
    const s = session(t);
    const { c, id } = await chatClient(s);
    c.perform(id, { action: 'dance' });
    await c.expectSilence(SILENCE);
    await c.probe(id);
  });

  describe('non-callable names → no frame', { concurrency: true }, () => {
    for (const name of [
      'stream_from',
      'stream_for',
      'stop_all_streams',
      'transmit',
      'broadcast_to',
      'subscribed',
      'unsubscribed',
      'reject',
      'perform',
      'perform_action',
      'params',
      'identifier',
      'current_user',
      'send',
      '__send__',
      'instance_eval',
      '_private',
      '__never__',
      'leak',
      'Echo',
      'echo ',
    ]) {
      it(name, T, async (t) => {
        const s = session(t);
        const { c, id } = await chatClient(s);
        c.perform(id, { action: name, message: 'x' });
        await c.expectSilence(SILENCE);
        await c.probe(id);
      });
    }
  });

  it('"subscribed" as an action does not stream twice; "unsubscribed" does not run the callback', T, async (t) => {
    const s = session(t);
    const auditor = await s.connect(uniq('auditor'));
    await auditor.subscribe(AUDIT);
    const { c, id, user, room } = await chatClient(s);
    c.perform(id, { action: 'subscribed' });
    c.perform(id, { action: 'unsubscribed' });
    c.perform(id, { action: 'speak', message: 'once' });
    await c.expect(dataFrame(id, { message: 'once', from: user }));
    await c.expectSilence(SILENCE, 'speak delivered once');
    await delay(50);
    const mine = auditor.queue.filter((f) => f.data?.message?.user === user);
    assert.deepEqual(mine, [], `no audit event for ${user} in ${room}`);
  });
});

// ---------------------------------------------------------------------------
// §5 Streams, timers, state
// ---------------------------------------------------------------------------

describe('§5 channels: streams, stream_for, timers, state', () => {
  it('NotesChannel stream_for: which = "notes:" + base64url-no-pad(gid://cable-test/Room/<room>), notify reaches it', T, async (t) => {
    const s = session(t);
    const c = await s.connect(uniq('alice'));
    const room = '7';
    const id = ident({ channel: 'NotesChannel', room });
    await c.subscribe(id);
    c.perform(id, { action: 'which' });
    const expected = `notes:${gidParam(`gid://cable-test/Room/${room}`)}`;
    assert.equal(expected, 'notes:Z2lkOi8vY2FibGUtdGVzdC9Sb29tLzc');
    await c.expect(dataFrame(id, { broadcasting: expected }));
    c.perform(id, { action: 'notify', note: 'n1' });
    await c.expect(dataFrame(id, { note: 'n1' }));
    const r = await postBroadcast(srv.base, { stream: expected, data: '{"note":"http"}' });
    assert.ok(r.status < 300, r.body);
    await c.expect(dataFrame(id, { note: 'http' }));
  });

  it('NotesChannel with a room needing padding: no "=" and URL-safe alphabet', T, async (t) => {
    const s = session(t);
    const c = await s.connect(uniq('alice'));
    const room = 'a?b>c~12';
    const id = ident({ channel: 'NotesChannel', room });
    await c.subscribe(id);
    c.perform(id, { action: 'which' });
    const f = await c.next();
    const want = `notes:${gidParam(`gid://cable-test/Room/${room}`)}`;
    assert.doesNotMatch(want, /[=+/]/);
    assert.deepEqual(f, dataFrame(id, { broadcasting: want }));
  });

  it('MultiStreamChannel: ms:a and ms:b; follow / unfollow {"name"}; stop_all', T, async (t) => {
    const s = session(t);
    const c = await s.connect(uniq('alice'));
    const probeId = chat(uniq('room'));
    await c.subscribe(probeId);
    const id = ident({ channel: 'MultiStreamChannel', k: uniq('k') });
    await c.subscribe(id);
    const extra = uniq('ms:c');
    const pub = async (stream, n) => {
      const r = await postBroadcast(srv.base, { stream, data: JSON.stringify({ n }) });
      assert.ok(r.status < 300, r.body);
    };
    await pub('ms:a', 1);
    await c.expect(dataFrame(id, { n: 1 }));
    await pub('ms:b', 2);
    await c.expect(dataFrame(id, { n: 2 }));
    await pub(extra, 3);
    await c.expectSilence(150, 'not following yet');
    c.perform(id, { action: 'follow', name: extra });
    await c.probe(probeId); // the follow was processed
    await pub(extra, 4);
    await c.expect(dataFrame(id, { n: 4 }));
    c.perform(id, { action: 'unfollow', name: 'ms:a' });
    await c.probe(probeId);
    await pub('ms:a', 5);
    await pub('ms:b', 6);
    await c.expect(dataFrame(id, { n: 6 }));
    c.perform(id, { action: 'stop_all' });
    await c.probe(probeId);
    await pub('ms:a', 7);
    await pub('ms:b', 8);
    await pub(extra, 9);
    await c.expectSilence(SILENCE, 'after stop_all');
  });

  it('stream_from twice for one name is de-duplicated (one frame per broadcast; one unfollow stops it)', T, async (t) => {
    const s = session(t);
    const c = await s.connect(uniq('alice'));
    const probeId = chat(uniq('room'));
    await c.subscribe(probeId);
    const id = ident({ channel: 'MultiStreamChannel', k: uniq('k') });
    await c.subscribe(id);
    c.perform(id, { action: 'follow', name: 'ms:a' }); // already streamed by subscribed
    c.perform(id, { action: 'unfollow', name: uniq('never-followed') }); // no-op
    await c.probe(probeId);
    await postBroadcast(srv.base, { stream: 'ms:a', data: '"once"' });
    await c.expect(dataFrame(id, 'once'));
    await c.expectSilence(200, 'a single delivery');
    c.perform(id, { action: 'unfollow', name: 'ms:a' });
    await c.probe(probeId);
    await postBroadcast(srv.base, { stream: 'ms:a', data: '"gone"' });
    await postBroadcast(srv.base, { stream: 'ms:b', data: '"b still"' });
    await c.expect(dataFrame(id, 'b still'));
  });

  it('TickerChannel: {"tick":1},{"tick":2},{"tick":3}…; no tick after unsubscribe', T, async (t) => {
    const s = session(t);
    const c = await s.connect(uniq('alice'));
    const probeId = chat(uniq('room'));
    await c.subscribe(probeId);
    const id = ident({ channel: 'TickerChannel' });
    await c.subscribe(id);
    const t0 = Date.now();
    for (const n of [1, 2, 3]) await c.expect(dataFrame(id, { tick: n }));
    const elapsed = Date.now() - t0;
    assert.ok(elapsed > 400 && elapsed < 1_500, `3 ticks at 0.2 s took ${elapsed} ms`);
    c.unsubscribe(id);
    // A tick already on the wire may precede the barrier, nothing after it.
    c.perform(probeId, { action: 'echo', barrier: 1 });
    for (;;) {
      const f = await c.next();
      if (f.identifier === probeId) break;
      assert.deepEqual(f, dataFrame(id, { tick: 4 }), c.transcript());
    }
    await c.expectSilence(500, 'no tick after unsubscribe');
  });

  it('TickerChannel counts per subscription; unsubscribing one leaves the other ticking', T, async (t) => {
    const s = session(t);
    const c = await s.connect(uniq('alice'));
    const id1 = ident({ channel: 'TickerChannel', n: 1 });
    const id2 = ident({ channel: 'TickerChannel', n: 2 });
    await c.subscribe(id1);
    await c.subscribe(id2);
    const seen = { [id1]: [], [id2]: [] };
    while (seen[id1].length < 3 || seen[id2].length < 3) {
      const f = await c.next();
      assert.ok(f.identifier in seen, c.transcript());
      seen[f.identifier].push(f.message.tick);
    }
    assert.deepEqual(seen[id1].slice(0, 3), [1, 2, 3]);
    assert.deepEqual(seen[id2].slice(0, 3), [1, 2, 3]);
    c.unsubscribe(id1);
    await delay(50);
    c.queue.length = 0;
    await delay(650);
    const later = c.queue.map((f) => f.data);
    assert.ok(later.length >= 2, `id2 keeps ticking:\n${c.transcript()}`);
    for (const f of later) assert.equal(f.identifier, id2, c.transcript());
  });

  it('StateChannel: count starts at 1, tick adds 2, per subscription', T, async (t) => {
    const s = session(t);
    const c = await s.connect(uniq('alice'));
    const a = ident({ channel: 'StateChannel', name: 'a' });
    const b = ident({ channel: 'StateChannel', name: 'b' });
    await c.subscribe(a);
    await c.subscribe(b);
    c.perform(a, { action: 'tick' });
    await c.expect(dataFrame(a, { count: 3, name: 'a' }));
    c.perform(a, { action: 'tick' });
    await c.expect(dataFrame(a, { count: 5, name: 'a' }));
    c.perform(b, { action: 'tick' });
    await c.expect(dataFrame(b, { count: 3, name: 'b' }));
    // A fresh subscription starts over.
    c.unsubscribe(a);
    await c.subscribe(a);
    c.perform(a, { action: 'tick' });
    await c.expect(dataFrame(a, { count: 3, name: 'a' }));
  });

  it('StateChannel keeps the JSON type of the name param', T, async (t) => {
    const s = session(t);
    const c = await s.connect(uniq('alice'));
    const a = ident({ channel: 'StateChannel', name: 42 });
    await c.subscribe(a);
    c.perform(a, { action: 'tick' });
    await c.expect(dataFrame(a, { count: 3, name: 42 }));
  });
});

// ---------------------------------------------------------------------------
// §4.6 / §1.5 ordering
// ---------------------------------------------------------------------------

describe('§1.5 / §4.6 ordering', () => {
  it('subscribe + 10 echoes in one burst: confirm first, then the echoes in order', T, async (t) => {
    const s = session(t);
    const c = await s.connect(uniq('alice'));
    const id = chat(uniq('room'));
    c.subscribeCmd(id);
    for (let i = 1; i <= 10; i++) c.perform(id, { action: 'echo', seq: i });
    await c.expect(confirmFrame(id));
    for (let i = 1; i <= 10; i++) await c.expect(dataFrame(id, { action: 'echo', seq: i }));
  });

  it('20 subscribe/echo pairs in one burst: each confirm precedes its echo, echoes in order', T, async (t) => {
    const s = session(t);
    const c = await s.connect(uniq('alice'));
    const base = uniq('p');
    const ids = Array.from({ length: 20 }, (_, i) => chat(`${base}-${i + 1}`));
    ids.forEach((id, i) => {
      c.subscribeCmd(id);
      c.perform(id, { action: 'echo', seq: i + 1 });
    });
    for (let i = 0; i < ids.length; i++) {
      await c.expect(confirmFrame(ids[i]));
      await c.expect(dataFrame(ids[i], { action: 'echo', seq: i + 1 }));
    }
  });

  it('subscribe → unsubscribe → subscribe in one burst: confirmed twice, ends subscribed', T, async (t) => {
    const s = session(t);
    const user = uniq('alice');
    const c = await s.connect(user);
    const id = chat(uniq('room'));
    c.subscribeCmd(id);
    c.unsubscribe(id);
    c.subscribeCmd(id);
    await c.expect(confirmFrame(id));
    await c.expect(confirmFrame(id));
    c.perform(id, { action: 'speak', message: 'still here' });
    await c.expect(dataFrame(id, { message: 'still here', from: user }));
    await c.expectSilence(SILENCE, 'one subscription, one delivery');
  });

  it('per-stream order: 100 speaks in a burst arrive in order at every subscriber', T, async (t) => {
    const s = session(t);
    const room = uniq('room');
    const id = chat(room);
    const user = uniq('alice');
    const a = await s.connect(user);
    const b = await s.connect(uniq('bob'));
    await a.subscribe(id);
    await b.subscribe(id);
    for (let i = 1; i <= 100; i++) a.perform(id, { action: 'speak', message: i });
    for (const c of [a, b]) {
      for (let i = 1; i <= 100; i++) await c.expect(dataFrame(id, { message: i, from: user }));
    }
  });

  it('subscribing during a broadcast storm: confirm first, then a gapless, ordered tail of the stream', T, async (t) => {
    const s = session(t);
    const room = uniq('room');
    const id = chat(room);
    const pub = await s.connect(uniq('pub'));
    await pub.subscribe(id);
    const subs = await Promise.all([1, 2, 3, 4].map((i) => s.connect(uniq(`sub${i}`))));
    const N = 300;
    for (let i = 1; i <= N; i++) pub.perform(id, { action: 'speak', message: i });
    // Subscribe while the burst is being processed.
    for (const [k, c] of subs.entries()) setTimeout(() => c.subscribeCmd(id), k * 3);
    for (const c of subs) {
      const first = await c.next({ what: 'confirm_subscription' });
      assert.deepEqual(first, confirmFrame(id), `no stream message before the confirmation\n${c.transcript()}`);
    }
    // Published once everyone is confirmed, so every subscriber must get it.
    pub.perform(id, { action: 'speak', message: N + 1 });
    // Everything published after the confirmation arrives, in order, without gaps.
    for (const c of subs) {
      let prev = null;
      for (;;) {
        const f = await c.next({ timeout: 3_000, what: `message ${N + 1}` });
        const n = f.message.message;
        if (prev !== null) assert.equal(n, prev + 1, `gap or reorder after ${prev}\n${c.transcript()}`);
        prev = n;
        if (n === N + 1) break;
      }
    }
  });

  it('commands written before the 101 arrives are processed after the welcome, in order', T, async () => {
    const id = chat(uniq('room'));
    const r = await rawUpgrade(srv.port, `/cable?token=${uniq('early')}`, {
      headers: { 'Sec-WebSocket-Protocol': 'actioncable-v1-json, actioncable-unsupported' },
      early: [
        JSON.stringify({ command: 'subscribe', identifier: id }),
        JSON.stringify({ command: 'message', identifier: id, data: JSON.stringify({ action: 'echo', early: 1 }) }),
        JSON.stringify({ command: 'message', identifier: id, data: JSON.stringify({ action: 'echo', early: 2 }) }),
      ],
    });
    try {
      assert.equal(r.status, 101, r.statusLine);
      assert.equal(r.headers['sec-websocket-protocol'], 'actioncable-v1-json');
      await r.waitFrames(4);
      const texts = r.frames.filter((f) => f.opcode === 1).map((f) => f.text);
      const nonPing = texts.filter((x) => !x.includes('"ping"'));
      assert.equal(nonPing[0], WELCOME, texts.join('\n'));
      assert.deepEqual(
        nonPing.slice(1, 4).map((x) => JSON.parse(x)),
        [
          confirmFrame(id),
          dataFrame(id, { action: 'echo', early: 1 }),
          dataFrame(id, { action: 'echo', early: 2 }),
        ],
        texts.join('\n'),
      );
    } finally {
      r.socket.destroy();
    }
  });

  it('commands sent on "open" (before the welcome is read) follow the welcome in order', T, async (t) => {
    const id = chat(uniq('room'));
    const c = new CableClient(`${srv.ws}/cable?token=${uniq('early')}`, {
      protocols: ['actioncable-v1-json', 'actioncable-unsupported'],
    });
    t.after(() => c.close());
    c.ws.once('open', () => {
      c.subscribeCmd(id);
      c.perform(id, { action: 'echo', early: true });
    });
    await c.opened;
    const first = await c.nextRaw();
    assert.equal(first.text, WELCOME);
    await c.expect(confirmFrame(id));
    await c.expect(dataFrame(id, { action: 'echo', early: true }));
  });
});

// ---------------------------------------------------------------------------
// POST /_broadcast
// ---------------------------------------------------------------------------

describe('POST /_broadcast', () => {
  it('{"stream","data":"<JSON text>"} reaches subscribers (objects, strings, arrays of them)', T, async (t) => {
    const s = session(t);
    const room = uniq('room');
    const a = await s.connect(uniq('alice'));
    const b = await s.connect(uniq('bob'));
    const id = chat(room);
    await a.subscribe(id);
    await b.subscribe(id);
    let r = await postBroadcast(srv.base, { stream: `room:${room}`, data: '{"message":"from http","n":1}' });
    assert.ok(r.status >= 200 && r.status < 300, `${r.status} ${r.body}`);
    for (const c of [a, b]) await c.expect(dataFrame(id, { message: 'from http', n: 1 }));
    r = await postBroadcast(srv.base, { stream: `room:${room}`, data: JSON.stringify('<p>a "string" & more</p>') });
    assert.ok(r.status < 300, r.body);
    for (const c of [a, b]) await c.expect(dataFrame(id, '<p>a "string" & more</p>'));
    r = await postBroadcast(srv.base, [
      { stream: `room:${room}`, data: '[1,2]' },
      { stream: `room:${room}`, data: '3' },
    ]);
    assert.ok(r.status < 300, r.body);
    for (const c of [a, b]) {
      await c.expect(dataFrame(id, [1, 2]));
      await c.expect(dataFrame(id, 3));
    }
  });

  for (const [name, body] of [
    ['a body that is not JSON', 'not json'],
    ['a missing data', { stream: 'room:x' }],
    ['a missing stream', { data: '{}' }],
    ['data that is not JSON text', { stream: 'room:x', data: '{not json' }],
    ['data as an object, not a string', { stream: 'room:x', data: { a: 1 } }],
  ]) {
    it(`${name} → 4xx, nothing delivered`, T, async (t) => {
      const s = session(t);
      const c = await s.connect(uniq('alice'));
      const id = chat('x');
      await c.subscribe(id);
      const r = await postBroadcast(srv.base, body);
      assert.ok(r.status >= 400 && r.status < 500, `${r.status} ${r.body}`);
      await c.expectSilence(150);
    });
  }
});

// ---------------------------------------------------------------------------
// §4.3 remote disconnect, §4.5 restart
// ---------------------------------------------------------------------------

describe('§4.3 remote disconnect (ControlChannel kick)', () => {
  for (const reconnect of [true, false, undefined]) {
    const label = reconnect === undefined ? 'no reconnect key (defaults to true)' : `reconnect:${reconnect}`;
    it(`kick ${label} → {"type":"disconnect","reason":"remote",…} then close 1000, only for that user`, T, async (t) => {
      const s = session(t);
      const room = uniq('room');
      const id = chat(room);
      const carol = uniq('carol');
      const c1 = await s.connect(carol);
      await c1.subscribe(id);
      const c2 = await s.connect(carol); // every connection of that user
      const dave = await s.connect(uniq('dave'));
      await dave.subscribe(id);
      const bob = await s.connect(uniq('bob'));
      await bob.subscribe(CONTROL);
      const data = { action: 'kick', user: carol };
      if (reconnect !== undefined) data.reconnect = reconnect;
      bob.perform(CONTROL, data);
      const frame = { type: 'disconnect', reason: 'remote', reconnect: reconnect ?? true };
      for (const c of [c1, c2]) {
        await c.expect(frame);
        assert.deepEqual(await c.expectClosed(), { code: 1000, reason: '' }, c.transcript());
      }
      await dave.expectSilence(100, 'other users are not disconnected');
      await dave.probe(id);
      await bob.expectSilence(50);
      bob.perform(CONTROL, { action: 'kick', user: uniq('nobody') });
      await dave.expectSilence(150);
      await dave.probe(id);
    });
  }
});

describe('§4.3 remote disconnect right after the welcome is never missed', () => {
  it('kick sent the moment the welcome arrives (5 times)', T, async (t) => {
    const s = session(t);
    const bob = await s.connect(uniq('bob'));
    await bob.subscribe(CONTROL);
    for (let i = 0; i < 5; i++) {
      const user = uniq('carol');
      const c = new CableClient(`${srv.ws}/cable?token=${user}`, { protocols: ['actioncable-v1-json'], label: user });
      t.after(() => c.close());
      c.ws.on('message', (m) => {
        if (String(m) === WELCOME) bob.perform(CONTROL, { action: 'kick', user });
      });
      await c.opened;
      const first = await c.nextRaw();
      assert.equal(first.text, WELCOME);
      await c.expect({ type: 'disconnect', reason: 'remote', reconnect: true });
      assert.equal((await c.expectClosed()).code, 1000);
    }
  });
});

describe('§4.5 server restart (ControlChannel restart)', () => {
  it('every connection (both mounts) gets server_restart then close 1000; new connections work', { timeout: 15_000 }, async (t) => {
    const own = await startFixture();
    t.after(() => own.stop());
    const s = session(t, () => own);
    const a = await s.connect(uniq('alice'));
    const id = chat(uniq('room'));
    await a.subscribe(id);
    const o = await s.connect(uniq('olga'), { path: '/cable-origin', origin: 'http://allowed.example' });
    const anon = await s.connect(undefined);
    const b = await s.connect(uniq('bob'));
    await b.subscribe(CONTROL);
    b.perform(CONTROL, { action: 'restart' });
    const frame = { type: 'disconnect', reason: 'server_restart', reconnect: true };
    for (const c of [b, a, o, anon]) {
      await c.expect(frame);
      assert.deepEqual(await c.expectClosed(), { code: 1000, reason: '' }, c.transcript());
    }
    const after = await s.connect(uniq('carol'));
    await after.subscribe(id);
    await after.probe(id);
  });
});

// ---------------------------------------------------------------------------
// §7 Turbo::StreamsChannel
// ---------------------------------------------------------------------------

describe('§7 Turbo::StreamsChannel (key "s3Krit")', () => {
  it('the signing helper reproduces the spec vector for "chat/2023"', () => {
    assert.equal(signStreamName('chat/2023', 's3Krit'), TURBO_VECTOR);
  });

  it('the vector confirms and streams "chat/2023": a broadcast arrives as a JSON string of HTML', T, async (t) => {
    const s = session(t);
    const c = await s.connect(uniq('alice'));
    const id = turbo(TURBO_VECTOR);
    await c.subscribe(id);
    const html = '<turbo-stream action="append" target="messages"><template><p>hi</p></template></turbo-stream>';
    const r = await postBroadcast(srv.base, { stream: 'chat/2023', data: JSON.stringify(html) });
    assert.ok(r.status < 300, r.body);
    await c.expect(dataFrame(id, html));
  });

  it('a name signed in the test (with the element\'s extra params) streams that name', T, async (t) => {
    const s = session(t);
    const c = await s.connect(uniq('alice'));
    const name = `${gidParam('gid://cable-test/Room/42')}:${uniq('messages')}`;
    const id = ident({ channel: 'Turbo::StreamsChannel', signed_stream_name: signStreamName(name), extra_param: 'x' });
    await c.subscribe(id);
    await postBroadcast(srv.base, { stream: name, data: JSON.stringify('<turbo-stream action="refresh"></turbo-stream>') });
    await c.expect(dataFrame(id, '<turbo-stream action="refresh"></turbo-stream>'));
  });

  const flip = (s, i) => s.slice(0, i) + (s[i] === 'a' ? 'b' : 'a') + s.slice(i + 1);
  for (const [name, signed] of [
    ['a tampered digest', flip(TURBO_VECTOR, TURBO_VECTOR.length - 1)],
    ['a tampered payload', `ImNoYXQvMjAyNCI=${TURBO_VECTOR.slice(TURBO_VECTOR.indexOf('--'))}`],
    ['an upper-case digest', TURBO_VECTOR.replace(/--(.*)$/, (m, d) => `--${d.toUpperCase()}`)],
    ['a truncated digest', TURBO_VECTOR.slice(0, -2)],
    ['no separator', 'ImNoYXQvMjAyMyI='],
    ['garbage', 'not a signed name'],
    ['an empty string', ''],
    ['the wrong key', signStreamName('chat/2023', 'wrong')],
    ['a number', 12345],
    ['null', null],
    ['missing (undefined)', undefined],
  ]) {
    it(`${name} → reject_subscription`, T, async (t) => {
      const s = session(t);
      const c = await s.connect(uniq('alice'));
      const id = turbo(signed);
      await c.subscribe(id, { expect: 'reject' });
      const r = await postBroadcast(srv.base, { stream: 'chat/2023', data: '"leak"' });
      assert.ok(r.status < 300);
      await c.expectSilence(150, 'a rejected Turbo subscription gets nothing');
    });
  }
});

// ---------------------------------------------------------------------------
// §4.4 / §5.2 unsubscribe callbacks (AuditChannel)
// ---------------------------------------------------------------------------

describe('§4.4 / §5.2 unsubscribe callbacks, seen on AuditChannel', () => {
  const byUser = (user) => (f) => f.identifier === AUDIT && f.message?.user === user;

  it('unsubscribe → {"event":"unsubscribed","user","room"} on audit (room keeps its JSON type)', T, async (t) => {
    const s = session(t);
    const auditor = await s.connect(uniq('auditor'));
    await auditor.subscribe(AUDIT);
    const user = uniq('alice');
    const c = await s.connect(user);
    const room = uniq('room');
    await c.subscribe(chat(room));
    c.unsubscribe(chat(room));
    let f = await auditor.nextMatching(byUser(user));
    assert.deepEqual(f, dataFrame(AUDIT, { event: 'unsubscribed', user, room }));
    const numeric = ident({ channel: 'ChatChannel', room: 7 });
    await c.subscribe(numeric);
    c.unsubscribe(numeric);
    f = await auditor.nextMatching(byUser(user));
    assert.deepEqual(f, dataFrame(AUDIT, { event: 'unsubscribed', user, room: 7 }));
  });

  it('a rejected subscription runs unsubscribed too (room "forbidden")', T, async (t) => {
    const s = session(t);
    const auditor = await s.connect(uniq('auditor'));
    await auditor.subscribe(AUDIT);
    const user = uniq('alice');
    const c = await s.connect(user);
    await c.subscribe(chat('forbidden'), { expect: 'reject' });
    const f = await auditor.nextMatching(byUser(user), { what: 'the unsubscribed event of the rejected subscription' });
    assert.deepEqual(f, dataFrame(AUDIT, { event: 'unsubscribed', user, room: 'forbidden' }));
  });

  it('closing the connection: unsubscribed for each subscription, then {"event":"disconnect","user"}', T, async (t) => {
    const s = session(t);
    const auditor = await s.connect(uniq('auditor'));
    await auditor.subscribe(AUDIT);
    const user = uniq('alice');
    const c = await s.connect(user);
    const r1 = uniq('room');
    const r2 = uniq('room');
    await c.subscribe(chat(r1));
    await c.subscribe(chat(r2));
    await c.close();
    const events = [];
    for (let i = 0; i < 3; i++) events.push((await auditor.nextMatching(byUser(user))).message);
    const unsubs = events.slice(0, 2).sort((x, y) => String(x.room).localeCompare(String(y.room)));
    assert.deepEqual(
      unsubs,
      [
        { event: 'unsubscribed', user, room: r1 },
        { event: 'unsubscribed', user, room: r2 },
      ].sort((x, y) => x.room.localeCompare(y.room)),
    );
    assert.deepEqual(events[2], { event: 'disconnect', user });
  });

  it('a remotely disconnected connection also reports its disconnect', T, async (t) => {
    const s = session(t);
    const auditor = await s.connect(uniq('auditor'));
    await auditor.subscribe(AUDIT);
    const user = uniq('carol');
    const c = await s.connect(user);
    const bob = await s.connect(uniq('bob'));
    await bob.subscribe(CONTROL);
    bob.perform(CONTROL, { action: 'kick', user, reconnect: false });
    await c.expectClosed();
    const f = await auditor.nextMatching(byUser(user));
    assert.deepEqual(f, dataFrame(AUDIT, { event: 'disconnect', user }));
  });
});
