// A browser-like global scope from jsdom, for loading Turbo and the Action
// Cable client as a page would: window properties become globals (window
// methods bound to the window, so bare `addEventListener(…)` works), and the
// DOM event classes replace Node's own so events can be dispatched on
// elements.

import { JSDOM } from 'jsdom';

// Node's own classes that DOM code must not use with jsdom nodes.
const OVERRIDE = ['Event', 'CustomEvent', 'MessageEvent', 'EventTarget', 'DOMException'];

export function installDom(html, { url } = {}) {
  const dom = new JSDOM(html, { url, pretendToBeVisual: true });
  const { window } = dom;
  const installed = [];
  // Own properties of the window and of its prototype chain (Window,
  // EventTarget: addEventListener lives there).
  const keys = new Set();
  for (let o = window; o && o !== Object.prototype; o = Object.getPrototypeOf(o)) {
    for (const k of Object.getOwnPropertyNames(o)) if (k !== 'constructor') keys.add(k);
  }
  for (const key of keys) {
    if (key in globalThis && !OVERRIDE.includes(key)) continue;
    let value;
    try {
      value = window[key];
    } catch {
      continue;
    }
    // Methods of the window (addEventListener, requestAnimationFrame, …) need
    // the window as `this`; classes (capitalised) must stay as they are.
    if (typeof value === 'function' && !/^[A-Z]/.test(key)) value = value.bind(window);
    Object.defineProperty(globalThis, key, { value, configurable: true, writable: true });
    installed.push(key);
  }
  globalThis.window = window;
  globalThis.document = window.document;
  return {
    dom,
    window,
    close() {
      window.close();
    },
  };
}

/** Resolve when `check()` returns truthy, polling every 20 ms. */
export async function waitUntil(check, { timeout = 3_000, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
