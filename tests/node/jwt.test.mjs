// JWT identification against the fixture (secret `qwerty`, identifier
// `current_user` in the `ext` claim): a token through `?jid=`, the `X-JID`
// header or an `anycable-token.<token>` subprotocol identifies the
// connection without `connect` (the official @anycable/core client with
// `?jid=`; raw `ws` for the other carriers); an expired or forged token is
// refused with `token_expired` / `unauthorized`, without reconnect.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';

import WebSocket from 'ws';
import { createCable } from '@anycable/core';

import { uniq } from './lib/cable.mjs';
import { startFixture } from './lib/servers.mjs';

const T = { timeout: 30_000 };

const b64url = (s) => Buffer.from(s).toString('base64url');

/** An HS256 token as AnyCable::JWT.encode issues it. */
function token(identifiers, { secret = 'qwerty', exp = Math.floor(Date.now() / 1000) + 60 } = {}) {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify({ ext: JSON.stringify(identifiers), exp }));
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

/** Frames of a raw socket until `n` non-ping frames arrived or it closed. */
function frames(ws, n) {
  return new Promise((resolve, reject) => {
    const got = [];
    const timer = setTimeout(() => reject(new Error(`only ${JSON.stringify(got)}`)), 5_000);
    const done = () => {
      clearTimeout(timer);
      resolve(got);
    };
    ws.on('message', (d) => {
      const f = JSON.parse(String(d));
      if (f.type === 'ping') return;
      got.push(f);
      if (got.length >= n) done();
    });
    ws.on('close', done);
    ws.on('error', reject);
  });
}

describe('JWT identification against cable-fixture', () => {
  let srv;
  before(async () => {
    srv = await startFixture();
  });
  after(async () => {
    await srv?.stop();
  });

  it('@anycable/core with ?jid= speaks as the token says', T, async () => {
    const user = uniq('jwt-user');
    const cable = createCable(`${srv.ws}/cable?jid=${token({ current_user: user })}`, {
      protocol: 'actioncable-v1-ext-json',
      websocketImplementation: WebSocket,
      logLevel: 'error',
    });
    try {
      const room = uniq('room');
      const ch = cable.subscribeTo('ChatChannel', { room });
      await ch.ensureSubscribed();
      const got = new Promise((resolve) => ch.on('message', (m) => m.message === 'hi' && resolve(m)));
      await ch.perform('speak', { message: 'hi' });
      assert.deepEqual(await got, { message: 'hi', from: user });
    } finally {
      cable.disconnect();
    }
  });

  it('the header and the subprotocol carry it too; expired and forged tokens are refused', T, async () => {
    const identifier = JSON.stringify({ channel: 'ChatChannel', room: uniq('room') });
    const speakAs = async (ws) => {
      const got = frames(ws, 3);
      await new Promise((r) => ws.on('open', r));
      ws.send(JSON.stringify({ command: 'subscribe', identifier }));
      ws.send(JSON.stringify({ command: 'message', identifier, data: JSON.stringify({ action: 'speak', message: 'x' }) }));
      const [welcome, confirm, said] = await got;
      ws.close();
      return { welcome, confirm, said };
    };
    const viaHeader = new WebSocket(`${srv.ws}/cable`, 'actioncable-v1-json', {
      headers: { 'X-JID': token({ current_user: 'hdr' }) },
    });
    assert.equal((await speakAs(viaHeader)).said.message.from, 'hdr');
    const viaProtocol = new WebSocket(`${srv.ws}/cable`, [
      'actioncable-v1-json',
      `anycable-token.${token({ current_user: 'proto' })}`,
    ]);
    const r = await speakAs(viaProtocol);
    assert.equal(viaProtocol.protocol, 'actioncable-v1-json');
    assert.equal(r.said.message.from, 'proto');

    for (const [t, reason] of [
      [token({ current_user: 'late' }, { exp: Math.floor(Date.now() / 1000) - 30 }), 'token_expired'],
      [token({ current_user: 'mallory' }, { secret: 'guess' }), 'unauthorized'],
    ]) {
      const ws = new WebSocket(`${srv.ws}/cable?jid=${t}`, 'actioncable-v1-ext-json');
      const [first] = await frames(ws, 1);
      assert.deepEqual(first, { type: 'disconnect', reason, reconnect: false });
      ws.close();
    }
  });
});
