// Window math and the merging rules of the live chart and grid.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  chartWindowCount, cityRates, largestCount, MAX_CHART_WINDOWS, mergeWindow, MIN_CHART_WINDOWS,
  pruneWindows, windowAt, windowsLimit, windowStartOf, windowStarts, windowTotal,
} from '../../src/api/dashboard/windows.js';
import { SEED_TYPES } from '../../src/api/dashboard/constants.js';

const M = 60000;
const H = 60 * M;
const T0 = Date.UTC(2026, 10, 25, 10, 0); // a whole hour

const iso = (ms) => new Date(ms).toISOString().replace('.000Z', 'Z');
function win(type, start, count, sev = {}, spanMs = 5 * M) {
  return { city: 'SF', event_type: type, window_start: iso(start), window_end: iso(start + spanMs), event_count: count, severity_counts: sev };
}

test('windowStartOf floors to the window, for any length', () => {
  assert.equal(windowStartOf(T0 + 7 * M + 13000, 5 * M), T0 + 5 * M);
  assert.equal(windowStartOf(T0 + 5 * M, 5 * M), T0 + 5 * M, 'a window starts at its start');
  assert.equal(windowStartOf(T0 + 5 * M - 1, 5 * M), T0);
  assert.equal(windowStartOf(T0 + 59 * 1000, M), T0);
  assert.equal(windowStartOf(T0 + 90 * M, H), T0 + H);
  // Aligned on the epoch, as the engine does: 7-minute windows need not start on the hour.
  assert.equal(windowStartOf(T0, 7 * M) % (7 * M), 0);
  assert.ok(T0 - windowStartOf(T0, 7 * M) < 7 * M);
  // Before the epoch too (floor, not truncation).
  assert.equal(windowStartOf(-1, 5 * M), -5 * M);
});

test('windowStarts: the last N windows, oldest first, ending with the one now filling', () => {
  const now = T0 + 3 * M; // inside the 10:00 window
  const starts = windowStarts(now, 5 * M, 12);
  assert.equal(starts.length, 12);
  assert.equal(starts[11], T0);
  assert.equal(starts[0], T0 - 55 * M);
  for (let i = 1; i < starts.length; i++) assert.equal(starts[i] - starts[i - 1], 5 * M);
  assert.deepEqual(windowStarts(T0 + 30 * 1000, M, 3), [T0 - 2 * M, T0 - M, T0]);
});

test('chartWindowCount: an hour of windows, at least 12, at most 360', () => {
  assert.equal(chartWindowCount(5 * M), 12);
  assert.equal(chartWindowCount(M), 60);
  assert.equal(chartWindowCount(30 * 1000), 120);
  assert.equal(chartWindowCount(7 * M), MIN_CHART_WINDOWS, 'ceil(60/7) = 9, raised to 12');
  assert.equal(chartWindowCount(H), MIN_CHART_WINDOWS);
  assert.equal(chartWindowCount(24 * H), MIN_CHART_WINDOWS);
  assert.equal(chartWindowCount(1000), MAX_CHART_WINDOWS);
});

test('windowsLimit leaves room for every type plus a margin', () => {
  assert.equal(windowsLimit(12, SEED_TYPES.length), 60, 'the page always asked 60 for 5-minute windows');
  assert.ok(windowsLimit(60, 4) >= 60 * 4);
  assert.equal(windowsLimit(12, 3), 45, 'three configured types');
  assert.equal(windowsLimit(12, 64), 15 * 64, 'the most types the server allows');
});

test('mergeWindow: a window only grows; the larger count wins whatever the order', () => {
  const byKey = new Map();
  assert.equal(mergeWindow(byKey, win('traffic', T0, 3, { low: 2, high: 1 })), true);
  // A stream update counted more: taken.
  assert.equal(mergeWindow(byKey, win('traffic', T0, 5, { low: 3, high: 2 })), true);
  // A REST answer read before that update arrives late: ignored.
  assert.equal(mergeWindow(byKey, win('traffic', T0, 4, { low: 3, high: 1 })), false);
  // The same count again: nothing changes.
  assert.equal(mergeWindow(byKey, win('traffic', T0, 5, { low: 3, high: 2 })), false);
  assert.deepEqual(windowAt(byKey, 'traffic', T0), { count: 5, sev: { low: 3, high: 2 } });
  // Other types and other windows are other keys.
  assert.equal(mergeWindow(byKey, win('weather', T0, 1)), true);
  assert.equal(mergeWindow(byKey, win('traffic', T0 + 5 * M, 1)), true);
  assert.equal(byKey.size, 3);
});

test('mergeWindow keeps its own copy of the severity counts', () => {
  const byKey = new Map();
  const w = win('incident', T0, 2, { critical: 2 });
  mergeWindow(byKey, w);
  w.severity_counts.critical = 99;
  assert.equal(windowAt(byKey, 'incident', T0).sev.critical, 2);
});

test('mergeWindow ignores windows too old for the chart, unreadable, or of another length', () => {
  const byKey = new Map();
  assert.equal(mergeWindow(byKey, win('traffic', T0 - 5 * M, 9), { oldestMs: T0 }), false);
  assert.equal(mergeWindow(byKey, win('traffic', T0, 9), { oldestMs: T0 }), true);
  assert.equal(mergeWindow(byKey, { ...win('traffic', T0, 10), window_start: 'soon' }), false);
  // An hourly rollup's window must not land on the 5-minute chart.
  assert.equal(mergeWindow(byKey, win('weather', T0, 100, {}, H), { spanMs: 5 * M }), false);
  assert.equal(mergeWindow(byKey, win('weather', T0, 1, {}, 5 * M), { spanMs: 5 * M }), true);
  // Without window_end (older servers' stream messages), the length is not checked.
  const { window_end: _, ...noEnd } = win('construction', T0, 2);
  assert.equal(mergeWindow(byKey, noEnd, { spanMs: 5 * M }), true);
});

test('pruneWindows drops windows that start before the oldest kept', () => {
  const byKey = new Map();
  for (const k of [-2, -1, 0, 1]) mergeWindow(byKey, win('traffic', T0 + k * 5 * M, 1));
  pruneWindows(byKey, T0);
  assert.deepEqual([...byKey.keys()].sort(), [`traffic|${T0}`, `traffic|${T0 + 5 * M}`].sort());
});

test('cityRates: all types summed per window, divided by the window length in minutes', () => {
  const starts = [T0 - 5 * M, T0];
  const byKey = new Map();
  mergeWindow(byKey, win('traffic', T0, 6));
  mergeWindow(byKey, win('weather', T0, 4));
  assert.deepEqual(cityRates(byKey, starts, 5 * M, SEED_TYPES), [0, 2], '10 events in 5 minutes: 2 a minute; none before: 0');
  assert.deepEqual(cityRates(byKey, starts, M, SEED_TYPES), [0, 10], 'the same counts in 1-minute windows');
  assert.deepEqual(cityRates(byKey, [T0], H, SEED_TYPES), [10 / 60]);
  assert.deepEqual(cityRates(undefined, starts, 5 * M, SEED_TYPES), [null, null], 'not loaded: unknown, not zero');
  assert.deepEqual(cityRates(byKey, starts, 5 * M, ['traffic']), [0, 6 / 5], 'only the types given');
});

test('windowTotal sums the types of one window, severities included', () => {
  const byKey = new Map();
  mergeWindow(byKey, win('traffic', T0, 3, { low: 2, critical: 1 }));
  mergeWindow(byKey, win('incident', T0, 2, { high: 1, critical: 1 }));
  mergeWindow(byKey, win('incident', T0 + 5 * M, 7, { low: 7 }));
  assert.deepEqual(windowTotal(byKey, T0, SEED_TYPES), { count: 5, sev: { low: 2, medium: 0, high: 1, critical: 2 } });
  assert.deepEqual(windowTotal(undefined, T0, SEED_TYPES), { count: 0, sev: { low: 0, medium: 0, high: 0, critical: 0 } });
  assert.deepEqual(windowTotal(byKey, T0, ['incident']), { count: 2, sev: { low: 0, medium: 0, high: 1, critical: 1 } });
});

test('largestCount: the largest single cell of the given windows, at least 1', () => {
  const all = new Map([['SF', new Map()], ['LA', new Map()]]);
  mergeWindow(all.get('SF'), win('traffic', T0, 3));
  mergeWindow(all.get('LA'), win('weather', T0 - 5 * M, 8));
  mergeWindow(all.get('LA'), win('weather', T0 - 10 * M, 50)); // not among the windows asked
  assert.equal(largestCount(all, ['SF', 'LA'], [T0, T0 - 5 * M], SEED_TYPES), 8);
  assert.equal(largestCount(all, ['SF'], [T0], SEED_TYPES), 3);
  assert.equal(largestCount(all, ['NYC'], [T0], SEED_TYPES), 1);
  assert.equal(largestCount(all, ['SF', 'LA'], [T0, T0 - 5 * M], ['traffic']), 3, 'only the types given');
});

// The server's own types (`--event-types`): the same rules over any list.
const CUSTOM = ['flood', 'parade', 'power-outage'];
const MANY = Array.from({ length: 20 }, (_, i) => `type-${i}`);

test('custom event types: rates, totals and the largest cell go over the list given', () => {
  const byKey = new Map();
  mergeWindow(byKey, win('flood', T0, 4, { high: 4 }));
  mergeWindow(byKey, win('power-outage', T0, 6, { critical: 1, low: 5 }));
  mergeWindow(byKey, win('traffic', T0, 100)); // not a type of this server: left out
  assert.deepEqual(cityRates(byKey, [T0], 5 * M, CUSTOM), [2]);
  assert.deepEqual(windowTotal(byKey, T0, CUSTOM), { count: 10, sev: { low: 5, medium: 0, high: 4, critical: 1 } });
  assert.equal(largestCount(new Map([['SF', byKey]]), ['SF'], [T0], CUSTOM), 6);
  assert.equal(windowsLimit(12, CUSTOM.length), 45);
});

test('more than 16 event types: every type counts in rates and totals', () => {
  const byKey = new Map();
  MANY.forEach((t, i) => mergeWindow(byKey, win(t, T0, i + 1)));
  const sum = (20 * 21) / 2;
  assert.equal(windowTotal(byKey, T0, MANY).count, sum);
  assert.deepEqual(cityRates(byKey, [T0], M, MANY), [sum]);
  assert.equal(largestCount(new Map([['SF', byKey]]), ['SF'], [T0], MANY.slice(0, 16)), 16, 'the shown ones');
  assert.equal(windowsLimit(12, MANY.length), 15 * 20);
});
