// The harness the browser tests share: the keayl-demo server on a free
// loopback port, headless Chromium, one browser context per test with its
// pages' logs reported on failure, and helpers for the chat page.
//
// Chromium is Debian's /usr/bin/chromium (override with CHROMIUM_PATH);
// playwright-core drives it and never downloads a browser. The demo binary is
// KEAYL_DEMO_BIN (default: target/debug/keayl-demo; build it with
// `cargo build -p keayl-demo --bins`), started with KEAYL_WEB_DIR pointing
// at apps/keayl-demo/web (where `npm ci` installed @anycable/web, which the
// demo serves under /assets/npm/).
//
// A test file calls `useDemo()` once at top level (it registers the
// `before`/`after` hooks), then `browserTest(name, body)` for each test.
// `useDemo({ args, also })` gives the demo more arguments and starts more
// demo processes (`also`: one argument list each), e.g. several processes
// sharing Redis; `demos[i].baseUrl` is where each listens.
//
// Every demo starts with `--presence-ttl 1` (unless its arguments say
// otherwise): a closed chat page leaves the online list after the presence
// TTL, 15 s by default, longer than the tests wait.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';

const __dirname = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(__dirname, '../..');
const DEMO_BIN = process.env.KEAYL_DEMO_BIN || path.resolve(REPO, 'target/debug/keayl-demo');
const WEB_DIR = process.env.KEAYL_WEB_DIR || path.join(REPO, 'apps/keayl-demo/web');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const WAIT_MS = 5000;

/** The presence TTL, in seconds, the demos start with by default. */
export const PRESENCE_TTL_S = 1;

let servers = []; // the demos' child processes: { child, output, label }
let browser;
/** Where the (first) demo listens, `http://127.0.0.1:<port>` once `before` ran. */
export const demo = { baseUrl: undefined };
/** Every demo started by `useDemo`, in order: `{ baseUrl }`. */
export const demos = [];

const serverOutput = () =>
  servers.map((s) => `--- ${s.label} (tail):\n${s.output.slice(-4000) || '(none)'}`).join('\n');

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

async function waitForServer(url, server, timeoutMs = 10000) {
  const { child } = server;
  const deadline = Date.now() + timeoutMs;
  let lastError;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`keayl-demo exited early (code ${child.exitCode}, signal ${child.signalCode}):\n${server.output}`);
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
  throw new Error(`keayl-demo did not answer on ${url} within ${timeoutMs} ms (${lastError}):\n${server.output}`);
}

async function stopServer({ child }) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timedOut = await Promise.race([exited.then(() => false), sleep(3000).then(() => true)]);
  if (timedOut) {
    child.kill('SIGKILL');
    await exited;
  }
}

// Whatever happens to the test process, the servers do not outlive it.
process.on('exit', () => {
  for (const { child } of servers) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
});

/** Start one demo process with `args` on a free port; resolves once it answers. */
async function startDemo(args, label) {
  const port = await freePort();
  const baseUrl = `http://127.0.0.1:${port}`;
  const full = ['--addr', `127.0.0.1:${port}`, ...args];
  if (!args.includes('--presence-ttl')) full.push('--presence-ttl', String(PRESENCE_TTL_S));
  const child = spawn(DEMO_BIN, full, {
    env: { ...process.env, KEAYL_WEB_DIR: WEB_DIR, RUST_LOG: process.env.RUST_LOG || 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const server = { child, output: '', label };
  servers.push(server);
  const keep = (chunk) => {
    server.output += chunk.toString();
    if (server.output.length > 20000) server.output = server.output.slice(-20000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  await waitForServer(`${baseUrl}/`, server);
  return baseUrl;
}

/** Whether something listens on 127.0.0.1:`port` (1 s to answer). */
export function reachable(port) {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const done = (up) => {
      socket.destroy();
      resolve(up);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/**
 * Whether the service `name` listens on 127.0.0.1:`port`. When it does not:
 * with KEAYL_REQUIRE_SERVICES=1 this throws (the test file fails), otherwise
 * it says so loudly and resolves false (the caller skips what needs it).
 */
export async function requireService(name, port) {
  if (await reachable(port)) return true;
  if (process.env.KEAYL_REQUIRE_SERVICES === '1') {
    throw new Error(`${name} is required (KEAYL_REQUIRE_SERVICES=1) but not reachable on 127.0.0.1:${port}`);
  }
  console.log(`SKIPPED: ${name} not reachable on 127.0.0.1:${port}; the tests that need it are skipped`);
  return false;
}

/** Start the demo and Chromium before the file's tests; stop both after. */
export function useDemo({ args = [], also = [] } = {}) {
  before(async () => {
    assert.ok(existsSync(DEMO_BIN), `no demo binary at ${DEMO_BIN}: run \`cargo build -p keayl-demo --bins\` (or set KEAYL_DEMO_BIN)`);
    assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: apt-get install -y chromium (or run tests/browser/run.sh)`);
    assert.ok(
      existsSync(path.join(WEB_DIR, 'node_modules/@anycable/web/index.js')),
      `@anycable/web is not installed: run \`npm ci\` in ${WEB_DIR}`,
    );
    const lists = [args, ...also];
    const [browserReady, ...urls] = await Promise.all([
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
      ...lists.map((a, i) => startDemo(a, lists.length > 1 ? `keayl-demo #${i + 1}` : 'keayl-demo')),
    ]);
    browser = browserReady;
    demos.push(...urls.map((baseUrl) => ({ baseUrl })));
    demo.baseUrl = urls[0];
  });

  after(async () => {
    try {
      if (browser) await browser.close();
    } finally {
      await Promise.all(servers.map(stopServer));
    }
  });
}

// A test body with its own browser context; on failure, the pages' console
// output, page errors and the server's log go to stderr with the error.
// `open(label, path)` opens a page (`path` on the first demo, or an
// absolute URL: another demo's); `onPage(page, label)` (optional) runs on
// each new page before it loads. `skip` (a reason) skips the test.
export function browserTest(name, body, { timeout = 20000, skip } = {}) {
  test(name, { timeout, skip }, async () => {
    const context = await browser.newContext({ viewport: { width: 900, height: 700 } });
    const logs = [];
    const open = async (label, urlPath, onPage) => {
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
      if (onPage) onPage(page, label);
      await page.goto(/^https?:/.test(urlPath) ? urlPath : demo.baseUrl + urlPath);
      return page;
    };
    try {
      await body({ open, logs });
    } catch (err) {
      console.error(`--- ${name}: failed; page logs:\n${logs.join('\n') || '(none)'}`);
      console.error(`--- server output:\n${serverOutput()}`);
      throw err;
    } finally {
      await context.close();
    }
  });
}

export const chatUrl = (room, name) => `/chat?room=${encodeURIComponent(room)}&name=${encodeURIComponent(name)}`;

/** Open the chat page of `room` as `name` (on the demo at `base`, default the first). */
export async function openChat(open, room, name, onPage, { base = '' } = {}) {
  const page = await open(`${room}/${name}`, base + chatUrl(room, name), onPage);
  await page.waitForSelector('body[data-connected="true"]', { timeout: WAIT_MS });
  return page;
}

export async function say(page, text) {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

// A message line's `from: text` leaves out its "(while you were away)" label.

export async function waitForMessage(page, from, text) {
  const expected = `${from}: ${text}`;
  await page.waitForFunction(
    (exp) =>
      [...document.querySelectorAll('#log p.message')].some(
        (p) => [...p.childNodes].filter((n) => !n.classList?.contains('away')).map((n) => n.textContent).join('') === exp,
      ),
    expected,
    { timeout: WAIT_MS },
  );
}

/** Each message line as `from: text`, in order. */
export const messages = (page) =>
  page.$$eval('#log p.message', (ps) =>
    ps.map((p) => [...p.childNodes].filter((n) => !n.classList?.contains('away')).map((n) => n.textContent).join('')),
  );

export async function waitForUsers(page, names) {
  await page.waitForFunction(
    (want) => {
      const users = document.getElementById('users').textContent.split(',').map((s) => s.trim());
      return want.every((n) => users.includes(n));
    },
    names,
    { timeout: WAIT_MS },
  );
}

/** Wait until the presence list is exactly `names` (in any order). */
export async function waitForExactUsers(page, names) {
  await page.waitForFunction(
    (want) => {
      const users = document.getElementById('users').textContent.split(',').map((s) => s.trim()).filter(Boolean);
      return users.length === want.length && want.every((n) => users.includes(n));
    },
    names,
    { timeout: WAIT_MS },
  );
}

// A room name of its own for each test run, so presence lists start empty.
export const unique = (prefix) => `${prefix}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;

/** `POST /_broadcast` (open in the demo without a secret) to the demo at `base`: `data` is JSON-encoded. */
export async function broadcast(stream, data, base = demo.baseUrl) {
  const res = await fetch(`${base}/_broadcast`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ stream, data: JSON.stringify(data) }),
  });
  assert.ok(res.ok, `POST /_broadcast: HTTP ${res.status} ${await res.text()}`);
}
