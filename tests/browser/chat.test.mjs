// Browser tests of the keayl-demo server in headless Chromium: the index
// page's clock, and the chat page (AnyCable's @anycable/web client over the
// extended protocol) with two or three pages in one or two rooms: messages,
// the online list (the room's presence set; a closed page leaves it after
// the presence TTL, which the harness makes 1 s), typing notices. The
// harness (server, Chromium, per-test contexts, chat helpers) is
// harness.mjs. Run with `npm test` here, or tests/browser/run.sh.

import assert from 'node:assert/strict';
import { statSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  WAIT_MS,
  browserTest,
  messages,
  openChat,
  say,
  unique,
  useDemo,
  waitForExactUsers,
  waitForMessage,
  waitForUsers,
} from './harness.mjs';

const SCREENSHOT = process.env.KEAYL_CHAT_SCREENSHOT || '/tmp/keayl-chat.png';

useDemo();

browserTest('index page shows live clock ticks from /clock', async ({ open }) => {
  const page = await open('index', '/');
  const ticks = () => page.$eval('#clock', (el) => Number(el.dataset.ticks));
  await page.waitForSelector('#clock[data-ticks]', { timeout: WAIT_MS });
  const first = await ticks();
  assert.ok(Number.isFinite(first), `data-ticks is a number, got ${first}`);
  await page.waitForFunction((n) => Number(document.getElementById('clock').dataset.ticks) > n, first, {
    timeout: WAIT_MS,
  });
  const second = await ticks();
  assert.ok(second > first, `ticks increase: ${first} then ${second}`);
  const text = await page.textContent('#clock');
  assert.match(text, /\(tick \d+\)/);
  assert.equal(await page.textContent('#status'), 'connected');
});

browserTest('two pages in one room: messages cross and presence lists both', async ({ open }) => {
  const room = unique('room');
  const alice = await openChat(open, room, 'alice');
  const bob = await openChat(open, room, 'bob');

  await waitForUsers(alice, ['alice', 'bob']);
  await waitForUsers(bob, ['alice', 'bob']);
  assert.equal((await alice.textContent('#users')).trim(), 'alice, bob', 'sorted, comma-separated');
  assert.equal(await alice.textContent('#room-name'), room);
  assert.equal(await bob.textContent('#me'), 'bob');

  await say(alice, 'hello from alice');
  await waitForMessage(bob, 'alice', 'hello from alice');
  await waitForMessage(alice, 'alice', 'hello from alice');
  assert.equal(await alice.inputValue('#text'), '', 'the input is cleared after sending');

  await say(bob, 'hi alice <b>not bold</b>');
  await waitForMessage(alice, 'bob', 'hi alice <b>not bold</b>');
  // The text is shown as text, and the sender's name in <b>.
  const last = await alice.$eval('#log p.message:last-child', (p) => ({
    html: p.innerHTML,
    bold: p.querySelector('b')?.textContent,
  }));
  assert.equal(last.bold, 'bob: ');
  assert.ok(last.html.includes('&lt;b&gt;not bold&lt;/b&gt;'), `message text escaped: ${last.html}`);

  assert.deepEqual(await bob.evaluate(() => document.querySelectorAll('#log p.message').length), 2);

  // Typing: alice's page tells bob, not alice.
  await alice.locator('#text').pressSequentially('typ');
  await bob.waitForFunction(() => document.getElementById('typing').textContent === 'alice is typing…', null, {
    timeout: WAIT_MS,
  });
  assert.equal(await alice.textContent('#typing'), '');
  await alice.fill('#text', '');

  // Leaving updates the other's presence list (after the presence TTL).
  await bob.close();
  await alice.waitForFunction(
    () => document.getElementById('users').textContent.trim() === 'alice',
    null,
    { timeout: WAIT_MS },
  );
});

browserTest('a guest gets a random name; two tabs of one name are listed once', async ({ open }) => {
  const room = unique('guests');
  const guest = await open(`${room}/guest`, `/chat?room=${encodeURIComponent(room)}`);
  await guest.waitForSelector('body[data-connected="true"]', { timeout: WAIT_MS });
  assert.equal(await guest.textContent('#me'), '(guest)');
  await guest.waitForFunction(() => /^guest-[0-9a-f]{6}$/.test(document.getElementById('users').textContent), null, {
    timeout: WAIT_MS,
  });
  const guestName = (await guest.textContent('#users')).trim();

  const tab1 = await openChat(open, room, 'erin');
  const tab2 = await openChat(open, room, 'erin');
  await waitForExactUsers(tab2, [guestName, 'erin']);
  await waitForExactUsers(guest, [guestName, 'erin']);
  // erin typing in one tab: the guest's page says so, erin's other tab does not.
  await tab1.locator('#text').pressSequentially('hi');
  await guest.waitForFunction(() => document.getElementById('typing').textContent === 'erin is typing…', null, {
    timeout: WAIT_MS,
  });
  assert.equal(await tab2.textContent('#typing'), '', 'not "erin is typing" to erin');
  // One tab closing: erin is still online (her other tab).
  await tab1.close();
  await sleep(1500); // past the 1 s presence TTL
  await waitForExactUsers(guest, [guestName, 'erin']);
});

browserTest('pages in different rooms: a message stays in its room', async ({ open }) => {
  const roomA = unique('a');
  const roomB = unique('b');
  const a1 = await openChat(open, roomA, 'ann');
  const a2 = await openChat(open, roomA, 'art');
  const b1 = await openChat(open, roomB, 'ben');
  await waitForUsers(a1, ['ann', 'art']);
  await waitForUsers(b1, ['ben']);

  await say(a1, 'only for room A');
  await waitForMessage(a2, 'ann', 'only for room A');

  // A marker in room B: once ben sees his own message, anything room A's
  // message could have done to room B has had time to arrive.
  await say(b1, 'marker in room B');
  await waitForMessage(b1, 'ben', 'marker in room B');
  await sleep(300);

  assert.deepEqual(await messages(b1), ['ben: marker in room B']);
  assert.deepEqual(await messages(a2), ['ann: only for room A']);
  assert.deepEqual(await messages(a1), ['ann: only for room A']);
  assert.equal((await b1.textContent('#users')).trim(), 'ben', 'room B presence lists only ben');
  const usersA = (await a1.textContent('#users')).split(',').map((s) => s.trim());
  assert.ok(!usersA.includes('ben'), `room A presence has no ben: ${usersA}`);
});

browserTest(`screenshot of the chat page to ${SCREENSHOT}`, async ({ open }) => {
  const room = unique('lobby');
  const carol = await openChat(open, room, 'carol');
  const dave = await openChat(open, room, 'dave');
  await waitForUsers(carol, ['carol', 'dave']);
  await say(dave, 'Hi Carol, this is Keayl over Action Cable.');
  await waitForMessage(carol, 'dave', 'Hi Carol, this is Keayl over Action Cable.');
  await say(carol, 'Hello Dave! The official @anycable/web client works.');
  await waitForMessage(carol, 'carol', 'Hello Dave! The official @anycable/web client works.');
  await carol.fill('#text', 'typing…');
  await carol.screenshot({ path: SCREENSHOT, fullPage: true });
  assert.ok(statSync(SCREENSHOT).size > 1000, 'screenshot written');
  const png = readFileSync(SCREENSHOT);
  assert.equal(png.subarray(1, 4).toString(), 'PNG');
  console.log(`# screenshot: ${SCREENSHOT}`);
});
