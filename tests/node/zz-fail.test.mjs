// Interoperability tests: the keayl-demo server against independent Node.js
// clients — raw TCP (node:net), fetch, the `eventsource` package (a WHATWG
// EventSource implementation) and `eventsource-parser`.
//
// The server binary comes from $KEAYL_DEMO_BIN, else target/debug/keayl-demo
// of this repository (build it first: `cargo build -p keayl-demo`).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { EventSource } from 'eventsource';
import { createParser } from 'eventsource-parser';

const __dirname = path.dirname(fileURLToPath(import.meta.url));
const DEMO_BIN = process.env.KEAYL_DEMO_BIN
  ? path.resolve(process.env.KEAYL_DEMO_BIN)
  : path.resolve(__dirname, '../../target/debug/keayl-demo');

const TEST_TIMEOUT = 10_000;
const STARTUP_TIMEOUT = 10_000;

// ---------------------------------------------------------------------------
// Server process
// ---------------------------------------------------------------------------

/** A port that was free a moment ago: bind port 0, read it, close. */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Resolve once a TCP connection to host:port succeeds, else reject. */
function tryConnect(port, host = '127.0.0.1') {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port, host });
    sock.once('connect', () => {
      sock.destroy();
      resolve();
    });
    sock.once('error', (err) => {
      sock.destroy();
      reject(err);
    });
  });
}

const delay = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Start keayl-demo on a free port and wait until it accepts connections.
 * Returns { port, base, stop, output }.
 */
async function startDemo() {
  if (!existsSync(DEMO_BIN)) {
    throw new Error(
      `keayl-demo binary not found at ${DEMO_BIN}; build it with ` +
        '`cargo build -p keayl-demo` or set KEAYL_DEMO_BIN',
    );
  }
  const port = await freePort();
  const child = spawn(DEMO_BIN, ['--addr', `127.0.0.1:${port}`], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' },
  });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    });
  });
  let spawnError = null;
  child.once('error', (err) => (spawnError = err));
  // Last resort: never leave the server behind, whatever happens.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);

  const stop = async () => {
    process.removeListener('exit', killOnExit);
    if (exited) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 3_000);
    await exitPromise;
    clearTimeout(timer);
  };

  const deadline = Date.now() + STARTUP_TIMEOUT;
  for (;;) {
    if (spawnError || exited) {
      await stop();
      throw new Error(
        `keayl-demo failed to start (${spawnError ?? JSON.stringify(exited)}):\n${output}`,
      );
    }
    try {
      await tryConnect(port);
      break;
    } catch {
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`keayl-demo did not accept connections on ${port} within 10 s:\n${output}`);
      }
      await delay(50);
    }
  }
  return { port, base: `http://127.0.0.1:${port}`, stop, output: () => output };
}

// ---------------------------------------------------------------------------
// HTTP helpers
// ---------------------------------------------------------------------------

/**
 * Send a raw HTTP/1.1 request over node:net and read until the server closes
 * (`Connection: close`). Returns the status line, lower-cased headers and the
 * raw body bytes (still transfer-encoded).
 */
function rawGet(port, target, { timeout = TEST_TIMEOUT - 1_000 } = {}) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    const chunks = [];
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`raw GET ${target}: no end of response within ${timeout} ms`));
    }, timeout);
    sock.once('connect', () => {
      sock.write(`GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    });
    sock.on('data', (d) => chunks.push(d));
    sock.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    sock.once('end', () => {
      clearTimeout(timer);
      sock.destroy();
      const all = Buffer.concat(chunks);
      const headEnd = all.indexOf('\r\n\r\n');
      if (headEnd < 0) {
        reject(new Error(`no header terminator in response: ${JSON.stringify(all.toString())}`));
        return;
      }
      const [statusLine, ...headerLines] = all.subarray(0, headEnd).toString('latin1').split('\r\n');
      const headers = {};
      for (const line of headerLines) {
        const i = line.indexOf(':');
        headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
      }
      resolve({ statusLine, headers, body: all.subarray(headEnd + 4) });
    });
  });
}

/** Decode a complete `Transfer-Encoding: chunked` body; strict about framing. */
function decodeChunked(buf) {
  const parts = [];
  let pos = 0;
  for (;;) {
    const lineEnd = buf.indexOf('\r\n', pos);
    assert.ok(lineEnd >= 0, `chunk size line not terminated at offset ${pos}`);
    const sizeField = buf.subarray(pos, lineEnd).toString('latin1').split(';')[0].trim();
    assert.match(sizeField, /^[0-9a-fA-F]+$/, `bad chunk size ${JSON.stringify(sizeField)}`);
    const size = parseInt(sizeField, 16);
    pos = lineEnd + 2;
    if (size === 0) {
      // Optional trailer fields, then the final CRLF.
      const rest = buf.subarray(pos).toString('latin1');
      assert.ok(rest.endsWith('\r\n'), `chunked body not terminated: ${JSON.stringify(rest)}`);
      return { body: Buffer.concat(parts), chunks: parts.length };
    }
    assert.ok(pos + size + 2 <= buf.length, 'truncated chunk');
    parts.push(buf.subarray(pos, pos + size));
    pos += size;
    assert.equal(buf.subarray(pos, pos + 2).toString('latin1'), '\r\n', 'chunk not followed by CRLF');
    pos += 2;
  }
}

/**
 * fetch `url`, feed the body to eventsource-parser and collect what it
 * reports, in order, as { type: 'event' | 'retry' | 'comment', ... }, until
 * `done(items)` is true or the stream ends. Aborts the request when finished.
 */
async function parseSse(url, { headers = {}, done = () => false } = {}) {
  const controller = new AbortController();
  const items = [];
  const parser = createParser({
    onEvent: (e) => items.push({ type: 'event', event: e.event, id: e.id, data: e.data }),
    onRetry: (retry) => items.push({ type: 'retry', retry }),
    onComment: (comment) => items.push({ type: 'comment', comment }),
  });
  const response = await fetch(url, { headers, signal: controller.signal });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  try {
    for (;;) {
      const { value, done: ended } = await reader.read();
      if (value) parser.feed(decoder.decode(value, { stream: !ended }));
      if (ended || done(items)) break;
    }
  } finally {
    controller.abort();
    await reader.cancel().catch(() => {});
  }
  return { response, items };
}

/**
 * Open an EventSource, register `listeners` ({type: (event, es) => ...}),
 * and resolve with the value passed to `finish` — or reject on timeout or
 * `fail`. The EventSource is always closed.
 */
function withEventSource(url, init, listeners, { timeout = TEST_TIMEOUT - 1_000 } = {}) {
  return new Promise((resolve, reject) => {
    const es = new EventSource(url, init);
    let settled = false;
    const settle = (fn, v) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      es.close();
      fn(v);
    };
    const ctl = { finish: (v) => settle(resolve, v), fail: (e) => settle(reject, e), es };
    const timer = setTimeout(
      () => settle(reject, new Error(`EventSource ${url}: timed out after ${timeout} ms`)),
      timeout,
    );
    for (const [type, fn] of Object.entries(listeners)) {
      es.addEventListener(type, (ev) => {
        try {
          fn(ev, ctl);
        } catch (err) {
          ctl.fail(err);
        }
      });
    }
  });
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

describe('keayl-demo over HTTP', () => {
  let demo;

  before(async () => {
    demo = await startDemo();
  });

  after(async () => {
    await demo?.stop();
  });

  describe('GET /numbers (live response)', () => {
    it('streams 1..10 as a chunked body over raw TCP', { timeout: TEST_TIMEOUT }, async () => {
      const { statusLine, headers, body } = await rawGet(demo.port, '/numbers');
      assert.match(statusLine, /^HTTP\/1\.1 200 /);
      assert.equal(headers['transfer-encoding'], 'chunked');
      assert.equal(headers['content-length'], undefined);
      const decoded = decodeChunked(body);
      assert.equal(decoded.body.toString('utf8'), '1\n2\n3\n4\n5\n6\n7\n8\n9\n10\nX');
    });
  });

  describe('GET /events (SSE)', () => {
    const EXPECTED_BODY =
      'event: greeting\nretry: 5000\ndata: hello\n\n' +
      'retry: 5000\ndata: world\n\n' +
      'retry: 1000\ndata: pong\n\n';

    it('sends the exact SSE bytes and headers (fetch)', { timeout: TEST_TIMEOUT }, async () => {
      const res = await fetch(`${demo.base}/events`);
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('content-type'), 'text/event-stream');
      assert.equal(res.headers.get('cache-control'), 'no-cache');
      assert.equal(res.headers.get('x-accel-buffering'), 'no');
      const body = Buffer.from(await res.arrayBuffer());
      assert.equal(body.toString('utf8'), EXPECTED_BODY);
      assert.deepEqual(body, Buffer.from(EXPECTED_BODY, 'utf8'));
    });

    it('sends the same bytes chunked over raw TCP', { timeout: TEST_TIMEOUT }, async () => {
      const { statusLine, headers, body } = await rawGet(demo.port, '/events');
      assert.match(statusLine, /^HTTP\/1\.1 200 /);
      assert.equal(headers['content-type'], 'text/event-stream');
      assert.equal(headers['transfer-encoding'], 'chunked');
      assert.equal(decodeChunked(body).body.toString('utf8'), EXPECTED_BODY);
    });

    it('parses as greeting/hello, world, pong with retry 5000, 5000, 1000 (eventsource-parser)', { timeout: TEST_TIMEOUT }, async () => {
      const { items } = await parseSse(`${demo.base}/events`);
      assert.deepEqual(items, [
        { type: 'retry', retry: 5000 },
        { type: 'event', event: 'greeting', id: undefined, data: 'hello' },
        { type: 'retry', retry: 5000 },
        { type: 'event', event: undefined, id: undefined, data: 'world' },
        { type: 'retry', retry: 1000 },
        { type: 'event', event: undefined, id: undefined, data: 'pong' },
      ]);
    });

    it('delivers greeting "hello", then message "world" and "pong" (eventsource)', { timeout: TEST_TIMEOUT }, async () => {
      const seen = [];
      const record = (ev, ctl) => {
        seen.push({ type: ev.type, data: ev.data, lastEventId: ev.lastEventId });
        if (ev.data === 'pong') ctl.finish();
      };
      await withEventSource(`${demo.base}/events`, undefined, {
        greeting: record,
        message: record,
      });
      assert.deepEqual(seen, [
        { type: 'greeting', data: 'hello', lastEventId: '' },
        { type: 'message', data: 'world', lastEventId: '' },
        { type: 'message', data: 'pong', lastEventId: '' },
      ]);
    });

    it('reconnects after the stream ends, honouring the last retry (1000 ms, not 5000)', { timeout: TEST_TIMEOUT }, async () => {
      // The stream ends after "pong" (retry: 1000). A conforming client then
      // waits the reconnection time and connects again, getting "hello" anew.
      let greetings = 0;
      let endedAt = null;
      const gap = await withEventSource(`${demo.base}/events`, undefined, {
        error: (_ev, ctl) => {
          // Fired when the stream ends and the client schedules a reconnect.
          if (ctl.es.readyState === EventSource.CONNECTING && endedAt === null) {
            endedAt = performance.now();
          }
        },
        greeting: (_ev, ctl) => {
          greetings += 1;
          if (greetings === 2) ctl.finish(performance.now() - endedAt);
        },
      });
      assert.ok(endedAt !== null, 'the client saw the end of the first stream');
      assert.ok(gap >= 900, `reconnected too early (${gap.toFixed(0)} ms)`);
      assert.ok(gap < 4_000, `reconnected too late (${gap.toFixed(0)} ms): retry 1000 not honoured`);
    });
  });

  describe('GET /clock (SSE)', () => {
    const checkTick = (ev) => {
      assert.equal(ev.type, 'tick');
      assert.match(ev.lastEventId, /^\d+$/);
      const payload = JSON.parse(ev.data);
      assert.deepEqual(Object.keys(payload).sort(), ['n', 'unix']);
      assert.equal(payload.n, Number(ev.lastEventId));
      assert.ok(Number.isInteger(payload.unix));
      assert.ok(
        Math.abs(payload.unix - Date.now() / 1000) < 60,
        `unix ${payload.unix} is not close to now`,
      );
      return payload;
    };

    it('emits tick events with consecutive ids matching n (eventsource)', { timeout: TEST_TIMEOUT }, async () => {
      const ticks = await withEventSource(`${demo.base}/clock`, undefined, {
        tick: (ev, ctl) => {
          (ctl.ticks ??= []).push({ id: ev.lastEventId, payload: checkTick(ev) });
          if (ctl.ticks.length === 2) ctl.finish(ctl.ticks);
        },
        message: (ev, ctl) => ctl.fail(new Error(`unexpected untyped message ${ev.data}`)),
      });
      assert.equal(ticks[0].id, '1', 'a fresh stream counts from 1');
      assert.equal(Number(ticks[1].id), Number(ticks[0].id) + 1);
      assert.equal(ticks[1].payload.n, ticks[0].payload.n + 1);
      assert.ok(ticks[1].payload.unix >= ticks[0].payload.unix);
    });

    it('resumes after Last-Event-ID: 41 with id 42 (eventsource, custom fetch)', { timeout: TEST_TIMEOUT }, async () => {
      const sent = [];
      const init = {
        fetch: (input, fetchInit) => {
          const headers = { ...fetchInit.headers, 'Last-Event-ID': '41' };
          sent.push(headers);
          return fetch(input, { ...fetchInit, headers });
        },
      };
      const first = await withEventSource(`${demo.base}/clock`, init, {
        tick: (ev, ctl) => ctl.finish({ id: ev.lastEventId, payload: checkTick(ev) }),
      });
      assert.equal(sent.length, 1);
      assert.equal(sent[0].Accept, 'text/event-stream');
      assert.equal(first.id, '42');
      assert.equal(first.payload.n, 42);
    });

    it('opens with a comment, then ticks 42, 43 after Last-Event-ID: 41 (fetch + eventsource-parser)', { timeout: TEST_TIMEOUT }, async () => {
      const { response, items } = await parseSse(`${demo.base}/clock`, {
        headers: { Accept: 'text/event-stream', 'Last-Event-ID': '41' },
        done: (items) => items.filter((i) => i.type === 'event').length >= 2,
      });
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('content-type'), 'text/event-stream');
      assert.equal(response.headers.get('cache-control'), 'no-cache');
      assert.equal(response.headers.get('x-accel-buffering'), 'no');
      assert.deepEqual(items[0], { type: 'comment', comment: 'clock stream open' }, 'the stream opens with a comment');
      const events = items.filter((i) => i.type === 'event');
      assert.deepEqual(
        events.map((e) => [e.event, e.id]),
        [
          ['tick', '42'],
          ['tick', '43'],
        ],
      );
      assert.deepEqual(
        events.map((e) => JSON.parse(e.data).n),
        [42, 43],
      );
      assert.ok(!items.some((i) => i.type === 'retry'), '/clock sets no retry');
    });
  });

  // Multi-line data, ids and retry round-trips need an endpoint the demo does
  // not have; the Rust tests of keayl-live cover them.
  it.skip('multi-line data / id / retry round-trip (no demo endpoint; covered by Rust tests)');
});
