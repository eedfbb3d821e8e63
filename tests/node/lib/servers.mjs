// Spawning the servers under test: `cable-fixture` (the Action Cable
// conformance fixture) and `keayl-demo`, each on a free port, killed after the
// tests (and, as a last resort, when the Node process exits).
//
// Binaries: $CABLE_FIXTURE_BIN / $KEAYL_DEMO_BIN, else target/debug/… of this
// repository (build them with `cargo build -p keayl-demo --bins`).

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const __dirname = path.dirname(fileURLToPath(import.meta.url));

export const FIXTURE_BIN = process.env.CABLE_FIXTURE_BIN
  ? path.resolve(process.env.CABLE_FIXTURE_BIN)
  : path.resolve(__dirname, '../../../target/debug/cable-fixture');

export const DEMO_BIN = process.env.KEAYL_DEMO_BIN
  ? path.resolve(process.env.KEAYL_DEMO_BIN)
  : path.resolve(__dirname, '../../../target/debug/keayl-demo');

const STARTUP_TIMEOUT = 10_000;

export const delay = (ms) => new Promise((r) => setTimeout(r, ms));

/** A port that was free a moment ago: bind port 0, read it, close. */
export function freePort() {
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

/** Resolve once a TCP connection to host:port succeeds, else reject. */
function tryConnect(port, host = '127.0.0.1') {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port, host });
    sock.once('connect', () => {
      sock.destroy();
      resolve();
    });
    sock.once('error', (err) => {
      sock.destroy();
      reject(err);
    });
  });
}

/**
 * Start `bin` with `args(port)` on a free port and wait until it accepts TCP
 * connections. Returns { port, base, ws, stop, output }.
 */
export async function startServer(bin, args, { name = path.basename(bin), env = {} } = {}) {
  if (!existsSync(bin)) {
    throw new Error(
      `${name} binary not found at ${bin}; build it with ` +
        '`cargo build -p keayl-demo --bins` (or set CABLE_FIXTURE_BIN / KEAYL_DEMO_BIN)',
    );
  }
  const port = await freePort();
  const child = spawn(bin, args(port), {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn', ...env },
  });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    });
  });
  let spawnError = null;
  child.once('error', (err) => (spawnError = err));
  // Last resort: never leave the server behind, whatever happens.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);

  const stop = async () => {
    process.removeListener('exit', killOnExit);
    if (exited) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 3_000);
    await exitPromise;
    clearTimeout(timer);
  };

  const deadline = Date.now() + STARTUP_TIMEOUT;
  for (;;) {
    if (spawnError || exited) {
      await stop();
      throw new Error(`${name} failed to start (${spawnError ?? JSON.stringify(exited)}):\n${output}`);
    }
    try {
      await tryConnect(port);
      break;
    } catch {
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`${name} did not accept connections on ${port} within 10 s:\n${output}`);
      }
      await delay(50);
    }
  }
  /** SIGKILL: the process dies without closing anything. */
  const kill = async () => {
    process.removeListener('exit', killOnExit);
    if (exited) return;
    child.kill('SIGKILL');
    await exitPromise;
  };
  return {
    port,
    base: `http://127.0.0.1:${port}`,
    ws: `ws://127.0.0.1:${port}`,
    stop,
    kill,
    output: () => output,
    get exited() {
      return exited;
    },
  };
}

/**
 * The conformance fixture. Fast timers by default: ticks every 0.2 s, pings
 * every 0.5 s.
 */
export function startFixture({ tickEvery = 0.2, pingInterval = 0.5, pongTimeout, presenceTtl, pubsub } = {}) {
  return startServer(
    FIXTURE_BIN,
    (port) => [
      '--addr',
      `127.0.0.1:${port}`,
      '--tick-every',
      String(tickEvery),
      '--ping-interval',
      String(pingInterval),
      ...(pongTimeout === undefined ? [] : ['--pong-timeout', String(pongTimeout)]),
      ...(presenceTtl === undefined ? [] : ['--presence-ttl', String(presenceTtl)]),
      ...(pubsub === undefined ? [] : ['--pubsub', pubsub]),
    ],
    { name: 'cable-fixture' },
  );
}

/**
 * Whether a TCP service answers on 127.0.0.1:`port`. When it does not, a
 * test prints a loud SKIPPED notice, or fails under KEAYL_REQUIRE_SERVICES=1
 * (as in CI).
 */
export async function requireService(name, port) {
  try {
    await tryConnect(port);
    return true;
  } catch {
    if (process.env.KEAYL_REQUIRE_SERVICES === '1') {
      throw new Error(`${name} is required (KEAYL_REQUIRE_SERVICES=1) but not reachable on 127.0.0.1:${port}`);
    }
    console.log(`SKIPPED (${name} not reachable on 127.0.0.1:${port})`);
    return false;
  }
}

/** The demo server (default 3 s pings, development origin policy). */
export function startDemo() {
  return startServer(DEMO_BIN, (port) => ['--addr', `127.0.0.1:${port}`], { name: 'keayl-demo' });
}

/** POST /_broadcast {"stream":…,"data":…}; returns { status, body }. */
export async function postBroadcast(base, body) {
  const res = await fetch(`${base}/_broadcast`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, body: await res.text() };
}
