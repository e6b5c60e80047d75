// The live stream's connection rules, with a stand-in EventSource and mocked timers.
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { backoffMs, RESET_RELOAD_MS, SILENCE_MS, startStream } from '../../src/api/dashboard/live.js';

class FakeEventSource {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSED = 2;
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = FakeEventSource.CONNECTING;
    this.listeners = {};
    FakeEventSource.all.push(this);
  }
  addEventListener(name, fn) {
    (this.listeners[name] ??= []).push(fn);
  }
  close() {
    this.readyState = FakeEventSource.CLOSED;
    this.closed = true;
  }
  emit(name, data) {
    if (name === 'open') this.readyState = FakeEventSource.OPEN;
    for (const fn of this.listeners[name] ?? []) fn({ data });
  }
}

let calls;
function start() {
  calls = { connect: 0, status: 0, reload: 0, stats: [], alert: [] };
  return startStream({
    url: '/api/v1/stream',
    handlers: { stats: (d) => calls.stats.push(d), alert: (d) => calls.alert.push(d), window() {}, health() {} },
    onConnect: () => calls.connect++,
    onStatus: () => calls.status++,
    reload: () => calls.reload++,
  });
}
const latest = () => FakeEventSource.all[FakeEventSource.all.length - 1];

beforeEach((t) => {
  FakeEventSource.all = [];
  globalThis.EventSource = FakeEventSource;
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval', 'Date'], now: 1_000_000 });
});
afterEach(() => {
  delete globalThis.EventSource;
});

test('backoffMs: 3 s doubling to a minute, with a jitter of half to all of it', () => {
  assert.equal(backoffMs(0, () => 0), 1500);
  assert.equal(backoffMs(0, () => 1), 3000);
  assert.equal(backoffMs(1, () => 1), 6000);
  assert.equal(backoffMs(3, () => 1), 24000);
  assert.equal(backoffMs(10, () => 1), 60000, 'capped');
  for (let i = 0; i < 100; i++) {
    const v = backoffMs(2);
    assert.ok(v >= 6000 && v <= 12000, String(v));
  }
});

test('messages are parsed and handed over; bad JSON is dropped; the time of the last is kept', (t) => {
  const status = start();
  assert.equal(latest().url, '/api/v1/stream');
  assert.equal(calls.connect, 1);
  latest().emit('open');
  t.mock.timers.tick(500);
  latest().emit('stats', '{"total_events_processed":5}');
  latest().emit('alert', 'not json');
  assert.deepEqual(calls.stats, [{ total_events_processed: 5 }]);
  assert.deepEqual(calls.alert, []);
  assert.equal(status.lastMessage, 1_000_500);
  assert.equal(status.down, false);
  assert.equal(calls.reload, 0, 'a first open reloads nothing');
});

test('a short drop shows nothing; a longer one marks the stream down, and its return reloads', (t) => {
  const status = start();
  const es = latest();
  es.emit('open');
  // EventSource reconnects by itself within the second: nothing to report.
  es.readyState = FakeEventSource.CONNECTING;
  es.emit('error');
  t.mock.timers.tick(500);
  es.emit('open');
  t.mock.timers.tick(1000);
  assert.equal(status.down, false);
  assert.equal(calls.reload, 0);
  // Down for more than a second: reported, and snapshots are reloaded when it is back.
  es.readyState = FakeEventSource.CONNECTING;
  es.emit('error');
  t.mock.timers.tick(1000);
  assert.equal(status.down, true);
  es.emit('open');
  assert.equal(status.down, false);
  assert.equal(calls.reload, 1);
  assert.equal(FakeEventSource.all.length, 1, 'the browser reconnected, not us');
});

test('refused (closed for good): a new EventSource after a backoff that grows', (t) => {
  const realRandom = Math.random;
  Math.random = () => 1; // no jitter
  try {
    start();
    latest().emit('open');
    latest().readyState = FakeEventSource.CLOSED;
    latest().emit('error');
    assert.ok(latest().closed);
    t.mock.timers.tick(2999);
    assert.equal(FakeEventSource.all.length, 1);
    t.mock.timers.tick(1);
    assert.equal(FakeEventSource.all.length, 2, 'after 3 s');
    latest().readyState = FakeEventSource.CLOSED;
    latest().emit('error');
    t.mock.timers.tick(5999);
    assert.equal(FakeEventSource.all.length, 2);
    t.mock.timers.tick(1);
    assert.equal(FakeEventSource.all.length, 3, 'then after 6 s');
    // Open again: a new EventSource has no Last-Event-ID, so snapshots are reloaded.
    latest().emit('open');
    assert.equal(calls.reload, 1);
    assert.equal(calls.connect, 5, 'three connects and two opens');
  } finally {
    Math.random = realRandom;
  }
});

test('reset: reload at once, then at most every 10 s', (t) => {
  start();
  latest().emit('open');
  latest().emit('reset', '{"reason":"lagged"}');
  latest().emit('reset', '{"reason":"lagged"}');
  t.mock.timers.tick(0);
  assert.equal(calls.reload, 1);
  t.mock.timers.tick(1000);
  latest().emit('reset', '{"reason":"lagged"}');
  t.mock.timers.tick(RESET_RELOAD_MS - 1000 - 1);
  assert.equal(calls.reload, 1);
  t.mock.timers.tick(1);
  assert.equal(calls.reload, 2);
});

test('silence: an open stream that sends nothing for 30 s is restarted', (t) => {
  const status = start();
  latest().emit('open');
  t.mock.timers.tick(SILENCE_MS - 2000);
  latest().emit('stats', '{}');
  t.mock.timers.tick(SILENCE_MS - 2000);
  assert.equal(FakeEventSource.all.length, 1, 'messages keep it alive');
  t.mock.timers.tick(4000);
  assert.equal(status.down, true);
  assert.ok(FakeEventSource.all[0].closed);
  t.mock.timers.tick(0);
  assert.equal(FakeEventSource.all.length, 2);
});
