// A raw Action Cable client on top of `ws`: every frame is recorded with its
// time, pings are kept apart from the other frames, and helpers wait for the
// next frame, assert silence, subscribe and probe.

import assert from 'node:assert/strict';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import net from 'node:net';

import WebSocket from 'ws';

export const PROTOCOLS = ['actioncable-v1-json', 'actioncable-unsupported'];
export const WELCOME = '{"type":"welcome"}';

/** Identifier string for a params object (insertion order kept, like Rails JS). */
export const ident = (params) => JSON.stringify(params);

export const confirmFrame = (identifier) => ({ identifier, type: 'confirm_subscription' });
export const rejectFrame = (identifier) => ({ identifier, type: 'reject_subscription' });
export const dataFrame = (identifier, message) => ({ identifier, message });

const isPing = (f) => f && typeof f === 'object' && !Array.isArray(f) && f.type === 'ping';

let seq = 0;
/** A unique name for users/rooms, so tests sharing a server never collide. */
export function uniq(prefix = 'u') {
  seq += 1;
  return `${prefix}-${process.pid}-${seq}-${randomBytes(2).toString('hex')}`;
}

/** Every client opened and not yet closed: closed by `closeAll` after each test. */
const open = new Set();

export async function closeAll() {
  const clients = [...open];
  open.clear();
  await Promise.all(clients.map((c) => c.close().catch(() => {})));
}

export class CableClient {
  /**
   * Open a WebSocket. Options: protocols (default the Rails client's), headers,
   * origin, label (for transcripts), welcome (wait for and check the welcome,
   * default true), track (an array the client is pushed to, for cleanup).
   */
  static async connect(url, { protocols = PROTOCOLS, headers, origin, label, welcome = true, track } = {}) {
    const client = new CableClient(url, { protocols, headers, origin, label });
    if (track) track.push(client);
    await client.opened;
    if (welcome) {
      const first = await client.nextRaw({ timeout: 3_000 });
      assert.equal(first.text, WELCOME, `first frame must be exactly ${WELCOME}\n${client.transcript()}`);
    }
    return client;
  }

  constructor(url, { protocols, headers, origin, label }) {
    this.url = url;
    this.label = label ?? new URL(url).searchParams.get('token') ?? 'anon';
    this.t0 = Date.now();
    this.log = []; // { t, dir: '<'|'>'|'*', text }
    this.frames = []; // every received text frame, parsed: { t, text, data }
    this.queue = []; // received non-ping frames not consumed yet
    this.pings = []; // received pings: { t, data }
    this.waiters = [];
    this.closeInfo = null;
    const opts = {};
    if (headers) opts.headers = headers;
    if (origin) opts.origin = origin;
    this.ws = new WebSocket(url, protocols, opts);
    open.add(this);
    this.upgrade = null;
    this.ws.on('upgrade', (res) => {
      this.upgrade = { status: res.statusCode, headers: res.headers };
    });
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', () => {
        this.record('*', `open protocol=${JSON.stringify(this.ws.protocol)}`);
        resolve(this);
      });
      this.ws.once('unexpected-response', (req, res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => {
          const err = new Error(`unexpected response ${res.statusCode}`);
          err.status = res.statusCode;
          err.headers = res.headers;
          err.body = body;
          req.destroy();
          reject(err);
        });
      });
      this.ws.once('error', reject);
    });
    this.opened.catch(() => open.delete(this));
    this.ws.on('error', (err) => this.record('*', `error ${err.message}`));
    this.ws.on('message', (raw, isBinary) => {
      const text = raw.toString('utf8');
      this.record('<', isBinary ? `[binary ${raw.length} bytes]` : text);
      let data;
      try {
        data = JSON.parse(text);
      } catch {
        data = undefined;
      }
      const frame = { t: Date.now() - this.t0, text, data, isBinary };
      this.frames.push(frame);
      if (isPing(data)) this.pings.push(frame);
      else this.queue.push(frame);
      this.wake();
    });
    this.closed = new Promise((resolve) => {
      this.ws.once('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        this.record('*', `closed code=${code} reason=${JSON.stringify(this.closeInfo.reason)}`);
        open.delete(this);
        this.wake();
        resolve(this.closeInfo);
      });
    });
  }

  record(dir, text) {
    this.log.push({ t: Date.now() - this.t0, dir, text });
  }

  wake() {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  /** Resolves on the next event (frame or close), or after `ms`. */
  changed(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** The frames both ways, as in the Rails transcripts. */
  transcript() {
    return this.log
      .map((e) => `+${String(e.t).padStart(6)}ms ${this.label} ${e.dir} ${e.text}`)
      .join('\n');
  }

  send(obj) {
    const text = typeof obj === 'string' ? obj : JSON.stringify(obj);
    this.record('>', text);
    this.ws.send(text);
  }

  sendBinary(buf) {
    this.record('>', `[binary ${buf.length} bytes]`);
    this.ws.send(buf, { binary: true });
  }

  /** The next non-ping frame (raw record), waiting up to `timeout` ms. */
  async nextRaw({ timeout = 2_000, what = 'a frame' } = {}) {
    const deadline = Date.now() + timeout;
    for (;;) {
      if (this.queue.length) return this.queue.shift();
      if (this.closeInfo) {
        throw new Error(`${this.label}: closed (${this.closeInfo.code}) while waiting for ${what}\n${this.transcript()}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.label}: no ${what} within ${timeout} ms\n${this.transcript()}`);
      await this.changed(left);
    }
  }

  /** The next non-ping frame, parsed. */
  async next(opts) {
    return (await this.nextRaw(opts)).data;
  }

  /** Assert the next non-ping frame deep-equals `expected`. */
  async expect(expected, { timeout = 2_000, message } = {}) {
    const got = await this.next({ timeout, what: JSON.stringify(expected) });
    assert.deepStrictEqual(got, expected, `${message ?? 'unexpected frame'}\n${this.transcript()}`);
    return got;
  }

  /** Skip frames until one satisfies `pred` (others are dropped); returns it. */
  async nextMatching(pred, { timeout = 2_000, what = 'a matching frame' } = {}) {
    const deadline = Date.now() + timeout;
    for (;;) {
      const left = deadline - Date.now();
      const f = await this.next({ timeout: Math.max(left, 1), what });
      if (pred(f)) return f;
    }
  }

  /** Assert that no non-ping frame arrives within `ms` (pings are fine). */
  async expectSilence(ms = 300, message = 'expected no frame') {
    const deadline = Date.now() + ms;
    while (!this.queue.length && Date.now() < deadline) await this.changed(deadline - Date.now());
    assert.equal(
      this.queue.length,
      0,
      `${message}, got: ${this.queue.map((f) => f.text).join(' | ')}\n${this.transcript()}`,
    );
  }

  /** The next ping (frames other than pings stay queued). */
  async nextPing({ timeout = 2_000, after = 0 } = {}) {
    const deadline = Date.now() + timeout;
    for (;;) {
      if (this.pings.length > after) return this.pings[after];
      if (this.closeInfo) throw new Error(`${this.label}: closed while waiting for a ping\n${this.transcript()}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.label}: no ping within ${timeout} ms\n${this.transcript()}`);
      await this.changed(left);
    }
  }

  subscribeCmd(identifier) {
    this.send({ command: 'subscribe', identifier });
  }

  /** Subscribe and expect confirm_subscription (or `expect`: 'reject'). */
  async subscribe(identifier, { expect = 'confirm', timeout = 2_000 } = {}) {
    this.subscribeCmd(identifier);
    const want = expect === 'reject' ? rejectFrame(identifier) : confirmFrame(identifier);
    await this.expect(want, { timeout, message: `subscribe ${identifier}` });
  }

  unsubscribe(identifier) {
    this.send({ command: 'unsubscribe', identifier });
  }

  /** Send a `message` command whose data is JSON-encoded `data`. */
  perform(identifier, data) {
    this.send({ command: 'message', identifier, data: JSON.stringify(data) });
  }

  /** Echo round trip on a ChatChannel subscription: the connection is alive. */
  async probe(identifier, tag = uniq('probe')) {
    const data = { action: 'echo', probe: tag };
    this.perform(identifier, data);
    await this.expect(dataFrame(identifier, data), { message: `liveness probe ${tag}` });
  }

  async close(code = 1000) {
    if (this.closeInfo) return this.closeInfo;
    try {
      if (this.ws.readyState === WebSocket.CONNECTING) {
        this.ws.terminate();
      } else {
        this.record('>', `[close ${code}]`);
        this.ws.close(code);
      }
    } catch {
      this.ws.terminate();
    }
    const timer = setTimeout(() => this.ws.terminate(), 1_000);
    const info = await this.closed;
    clearTimeout(timer);
    return info;
  }

  /** Wait for the server to close; returns { code, reason }. */
  async expectClosed({ timeout = 2_000 } = {}) {
    let timer;
    const t = new Promise((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`${this.label}: not closed within ${timeout} ms\n${this.transcript()}`)),
        timeout,
      );
    });
    try {
      return await Promise.race([this.closed, t]);
    } finally {
      clearTimeout(timer);
    }
  }
}

// ---------------------------------------------------------------------------
// Turbo signed stream names
// ---------------------------------------------------------------------------

/** Turbo's signed stream name: base64(JSON(name)) + "--" + hex HMAC-SHA256(key, that base64). */
export function signStreamName(name, key = 's3Krit') {
  const b64 = Buffer.from(JSON.stringify(name)).toString('base64');
  return `${b64}--${createHmac('sha256', key).update(b64).digest('hex')}`;
}

/** GlobalID#to_param: URL-safe base64 without padding. */
export const gidParam = (gid) => Buffer.from(gid).toString('base64url');

// ---------------------------------------------------------------------------
// Raw WebSocket over node:net (for handshake details and frames sent before
// the 101 response arrives)
// ---------------------------------------------------------------------------

/** A masked client text frame. */
export function encodeClientFrame(text, opcode = 0x1) {
  const payload = Buffer.from(text, 'utf8');
  const mask = randomBytes(4);
  let header;
  if (payload.length < 126) {
    header = Buffer.from([0x80 | opcode, 0x80 | payload.length]);
  } else if (payload.length < 65536) {
    header = Buffer.alloc(4);
    header[0] = 0x80 | opcode;
    header[1] = 0x80 | 126;
    header.writeUInt16BE(payload.length, 2);
  } else {
    header = Buffer.alloc(10);
    header[0] = 0x80 | opcode;
    header[1] = 0x80 | 127;
    header.writeBigUInt64BE(BigInt(payload.length), 2);
  }
  const masked = Buffer.alloc(payload.length);
  for (let i = 0; i < payload.length; i++) masked[i] = payload[i] ^ mask[i % 4];
  return Buffer.concat([header, mask, masked]);
}

/** Decode unmasked server frames from `buf`; returns { frames, rest }. */
function decodeServerFrames(buf) {
  const frames = [];
  let off = 0;
  for (;;) {
    if (buf.length - off < 2) break;
    const b0 = buf[off];
    const b1 = buf[off + 1];
    let len = b1 & 0x7f;
    let p = off + 2;
    if (len === 126) {
      if (buf.length - p < 2) break;
      len = buf.readUInt16BE(p);
      p += 2;
    } else if (len === 127) {
      if (buf.length - p < 8) break;
      len = Number(buf.readBigUInt64BE(p));
      p += 8;
    }
    if (buf.length - p < len) break;
    const payload = buf.subarray(p, p + len);
    const opcode = b0 & 0x0f;
    frames.push({ opcode, payload, text: opcode === 1 ? payload.toString('utf8') : undefined });
    off = p + len;
  }
  return { frames, rest: buf.subarray(off) };
}

/**
 * Send an upgrade request over a plain TCP socket, optionally followed in the
 * same write by WebSocket text frames (so they reach the server before it has
 * answered). Resolves with { status, headers, body, frames, socket, waitFrames }.
 */
export function rawUpgrade(port, path, { headers = {}, early = [], timeout = 3_000 } = {}) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    const key = randomBytes(16).toString('base64');
    let buf = Buffer.alloc(0);
    let head = null;
    const frames = [];
    const waiters = [];
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`raw upgrade ${path}: no response within ${timeout} ms`));
    }, timeout);
    sock.once('connect', () => {
      const lines = [
        `GET ${path} HTTP/1.1`,
        `Host: 127.0.0.1:${port}`,
        'Connection: Upgrade',
        'Upgrade: websocket',
        'Sec-WebSocket-Version: 13',
        `Sec-WebSocket-Key: ${key}`,
        ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
      ];
      const req = Buffer.from(`${lines.join('\r\n')}\r\n\r\n`);
      sock.write(Buffer.concat([req, ...early.map((t) => encodeClientFrame(t))]));
    });
    let ended = false;
    const finish = () => {
      clearTimeout(timer);
      resolve({
        ...head,
        frames,
        socket: sock,
        accept: createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64'),
        /** Wait until at least n frames arrived. */
        async waitFrames(n, ms = 2_000) {
          const deadline = Date.now() + ms;
          while (frames.length < n && !ended && Date.now() < deadline) {
            await new Promise((r) => {
              const t = setTimeout(r, deadline - Date.now());
              waiters.push(() => {
                clearTimeout(t);
                r();
              });
            });
          }
          return frames;
        },
      });
    };
    const wakeAll = () => waiters.splice(0).forEach((w) => w());
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (!head) {
        const i = buf.indexOf('\r\n\r\n');
        if (i < 0) return;
        const [statusLine, ...hl] = buf.subarray(0, i).toString('latin1').split('\r\n');
        const hdrs = {};
        for (const l of hl) {
          const c = l.indexOf(':');
          hdrs[l.slice(0, c).trim().toLowerCase()] = l.slice(c + 1).trim();
        }
        head = { status: Number(statusLine.split(' ')[1]), statusLine, headers: hdrs, body: '' };
        buf = buf.subarray(i + 4);
        if (head.status !== 101) {
          // Non-upgrade: collect the body until the server closes or length is met.
          const len = Number(hdrs['content-length'] ?? NaN);
          const done = () => {
            head.body = buf.toString('utf8');
            sock.destroy();
            finish();
          };
          if (!Number.isNaN(len) && buf.length >= len) return done();
          sock.on('data', () => {
            if (!Number.isNaN(len) && buf.length >= len) done();
          });
          sock.once('end', done);
          return;
        }
        finish();
      }
      if (head.status === 101) {
        const { frames: fs, rest } = decodeServerFrames(buf);
        buf = rest;
        frames.push(...fs);
        wakeAll();
      }
    });
    sock.once('close', () => {
      ended = true;
      wakeAll();
    });
    sock.once('error', (err) => {
      clearTimeout(timer);
      if (!head) reject(err);
    });
  });
}
