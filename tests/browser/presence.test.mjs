// Presence and whispers across processes in headless Chromium: two demo
// processes sharing Redis, alice's chat page on one and bob's on the other.
// Both list "alice, bob" online (the room's presence set lives in Redis);
// bob's typing notice (a whisper) reaches alice's page and not his own; bob
// closing his page drops him from alice's list after the presence TTL, not
// before. Without Redis on 127.0.0.1:6379 those tests are skipped (loudly;
// with KEAYL_REQUIRE_SERVICES=1 the file fails instead). Also: the /signed
// page shows what is broadcast to `announcements`, the stream it subscribed
// to by the signed name the server wrote into it. Harness: harness.mjs.

import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  WAIT_MS,
  broadcast,
  browserTest,
  demos,
  openChat,
  requireService,
  unique,
  useDemo,
  waitForExactUsers,
} from './harness.mjs';

/** The presence TTL of these demos, seconds: long enough to see that a
 * closed page is still listed for a while, short enough to wait out. */
const TTL_S = 2;

const redis = await requireService('Redis', 6379);
const pubsub = ['--pubsub', `redis://127.0.0.1:6379/0?channel_prefix=${unique('browser-presence')}`];
const args = [...(redis ? pubsub : []), '--presence-ttl', String(TTL_S)];
useDemo({ args, also: redis ? [args] : [] });

const needsRedis = redis ? {} : { skip: 'Redis not reachable on 127.0.0.1:6379' };

const usersText = (page) => page.$eval('#users', (el) => el.textContent.trim());
const typingText = (page) => page.$eval('#typing', (el) => el.textContent.trim());

browserTest(
  'two processes sharing Redis: presence lists both, a whisper crosses, a closed page leaves after the TTL',
  async ({ open }) => {
    const [one, two] = demos;
    assert.notEqual(one.baseUrl, two.baseUrl, 'two processes');
    const room = unique('presence');
    const alice = await openChat(open, room, 'alice', undefined, { base: one.baseUrl });
    const bob = await openChat(open, room, 'bob', undefined, { base: two.baseUrl });

    await waitForExactUsers(alice, ['alice', 'bob']);
    await waitForExactUsers(bob, ['alice', 'bob']);
    assert.equal(await usersText(alice), 'alice, bob', 'sorted, comma-separated');
    assert.equal(await usersText(bob), 'alice, bob');

    // Bob types: a whisper, through Redis, to alice's page only.
    await bob.locator('#text').pressSequentially('hel');
    await alice.waitForFunction(() => document.getElementById('typing').textContent === 'bob is typing…', null, {
      timeout: WAIT_MS,
    });
    await sleep(300); // room for an echo to reach bob's page
    assert.equal(await typingText(bob), '', "bob's page does not say he is typing");
    // More keys within 1.5 s send nothing more; the notice goes after 3 s.
    await bob.locator('#text').pressSequentially('lo');
    await alice.waitForFunction(() => document.getElementById('typing').textContent === '', null, { timeout: WAIT_MS });
    assert.equal(await typingText(bob), '');

    // Bob closes his page: his connection is gone, his presence session
    // lasts the TTL (a reload would not flicker), then he leaves.
    const closedAt = Date.now();
    await bob.close();
    await sleep(500);
    assert.equal(await usersText(alice), 'alice, bob', 'still listed within the TTL');
    await alice.waitForFunction(() => document.getElementById('users').textContent.trim() === 'alice', null, {
      timeout: TTL_S * 1000 + WAIT_MS,
    });
    const after = Date.now() - closedAt;
    assert.ok(after >= TTL_S * 1000 - 300, `left after the TTL (${TTL_S} s), not at once: ${after} ms`);
  },
  { timeout: 30000, ...needsRedis },
);

browserTest('a page reloaded within the TTL: no leave, no second join', async ({ open }) => {
  const [one, two] = demos;
  const room = unique('reload');
  const alice = await openChat(open, room, 'alice', undefined, { base: one.baseUrl });
  const bob = await openChat(open, room, 'bob', undefined, { base: two.baseUrl });
  await waitForExactUsers(alice, ['alice', 'bob']);
  // Record every list alice's page shows from here on.
  await alice.evaluate(() => {
    window.seenUsers = [];
    new MutationObserver(() => window.seenUsers.push(document.getElementById('users').textContent)).observe(
      document.getElementById('users'),
      { childList: true, characterData: true, subtree: true },
    );
  });
  await bob.reload();
  await bob.waitForSelector('body[data-connected="true"]', { timeout: WAIT_MS });
  await waitForExactUsers(bob, ['alice', 'bob']);
  await sleep(TTL_S * 1000 + 1000); // past the old session's expiry
  const seen = await alice.evaluate(() => window.seenUsers);
  assert.ok(seen.every((u) => u === 'alice, bob'), `bob never left alice's list: ${JSON.stringify(seen)}`);
  assert.equal(await usersText(alice), 'alice, bob');
}, { timeout: 30000, ...needsRedis });

browserTest('/signed: a broadcast to announcements appears on the page', async ({ open }) => {
  const page = await open('signed', '/signed');
  await page.waitForSelector('body[data-connected="true"]', { timeout: WAIT_MS });
  const signed = await page.textContent('#signed');
  assert.match(signed, /^[A-Za-z0-9+/=]+--[0-9a-f]{64}$/, `a signed name: ${signed}`);
  assert.equal(
    Buffer.from(signed.split('--')[0], 'base64').toString(),
    '"announcements"',
    'the name of announcements, signed by the server',
  );

  const text = `hello ${unique('announce')}`;
  await broadcast('announcements', { text });
  await page.waitForFunction((t) => [...document.querySelectorAll('#items .text')].some((el) => el.textContent === t), text, {
    timeout: WAIT_MS,
  });
  // Not JSON with a text: shown as JSON.
  await broadcast('announcements', { n: 1 });
  await page.waitForFunction(() => [...document.querySelectorAll('#items .text')].some((el) => el.textContent === '{"n":1}'), null, {
    timeout: WAIT_MS,
  });
  // Through the other process too, when there is one (shared Redis).
  if (demos.length > 1) {
    const other = `from process 2 ${unique('announce')}`;
    await broadcast('announcements', { text: other }, demos[1].baseUrl);
    await page.waitForFunction((t) => [...document.querySelectorAll('#items .text')].some((el) => el.textContent === t), other, {
      timeout: WAIT_MS,
    });
  }
  const items = await page.$$eval('#items .text', (els) => els.map((el) => el.textContent));
  assert.equal(items.length, demos.length > 1 ? 3 : 2, `each broadcast once: ${JSON.stringify(items)}`);
});
