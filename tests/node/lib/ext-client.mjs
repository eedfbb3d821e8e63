// A raw client of AnyCable's extended protocol (actioncable-v1-ext-json) on
// `ws`, for tests that check frames one by one: every received frame is
// queued (pings aside) and taken by the first wait that matches it.

import WebSocket from 'ws';

export const EXT = 'actioncable-v1-ext-json';

export class ExtClient {
  /** Connect to `url` and wait for `welcome`. */
  static async open(url, { protocol = EXT, headers } = {}) {
    const c = new ExtClient(new WebSocket(url, [protocol], { headers }));
    c.welcome = await c.next((f) => f.type === 'welcome' || f.type === 'disconnect');
    return c;
  }

  constructor(ws) {
    this.ws = ws;
    this.frames = [];
    this.waiters = [];
    this.closed = new Promise((resolve) => ws.on('close', resolve));
    ws.on('message', (d) => {
      const f = JSON.parse(String(d));
      if (f.type === 'ping') return;
      this.frames.push(f);
      this.flush();
    });
    this.opened = new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
  }

  flush() {
    for (const w of [...this.waiters]) {
      const i = this.frames.findIndex(w.pred);
      if (i >= 0) {
        const [f] = this.frames.splice(i, 1);
        this.waiters.splice(this.waiters.indexOf(w), 1);
        clearTimeout(w.timer);
        w.resolve(f);
      }
    }
  }

  /** The first queued or arriving frame matching `pred` (taken off the queue). */
  next(pred = () => true, timeout = 4_000) {
    return new Promise((resolve, reject) => {
      const w = { pred, resolve };
      w.timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`no matching frame within ${timeout} ms; queued: ${JSON.stringify(this.frames)}`));
      }, timeout);
      this.waiters.push(w);
      this.flush();
    });
  }

  /** Resolve to the frames matching `pred` that arrive within `ms` (left queued). */
  async within(ms, pred = () => true) {
    await new Promise((r) => setTimeout(r, ms));
    return this.frames.filter(pred);
  }

  async send(obj) {
    await this.opened;
    this.ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj));
  }

  /** Subscribe `identifier` (an object or its JSON) and wait for the answer. */
  async subscribe(identifier, extra = {}) {
    const id = typeof identifier === 'string' ? identifier : JSON.stringify(identifier);
    await this.send({ command: 'subscribe', identifier: id, ...extra });
    const f = await this.next(
      (f) => f.identifier === id && (f.type === 'confirm_subscription' || f.type === 'reject_subscription'),
    );
    return { id, confirmed: f.type === 'confirm_subscription' };
  }

  /** Close the socket and wait until it closed. */
  async close() {
    this.ws.close();
    await this.closed;
  }

  /** Drop the TCP connection without a close frame (a vanished client). */
  async kill() {
    this.ws.terminate();
    await this.closed;
  }
}

/** Matches `{"type":"presence","identifier":id,"message":{"type":kind,…}}`. */
export const presence = (id, kind, extra = {}) => (f) =>
  f.type === 'presence' &&
  f.identifier === id &&
  f.message?.type === kind &&
  Object.entries(extra).every(([k, v]) => JSON.stringify(f.message[k]) === JSON.stringify(v));
