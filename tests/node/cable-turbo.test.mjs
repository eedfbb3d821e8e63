// Turbo Streams over Action Cable, end to end, in a jsdom page:
// `<turbo-cable-stream-source>` from @hotwired/turbo-rails 8.0.23 (with
// @hotwired/turbo 8.0.23 and @rails/actioncable 8.1.400) subscribes to the
// fixture's Turbo::StreamsChannel with a signed stream name made here
// (base64(JSON(name)) + "--" + HMAC-SHA256 hex, key "s3Krit"), and Turbo
// applies the <turbo-stream> HTML broadcast through POST /_broadcast to the
// DOM.
//
// The element obtains its consumer as in a Rails app: turbo-rails' cable.js
// lazily imports "@rails/actioncable/src" and calls createConsumer(), which
// reads <meta name="action-cable-url">. lib/esm-hooks.mjs lets Node resolve
// those browser-style imports the way a bundler does.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { register } from 'node:module';

import { NodeWebSocket, terminateAllSockets } from './lib/actioncable-node.mjs';
import { CableClient, gidParam, ident, signStreamName, uniq } from './lib/cable.mjs';
import { installDom, waitUntil } from './lib/dom.mjs';
import { delay, postBroadcast, startFixture } from './lib/servers.mjs';

register('./lib/esm-hooks.mjs', import.meta.url);

const T = { timeout: 10_000 };

describe('<turbo-cable-stream-source> (turbo-rails 8.0.23) in jsdom against cable-fixture', () => {
  let srv;
  let env;
  let turboRails;

  before(async () => {
    srv = await startFixture({ tickEvery: 0.2, pingInterval: 0.5 });
    env = installDom(
      `<!doctype html><html><head>
        <meta name="action-cable-url" content="${srv.ws}/cable?token=${uniq('turbo')}">
      </head><body><div id="messages"></div></body></html>`,
      { url: `${srv.base}/rooms/1` },
    );
    globalThis.WebSocket = NodeWebSocket;
    const actioncable = await import('@rails/actioncable/src');
    actioncable.adapters.WebSocket = NodeWebSocket;
    actioncable.logger.enabled = Boolean(process.env.DEBUG_CABLE);
    // Reconnect after 1 s without a frame (pings come every 0.5 s here)
    // instead of 6 s, for the restart test.
    actioncable.ConnectionMonitor.staleThreshold = 1;
    turboRails = await import('@hotwired/turbo-rails');
  });

  after(async () => {
    try {
      const consumer = await turboRails?.cable.getConsumer();
      consumer?.disconnect();
      await delay(20);
    } finally {
      terminateAllSockets();
      env?.close();
      await srv?.stop();
    }
  });

  /** Add a <turbo-cable-stream-source> for `signed`; returns the element. */
  function streamSource(signed, attrs = {}) {
    const el = document.createElement('turbo-cable-stream-source');
    el.setAttribute('channel', 'Turbo::StreamsChannel');
    if (signed !== undefined) el.setAttribute('signed-stream-name', signed);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    document.body.appendChild(el);
    return el;
  }

  const connected = (el) =>
    waitUntil(() => el.hasAttribute('connected'), { what: 'the "connected" attribute (confirm_subscription)' });

  async function broadcast(stream, html) {
    const r = await postBroadcast(srv.base, { stream, data: JSON.stringify(html) });
    assert.ok(r.status >= 200 && r.status < 300, `POST /_broadcast: ${r.status} ${r.body}`);
  }

  it('the elements and the consumer come from the packages', () => {
    assert.equal(typeof customElements.get('turbo-cable-stream-source'), 'function');
    assert.equal(typeof customElements.get('turbo-stream'), 'function');
    assert.equal(typeof window.Turbo?.connectStreamSource, 'function');
  });

  it('the spec vector (chat/2023): connected, and a broadcast append lands in #messages', T, async () => {
    const el = streamSource(
      'ImNoYXQvMjAyMyI=--2b2e054b6413bf3bc7e8bbad2f68962aa2ba19821800ccbd8de6fd7314e8320c',
    );
    try {
      await connected(el);
      await broadcast(
        'chat/2023',
        '<turbo-stream action="append" target="messages"><template><p id="m1">hi</p></template></turbo-stream>',
      );
      const p = await waitUntil(() => document.querySelector('#messages > #m1'), { what: '#messages > #m1' });
      assert.equal(p.textContent, 'hi');
      assert.equal(p.tagName, 'P');
    } finally {
      el.remove();
    }
  });

  it('a name signed in the test: append, prepend, replace, update, remove are applied in order', T, async () => {
    const name = `${gidParam('gid://cable-test/Room/42')}:${uniq('messages')}`;
    const list = document.createElement('ul');
    list.id = uniq('list');
    document.body.appendChild(list);
    const el = streamSource(signStreamName(name, 's3Krit'));
    try {
      await connected(el);
      const target = list.id;
      await broadcast(name, `<turbo-stream action="append" target="${target}"><template><li id="${target}-b">b</li></template></turbo-stream>`);
      await broadcast(name, `<turbo-stream action="prepend" target="${target}"><template><li id="${target}-a">a</li></template></turbo-stream>`);
      await broadcast(name, `<turbo-stream action="append" target="${target}"><template><li id="${target}-c">c</li></template></turbo-stream>`);
      const items = () => [...list.children].map((li) => li.textContent).join(',');
      await waitUntil(() => items() === 'a,b,c', { what: `a,b,c (have ${items()})` });
      await broadcast(name, `<turbo-stream action="replace" target="${target}-b"><template><li id="${target}-b">B!</li></template></turbo-stream>`);
      await broadcast(name, `<turbo-stream action="update" target="${target}-c"><template><em>C</em></template></turbo-stream>`);
      await broadcast(name, `<turbo-stream action="remove" target="${target}-a"></turbo-stream>`);
      await waitUntil(() => items() === 'B!,C', { what: `B!,C (have ${items()})` });
      assert.equal(document.getElementById(`${target}-c`).innerHTML, '<em>C</em>');
    } finally {
      el.remove();
      list.remove();
    }
  });

  it('data-* attributes become extra (snake_cased) params and the subscription still confirms', T, async () => {
    const name = uniq('with-params');
    const el = streamSource(signStreamName(name), { 'data-room-id': '5' });
    try {
      await connected(el);
      assert.deepEqual(el.subscription && JSON.parse(el.subscription.identifier), {
        channel: 'Turbo::StreamsChannel',
        signed_stream_name: signStreamName(name),
        room_id: '5',
      });
    } finally {
      el.remove();
    }
  });

  it('a tampered signature is rejected: never "connected", broadcasts not applied', T, async () => {
    const name = uniq('tampered');
    const signed = signStreamName(name).replace(/.$/, (c) => (c === '0' ? '1' : '0'));
    const box = document.createElement('div');
    box.id = uniq('box');
    document.body.appendChild(box);
    const el = streamSource(signed);
    try {
      await delay(400);
      assert.ok(!el.hasAttribute('connected'));
      await broadcast(name, `<turbo-stream action="append" target="${box.id}"><template><b>x</b></template></turbo-stream>`);
      await delay(300);
      assert.equal(box.innerHTML, '');
    } finally {
      el.remove();
      box.remove();
    }
  });

  it('after a server restart the element reconnects ("connected" dropped, then back) and keeps applying streams', { timeout: 15_000 }, async () => {
    const name = uniq('restart');
    const box = document.createElement('div');
    box.id = uniq('box');
    document.body.appendChild(box);
    const el = streamSource(signStreamName(name));
    const admin = await CableClient.connect(`${srv.ws}/cable?token=${uniq('admin')}`);
    try {
      await connected(el);
      const control = ident({ channel: 'ControlChannel' });
      await admin.subscribe(control);
      admin.perform(control, { action: 'restart' });
      await waitUntil(() => !el.hasAttribute('connected'), { what: '"connected" removed on disconnect' });
      await waitUntil(() => el.hasAttribute('connected'), { timeout: 10_000, what: '"connected" again after reconnecting' });
      await broadcast(name, `<turbo-stream action="append" target="${box.id}"><template><i>after</i></template></turbo-stream>`);
      await waitUntil(() => box.innerHTML === '<i>after</i>', { what: 'append after the restart' });
    } finally {
      await admin.close();
      el.remove();
      box.remove();
    }
  });

  it('removing the element unsubscribes: later broadcasts are not applied', T, async () => {
    const name = uniq('removed');
    const box = document.createElement('div');
    box.id = uniq('box');
    document.body.appendChild(box);
    const el = streamSource(signStreamName(name));
    try {
      await connected(el);
      await broadcast(name, `<turbo-stream action="append" target="${box.id}"><template><i>1</i></template></turbo-stream>`);
      await waitUntil(() => box.innerHTML === '<i>1</i>', { what: 'first append' });
      el.remove();
      assert.ok(!el.hasAttribute('connected'));
      await delay(200); // let the unsubscribe command reach the server
      await broadcast(name, `<turbo-stream action="append" target="${box.id}"><template><i>2</i></template></turbo-stream>`);
      await delay(300);
      assert.equal(box.innerHTML, '<i>1</i>');
    } finally {
      el.remove();
      box.remove();
    }
  });
});
