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

let server; // the demo's child process
let serverOutput = ''; // its stdout and stderr, for failure reports
let browser;
/** Where the demo listens, `http://127.0.0.1:<port>` once `before` ran. */
export const demo = { baseUrl: undefined };

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

/** Start the demo and Chromium before the file's tests; stop both after. */
export function useDemo() {
  before(async () => {
    assert.ok(existsSync(DEMO_BIN), `no demo binary at ${DEMO_BIN}: run \`cargo build -p keayl-demo --bins\` (or set KEAYL_DEMO_BIN)`);
    assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: apt-get install -y chromium (or run tests/browser/run.sh)`);
    assert.ok(
      existsSync(path.join(WEB_DIR, 'node_modules/@anycable/web/index.js')),
      `@anycable/web is not installed: run \`npm ci\` in ${WEB_DIR}`,
    );
    const port = await freePort();
    demo.baseUrl = `http://127.0.0.1:${port}`;
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
      waitForServer(`${demo.baseUrl}/`, server),
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
}

// A test body with its own browser context; on failure, the pages' console
// output, page errors and the server's log go to stderr with the error.
// `open(label, path)` opens a page; `onPage(page, label)` (optional) runs
// on each new page before it loads.
export function browserTest(name, body, { timeout = 20000 } = {}) {
  test(name, { timeout }, async () => {
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
      await page.goto(demo.baseUrl + urlPath);
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

export const chatUrl = (room, name) => `/chat?room=${encodeURIComponent(room)}&name=${encodeURIComponent(name)}`;

export async function openChat(open, room, name, onPage) {
  const page = await open(`${room}/${name}`, chatUrl(room, name), onPage);
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

/** `POST /_broadcast` (open in the demo without a secret): `data` is JSON-encoded. */
export async function broadcast(stream, data) {
  const res = await fetch(`${demo.baseUrl}/_broadcast`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ stream, data: JSON.stringify(data) }),
  });
  assert.ok(res.ok, `POST /_broadcast: HTTP ${res.status} ${await res.text()}`);
}
