// Running the official Action Cable client (@rails/actioncable) under Node.
//
// What the client touches outside itself (read in
// node_modules/@rails/actioncable/app/assets/javascripts/actioncable.esm.js):
// - `adapters.WebSocket` (captured from the global `WebSocket` at load time,
//   which Node 20 does not have): set here to a `ws` subclass;
// - bare `addEventListener` / `removeEventListener` for "visibilitychange"
//   (ConnectionMonitor.start/stop): no-op stubs unless a DOM already set them;
// - `document.visibilityState` (only in the visibilitychange handler) and
//   `document.head.querySelector` / `document.createElement("a")` (only for
//   `createConsumer()` without a ws:// URL): a minimal stub unless a DOM exists.
//
// The WebSocket wrapper sends an `Origin` equal to http:// + the URL's host,
// as a browser page served by the same server would.

import WebSocketImpl from 'ws';
import * as ActionCable from '@rails/actioncable';

/** A browser-like WebSocket constructor: `new WebSocket(url, protocols)`. */
export class NodeWebSocket extends WebSocketImpl {
  constructor(url, protocols) {
    const u = new URL(String(url));
    const origin = `${u.protocol === 'wss:' ? 'https' : 'http'}://${u.host}`;
    super(u, protocols, { origin });
    NodeWebSocket.opened.push(this);
  }
}
/** Every socket the client opened (to close leftovers after tests). */
NodeWebSocket.opened = [];

export function installBrowserGlobals() {
  if (typeof globalThis.addEventListener !== 'function') {
    globalThis.addEventListener = () => {};
    globalThis.removeEventListener = () => {};
  }
  if (typeof globalThis.document === 'undefined') {
    globalThis.document = {
      visibilityState: 'visible',
      head: { querySelector: () => null },
      createElement: () => {
        throw new Error('createConsumer needs a ws:// or wss:// URL under Node');
      },
    };
  }
  ActionCable.adapters.WebSocket = NodeWebSocket;
  ActionCable.logger.enabled = Boolean(process.env.DEBUG_CABLE);
  return ActionCable;
}

export { ActionCable };

/** Close every socket the client left open (consumer.disconnect() is async-ish). */
export function terminateAllSockets() {
  for (const ws of NodeWebSocket.opened.splice(0)) {
    try {
      ws.terminate();
    } catch {
      // already gone
    }
  }
}

/**
 * Subscribe with callbacks that record every event:
 * { sub, events, waitFor(name, pred?, timeout?) }.
 * Events: { name: 'connected'|'disconnected'|'rejected'|'received', arg, t }.
 */
export function recordSubscription(consumer, params) {
  const events = [];
  let waiters = [];
  const push = (name, arg) => {
    events.push({ name, arg, t: Date.now() });
    const ws = waiters;
    waiters = [];
    ws.forEach((w) => w());
  };
  const sub = consumer.subscriptions.create(params, {
    connected(arg) {
      push('connected', arg);
    },
    disconnected(arg) {
      push('disconnected', arg);
    },
    rejected() {
      push('rejected');
    },
    received(data) {
      push('received', data);
    },
  });
  const cursors = {};
  /** The next `name` event (after the last `name` event returned) that satisfies `pred`. */
  async function waitFor(name, pred = () => true, timeout = 3_000) {
    const deadline = Date.now() + timeout;
    for (;;) {
      while ((cursors[name] ?? 0) < events.length) {
        const e = events[cursors[name] ?? 0];
        cursors[name] = (cursors[name] ?? 0) + 1;
        if (e.name === name && pred(e.arg)) return e;
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `no ${name} event within ${timeout} ms; events: ${JSON.stringify(events.map(({ name: n, arg }) => [n, arg]))}`,
        );
      }
      await new Promise((r) => {
        const timer = setTimeout(r, left);
        waiters.push(() => {
          clearTimeout(timer);
          r();
        });
      });
    }
  }
  return { sub, events, waitFor };
}
