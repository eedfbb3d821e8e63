// Browser tests of the keayl-demo server in headless Chromium.
//
// Chromium is Debian's /usr/bin/chromium (override with CHROMIUM_PATH);
// playwright-core drives it and never downloads a browser. The demo binary is
// KEAYL_DEMO_BIN (default: target/debug/keayl-demo; build it with
// `cargo build -p keayl-demo --bins`), started on a free loopback port with
// KEAYL_WEB_DIR pointing at apps/keayl-demo/web (where `npm ci` installed
// @rails/actioncable). Run with `npm test` here, or tests/browser/run.sh.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, statSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';

const __dirname = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(__dirname, '../..');
const DEMO_BIN = process.env.KEAYL_DEMO_BIN || path.resolve(__dirname, '../../target/debug/keayl-demo');
const WEB_DIR = process.env.KEAYL_WEB_DIR || path.join(REPO, 'apps/keayl-demo/web');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const SCREENSHOT = process.env.KEAYL_CHAT_SCREENSHOT || '/tmp/keayl-chat.png';
const WAIT_MS = 5000;

let server; // the demo's child process
let serverOutput = ''; // its stdout and stderr, for failure reports
let baseUrl;
let browser;

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

async function waitForServer(url, child, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  let lastError;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`keayl-demo exited early (code ${child.exitCode}, signal ${child.signalCode}):\n${serverOutput}`);
    }
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      if (res.ok) return;
      lastError = new Error(`HTTP ${res.status}`);
    } catch (e) {
      lastError = e;
    }
    await sleep(50);
  }
  throw new Error(`keayl-demo did not answer on ${url} within ${timeoutMs} ms (${lastError}):\n${serverOutput}`);
}

async function stopServer() {
  if (!server || server.exitCode !== null || server.signalCode !== null) return;
  const exited = new Promise((resolve) => server.once('exit', resolve));
  server.kill('SIGTERM');
  const timedOut = await Promise.race([exited.then(() => false), sleep(3000).then(() => true)]);
  if (timedOut) {
    server.kill('SIGKILL');
    await exited;
  }
}

// Whatever happens to the test process, the server does not outlive it.
process.on('exit', () => {
  if (server && server.exitCode === null && server.signalCode === null) server.kill('SIGKILL');
});

before(async () => {
  assert.ok(existsSync(DEMO_BIN), `no demo binary at ${DEMO_BIN}: run \`cargo build -p keayl-demo --bins\` (or set KEAYL_DEMO_BIN)`);
  assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: apt-get install -y chromium (or run tests/browser/run.sh)`);
  assert.ok(
    existsSync(path.join(WEB_DIR, 'node_modules/@rails/actioncable/app/assets/javascripts/actioncable.esm.js')),
    `@rails/actioncable is not installed: run \`npm ci\` in ${WEB_DIR}`,
  );
  const port = await freePort();
  baseUrl = `http://127.0.0.1:${port}`;
  server = spawn(DEMO_BIN, ['--addr', `127.0.0.1:${port}`], {
    env: { ...process.env, KEAYL_WEB_DIR: WEB_DIR, RUST_LOG: process.env.RUST_LOG || 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const keep = (chunk) => {
    serverOutput += chunk.toString();
    if (serverOutput.length > 20000) serverOutput = serverOutput.slice(-20000);
  };
  server.stdout.on('data', keep);
  server.stderr.on('data', keep);
  const [browserReady] = await Promise.all([
    chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
      timeout: 15000,
    }),
    waitForServer(`${baseUrl}/`, server),
  ]);
  browser = browserReady;
});

after(async () => {
  try {
    if (browser) await browser.close();
  } finally {
    await stopServer();
  }
});

// A test body with its own browser context; on failure, the pages' console
// output, page errors and the server's log go to stderr with the error.
function browserTest(name, body) {
  test(name, { timeout: 20000 }, async () => {
    const context = await browser.newContext({ viewport: { width: 900, height: 700 } });
    const logs = [];
    const open = async (label, urlPath) => {
      const page = await context.newPage();
      page.on('console', (msg) => logs.push(`[${label}] console.${msg.type()}: ${msg.text()}`));
      page.on('pageerror', (err) => logs.push(`[${label}] pageerror: ${err.stack || err}`));
      page.on('requestfailed', (req) => logs.push(`[${label}] requestfailed: ${req.url()} ${req.failure()?.errorText}`));
      page.on('response', (res) => {
        if (res.status() >= 400) logs.push(`[${label}] HTTP ${res.status()} ${res.url()}`);
      });
      page.on('websocket', (ws) => {
        logs.push(`[${label}] websocket open ${ws.url()}`);
        ws.on('close', () => logs.push(`[${label}] websocket closed ${ws.url()}`));
        ws.on('socketerror', (e) => logs.push(`[${label}] websocket error ${e}`));
      });
      await page.goto(baseUrl + urlPath);
      return page;
    };
    try {
      await body({ open, logs });
    } catch (err) {
      console.error(`--- ${name}: failed; page logs:\n${logs.join('\n') || '(none)'}`);
      console.error(`--- server output (tail):\n${serverOutput.slice(-4000) || '(none)'}`);
      throw err;
    } finally {
      await context.close();
    }
  });
}

const chatUrl = (room, name) => `/chat?room=${encodeURIComponent(room)}&name=${encodeURIComponent(name)}`;

async function openChat(open, room, name) {
  const page = await open(`${room}/${name}`, chatUrl(room, name));
  await page.waitForSelector('body[data-connected="true"]', { timeout: WAIT_MS });
  return page;
}

async function say(page, text) {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

async function waitForMessage(page, from, text) {
  const expected = `${from}: ${text}`;
  await page.waitForFunction(
    (exp) => [...document.querySelectorAll('#log p.message')].some((p) => p.textContent === exp),
    expected,
    { timeout: WAIT_MS },
  );
}

const messages = (page) => page.$$eval('#log p.message', (ps) => ps.map((p) => p.textContent));

async function waitForUsers(page, names) {
  await page.waitForFunction(
    (want) => {
      const users = document.getElementById('users').textContent.split(',').map((s) => s.trim());
      return want.every((n) => users.includes(n));
    },
    names,
    { timeout: WAIT_MS },
  );
}

// A room name of its own for each test run, so presence lists start empty.
const unique = (prefix) => `${prefix}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;

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

  // Leaving updates the other's presence list.
  await bob.close();
  await alice.waitForFunction(
    () => document.getElementById('users').textContent.trim() === 'alice',
    null,
    { timeout: WAIT_MS },
  );
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
  await say(carol, 'Hello Dave! The official @rails/actioncable client works.');
  await waitForMessage(carol, 'carol', 'Hello Dave! The official @rails/actioncable client works.');
  await carol.fill('#text', 'typing…');
  await carol.screenshot({ path: SCREENSHOT, fullPage: true });
  assert.ok(statSync(SCREENSHOT).size > 1000, 'screenshot written');
  const png = readFileSync(SCREENSHOT);
  assert.equal(png.subarray(1, 4).toString(), 'PNG');
  console.log(`# screenshot: ${SCREENSHOT}`);
});
